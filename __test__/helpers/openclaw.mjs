// A real OpenClaw (openclaw@2026.9.6 on Node 24) in a temporary home, for end-to-end tests.
// scripts/setup-e2e.sh puts Node 24 and OpenClaw in the cache directory used here.
import { spawn, execFile, execFileSync } from 'node:child_process'
import { promisify } from 'node:util'
import { mkdtempSync, writeFileSync, readFileSync, readdirSync, rmSync, mkdirSync } from 'node:fs'
import { tmpdir, homedir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { randomUUID } from 'node:crypto'
import { freePort } from './nats-server.mjs'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))

const run = promisify(execFile)

export const E2E_CACHE = process.env.PIER_E2E_CACHE ?? join(homedir(), '.cache', 'pier-e2e')
export const NODE24_BIN = join(E2E_CACHE, 'node24', 'bin')
export const OPENCLAW = join(E2E_CACHE, 'openclaw', 'node_modules', '.bin', 'openclaw')

/**
 * @param {object} options
 * @param {string} options.modelBaseUrl the fake model's `/v1` URL
 * @param {string} options.registryUrl where the binary package's scope resolves
 * @param {object} [options.env] more environment for every openclaw process of this home
 */
export async function createOpenClawHome({ modelBaseUrl, registryUrl, env: moreEnv = {} }) {
  const dir = mkdtempSync(join(tmpdir(), 'pier-openclaw-'))
  const stateDir = join(dir, 'state')
  mkdirSync(stateDir)
  const configPath = join(dir, 'openclaw.json')
  const npmrc = join(dir, 'npmrc')
  writeFileSync(npmrc, `@pier-connector:registry=${registryUrl}\nfund=false\naudit=false\n`)
  const port = await freePort()
  const env = {
    ...process.env,
    PATH: `${NODE24_BIN}:${process.env.PATH}`,
    OPENCLAW_STATE_DIR: stateDir,
    OPENCLAW_CONFIG_PATH: configPath,
    NPM_CONFIG_USERCONFIG: npmrc,
    NO_COLOR: '1',
    ...moreEnv,
  }
  const config = {
    gateway: { mode: 'local', port, bind: 'loopback', auth: { mode: 'none' } },
    models: {
      providers: {
        vllm: {
          baseUrl: modelBaseUrl,
          apiKey: 'local',
          api: 'openai-completions',
          models: [
            {
              id: 'fake-model', name: 'Fake', reasoning: false, input: ['text'],
              cost: { input: 0, output: 0, cacheRead: 0, cacheWrite: 0 }, contextWindow: 32000, maxTokens: 1024,
            },
          ],
        },
      },
    },
    agents: { defaults: { model: { primary: 'vllm/fake-model' } } },
  }
  writeFileSync(configPath, JSON.stringify(config, null, 2))

  const home = {
    dir,
    port,
    env,
    configPath,
    readConfig: () => JSON.parse(readFileSync(configPath, 'utf8')),
    writeConfig: (c) => writeFileSync(configPath, JSON.stringify(c, null, 2)),
    /** Runs `openclaw ...args` and returns its stdout. */
    async cli(args, { timeout = 120_000 } = {}) {
      try {
        const { stdout } = await run(OPENCLAW, args, { env, timeout, maxBuffer: 64 * 1024 * 1024 })
        return stdout
      } catch (error) {
        // A failing command says why in what it printed.
        error.message += `\nstdout: ${error.stdout}\nstderr: ${String(error.stderr).slice(-2000)}`
        throw error
      }
    },
    /** Starts `openclaw gateway run` and resolves once its server listens. */
    async startGateway() {
      const child = spawn(OPENCLAW, ['gateway', 'run', '--port', String(port)], { env, stdio: ['ignore', 'pipe', 'pipe'] })
      let log = ''
      child.stdout.on('data', (c) => (log += c))
      child.stderr.on('data', (c) => (log += c))
      const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })))
      const deadline = Date.now() + 90_000
      // Listening, not the earlier "spawn broker ready": a call before it is refused.
      while (!/\[gateway\] http server listening/.test(log)) {
        if (child.exitCode !== null) throw new Error(`gateway exited early:\n${log}`)
        if (Date.now() > deadline) throw new Error(`gateway not ready:\n${log}`)
        await new Promise((r) => setTimeout(r, 100))
      }
      return {
        child,
        exited,
        /** When the gateway began to listen (ms since the epoch). */
        readyAt: Date.now(),
        log: () => log,
        async stop() {
          if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
          return exited
        },
      }
    },
    /**
     * Calls a gateway RPC method (as `openclaw gateway call <method> --params <json> --json`
     * does) and resolves with its result, through one client process per home that loads
     * OpenClaw once (helpers/gateway-rpc-client.mjs).
     */
    call(method, params = {}, { timeout = 60_000 } = {}) {
      rpc ??= startRpcClient(env)
      return rpc.call(method, params, timeout)
    },
    /**
     * A person at OpenClaw's terminal chat (`openclaw tui`): one gateway connection held open with
     * the TUI's identity, scopes and capabilities, plugin approvals among them, so the gateway
     * shows it plugin approval requests as it shows them to a person there
     * (helpers/gateway-rpc-client.mjs). `open()` first; `send` is chat.send from that chat;
     * `events(prefix)` the gateway events it has received.
     */
    tui: {
      open: () => home.call('$tui.open'),
      send: (sessionKey, message, idempotencyKey = randomUUID()) =>
        home.call('$tui.request', { method: 'chat.send', params: { sessionKey, message, idempotencyKey } }),
      events: (prefix = '') => home.call('$tui.events', { prefix }),
      close: () => home.call('$tui.close'),
    },
    cleanup: () => {
      rpc?.close()
      rpc = null
      rmSync(dir, { recursive: true, force: true })
    },
  }
  let rpc = null
  return home
}

function startRpcClient(env) {
  const child = spawn(join(NODE24_BIN, 'node'), [fileURLToPath(new URL('./gateway-rpc-client.mjs', import.meta.url)), join(E2E_CACHE, 'openclaw', 'package.json')], {
    env,
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  const close = () => child.kill()
  process.once('exit', close)
  const waiting = new Map()
  let stderr = ''
  let buffered = ''
  let nextId = 1
  child.stderr.on('data', (c) => (stderr = `${stderr}${c}`.slice(-4000)))
  child.stdout.on('data', (chunk) => {
    buffered += chunk
    for (let i; (i = buffered.indexOf('\n')) >= 0; ) {
      const reply = JSON.parse(buffered.slice(0, i))
      buffered = buffered.slice(i + 1)
      const settle = waiting.get(reply.id)
      waiting.delete(reply.id)
      if (reply.error !== undefined) settle?.reject(new Error(`gateway call: ${reply.error}`))
      else settle?.resolve(reply.result)
    }
  })
  child.once('exit', (code, signal) => {
    for (const { reject } of waiting.values()) reject(new Error(`gateway RPC client exited (${code ?? signal}): ${stderr}`))
    waiting.clear()
  })
  return {
    call(method, params, timeoutMs) {
      const id = nextId++
      return new Promise((resolve, reject) => {
        waiting.set(id, { resolve, reject })
        child.stdin.write(`${JSON.stringify({ id, method, params, timeoutMs })}\n`)
      })
    },
    close() {
      process.off('exit', close)
      close()
    },
  }
}

/**
 * scripts/pack.sh: a plain `npm pack` of the checkout and the same files unpacked. Link installs
 * use the unpacked directory, not the checkout: OpenClaw reads the whole linked directory, and a
 * built checkout's target/ holds gigabytes. `dist`: where to pack (default: the run's pack, or a
 * directory of this process's own, removed when it exits).
 */
export function packPlugin(dist) {
  let tgz
  if (!dist && process.env.PIER_TEST_PACK) {
    // Packed once for the whole run by scripts/node-tests.mjs: every file reads the same pack,
    // and none writes to it.
    dist = process.env.PIER_TEST_PACK
    tgz = join(dist, readdirSync(dist).find((f) => f.endsWith('.tgz')))
  } else {
    if (!dist) {
      // A directory of this process's own, removed when it exits: a gateway keeps loading from
      // the directory it was installed from (--link).
      dist = mkdtempSync(join(tmpdir(), 'pier-pack-'))
      process.once('exit', () => rmSync(dist, { recursive: true, force: true }))
    }
    const out = execFileSync('bash', [join(ROOT, 'scripts/pack.sh')], { encoding: 'utf8', env: { ...process.env, PIER_PACK_DIR: dist } })
    tgz = out.trim().split('\n').find((l) => l.endsWith('.tgz'))
  }
  const files = execFileSync('tar', ['-tzf', tgz], { encoding: 'utf8' }).split('\n').filter(Boolean)
  return {
    tgz,
    dir: join(dist, 'pier-connector'),
    files: files.map((f) => f.replace(/^package\//, '')).sort(),
    manifest: JSON.parse(execFileSync('tar', ['-xzOf', tgz, 'package/package.json'], { encoding: 'utf8' })),
  }
}
