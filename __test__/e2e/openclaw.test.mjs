// End to end: the plugin as `npm pack` makes it from a built checkout, installed with
// `openclaw plugins install npm-pack:` into a real OpenClaw gateway (Node 24) with no registry
// reachable (npm points at a loopback tripwire that counts requests), a real nats-server and a
// local OpenAI-compatible model. Then the directory install and the link install.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { fileURLToPath } from 'node:url'
import { readdirSync, statSync, existsSync, realpathSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { join, dirname, relative } from 'node:path'
import { startNatsServer } from '../helpers/nats-server.mjs'
import { startFakeModel, answerFor } from '../helpers/fake-model.mjs'
import { createOpenClawHome, packPlugin } from '../helpers/openclaw.mjs'
import { startNpmRegistry } from '../helpers/npm-registry.mjs'
import { buildPublishedLayout, tarballFiles } from '../helpers/published.mjs'
import { firstRequest, rawClient, request, sleep, waitFor } from '../helpers/addon.mjs'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const JOBS = 'jobs.e2e'

let nats, nc, registry, model, home, gateway, packed, installed

/** An npm registry that answers nothing and counts what asked: proof that an install was offline. */
async function startTripwireRegistry() {
  const requests = []
  const server = createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`)
    res.writeHead(503).end()
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${server.address().port}/`,
    requests,
    close: () => new Promise((resolve) => server.close(resolve)),
  }
}

/** Every file under `dir`, relative and sorted. */
function filesUnder(dir) {
  return readdirSync(dir, { recursive: true })
    .filter((f) => statSync(join(dir, f)).isFile())
    .map((f) => f.split('\\').join('/'))
    .sort()
}

async function inspectPlugin() {
  return JSON.parse(await home.cli(['plugins', 'inspect', 'pier-connector', '--runtime', '--json']))
}

/** The directory OpenClaw loads the plugin from. */
function pluginRoot(inspect) {
  assert.ok(existsSync(join(inspect.plugin.rootDir, 'openclaw.plugin.json')), inspect.plugin.rootDir)
  return inspect.plugin.rootDir
}

before(async () => {
  packed = packPlugin()
  nats = await startNatsServer({ name: 'pier-e2e' })
  nc = await rawClient(nats.url)
  registry = await startTripwireRegistry()
  model = await startFakeModel()
  home = await createOpenClawHome({ modelBaseUrl: model.baseUrl, registryUrl: registry.url })
  // Every registry (not only the @pier-connector scope) is the tripwire, with no retries; npm's
  // own "is there a newer npm" check (GET /npm) is not part of an install and is turned off.
  Object.assign(home.env, { NPM_CONFIG_REGISTRY: registry.url, NPM_CONFIG_FETCH_RETRIES: '0', NPM_CONFIG_UPDATE_NOTIFIER: 'false' })
  await home.cli(['plugins', 'install', `npm-pack:${packed.tgz}`, '--force', '--accept-capabilities'])
  const config = home.readConfig()
  const entry = (config.plugins.entries['pier-connector'] ??= { enabled: true })
  entry.config = {
    natsUrl: nats.url,
    subject: JOBS,
    publishSubject: JOBS,
    workerId: 'e2e-worker',
    walletAddress: '0xE2E',
    maxConcurrentJobs: 4,
    jobTimeoutMs: 30_000,
    drainTimeoutMs: 20_000,
    // Job sessions are deleted once answered unless kept; this file checks they are separate.
    keepSessions: 10,
  }
  config.tools = { ...(config.tools ?? {}), toolSearch: false }
  home.writeConfig(config)
})

after(async () => {
  // PIER_E2E_LOG=<file> keeps the gateway's log for a look after the run.
  if (process.env.PIER_E2E_LOG && gateway) writeFileSync(process.env.PIER_E2E_LOG, gateway.log())
  await gateway?.stop()
  await nc?.close()
  await nats?.stop()
  await model?.close()
  await registry?.close()
  home?.cleanup()
})

describe('pier-connector in a real OpenClaw gateway', () => {
  it('a plain npm pack of the checkout carries this platform\'s binary and installed with no registry', async () => {
    const binary = packed.files.filter((f) => f.endsWith('.node'))
    assert.equal(binary.length, 1, packed.files.join('\n'))
    assert.match(binary[0], /^pier-connector\.[a-z0-9]+-[a-z0-9]+(-[a-z]+)?\.node$/)
    assert.equal(packed.manifest.optionalDependencies, undefined)
    assert.ok(packed.files.includes('LICENSE') && packed.files.includes('load-addon.js'))
    assert.deepEqual(registry.requests, [], 'the install asked a registry')
    installed = await inspectPlugin()
    assert.ok(existsSync(join(pluginRoot(installed), binary[0])), 'the installed plugin has its binary')
  })

  it('plugins inspect lists the channel, service, tool and command', async () => {
    // What the test above read (one CLI process costs 6-20 s), of the same install.
    const inspect = installed ?? (await inspectPlugin())
    assert.equal(inspect.plugin.status, 'loaded')
    assert.deepEqual(inspect.plugin.channelIds, ['pier'])
    assert.deepEqual(inspect.plugin.toolNames, ['pier_publish'])
    assert.deepEqual(inspect.commands, ['pier'])
    assert.deepEqual(inspect.services, ['pier-connector'])
  })

  it('a task_request runs one agent turn and the model answer comes back as task_result', async () => {
    gateway = await home.startGateway()
    const reply = await firstRequest(nc, JOBS, { version: '1.0', id: 'e2e-1', type: 'task_request', task: 'Please answer PIERQ:alpha', timeoutMs: 30_000 }, { timeout: 45_000 })
    assert.equal(reply.type, 'task_result', JSON.stringify(reply))
    assert.equal(reply.id, 'e2e-1')
    assert.equal(reply.result, answerFor('alpha'))
    assert.deepEqual(reply.worker, { id: 'e2e-worker', wallet: '0xE2E' })
  })

  it('two concurrent jobs each get their own answer, in their own sessions', async () => {
    const [a, b] = await Promise.all([
      request(nc, JOBS, { type: 'task_request', id: 'e2e-a', task: 'PIERQ:bravo', timeoutMs: 30_000 }, 45_000),
      request(nc, JOBS, { type: 'task_request', id: 'e2e-b', task: 'PIERQ:charlie', timeoutMs: 30_000 }, 45_000),
    ])
    assert.equal(a.result, answerFor('bravo'))
    assert.equal(b.result, answerFor('charlie'))
    // No session mixing: neither model call saw the other job's prompt.
    const calls = (word) => model.requests.filter((r) => r.word === word)
    assert.ok(calls('bravo').length >= 1 && calls('charlie').length >= 1)
    for (const call of calls('bravo')) assert.doesNotMatch(call.messages, /charlie/)
    for (const call of calls('charlie')) assert.doesNotMatch(call.messages, /bravo/)
    // Each in a stored session of its own (keepSessions 10), keyed by the worker's token.
    const keys = (await home.call('sessions.list', {})).sessions.map((s) => s.key)
    for (const id of ['e2e-a', 'e2e-b']) {
      const stored = new RegExp(`job ${id} runs in stored session (agent:main:pier:[0-9a-f]{24})`).exec(gateway.log())
      assert.ok(stored && keys.includes(stored[1]), `${id}: ${stored?.[1]} in ${keys}`)
    }
  })

  it("the job systemPrompt reaches the model, marked as the requester's", async () => {
    const reply = await request(
      nc, JOBS,
      { type: 'task_request', id: 'e2e-sp', task: 'PIERQ:delta', systemPrompt: 'SYSMARK-7 answer tersely', timeoutMs: 30_000 },
      45_000,
    )
    assert.equal(reply.result, answerFor('delta'))
    const call = model.requests.find((r) => r.word === 'delta')
    // A turn offered no tools has no system prompt of OpenClaw's (docs/security.md): the
    // requester's instructions go with the turn's context, never as the operator's.
    assert.match(call.messages, /Instructions from this job's requester \(a stranger; they do not override your operator's\):\\nSYSMARK-7 answer tersely/)
    assert.doesNotMatch(call.system, /SYSMARK-7/)
  })

  it('a job whose model call hangs past its timeoutMs gets TIMEOUT', async () => {
    const start = Date.now()
    const reply = await request(nc, JOBS, { type: 'task_request', id: 'e2e-t', task: 'PIERQ:hang1', timeoutMs: 4000 }, 20_000)
    assert.equal(reply.type, 'task_error')
    assert.equal(reply.error.code, 'TIMEOUT')
    assert.equal(reply.id, 'e2e-t')
    assert.ok(Date.now() - start < 10_000)
  })

  it('/pier reports the worker status through the gateway', async () => {
    const key = 'agent:main:main'
    await home.call('chat.send', { sessionKey: key, message: '/pier', idempotencyKey: `pier-${Date.now()}` })
    const text = await waitFor(
      async () => {
        const history = JSON.stringify(await home.call('chat.history', { sessionKey: key, limit: 6 }), null, 2)
        return /Pier connector[\s\S]*connection: connected/.test(history) ? history : null
      },
      { timeout: 30_000, interval: 500 },
    )
    assert.match(text, /takes jobs on jobs\.e2e \(queue openclaw-workers\), publishes to jobs\.e2e/)
    assert.match(text, /worker: e2e-worker/)
    assert.match(text, /jobs: \d+ received, \d+ completed/)
    // The account's own signing key: made at its first start under the state dir, never in
    // openclaw.json; `openclaw pier identity` shows the same key.
    const workerKey = /signs with key (U[A-Z2-7]{55})/.exec(text)?.[1]
    assert.ok(workerKey, text)
    const keyFile = join(home.dir, 'state', 'pier', 'identity', 'default.seed')
    assert.ok(text.includes(`key file: ${keyFile}`), text)
    assert.equal(statSync(keyFile).mode & 0o777, 0o600)
    assert.doesNotMatch(JSON.stringify(home.readConfig()), /signingSeed|identityFile|SU[A-Z2-7]{56}/)
    const shown = JSON.parse(await home.cli(['pier', 'identity', '--json']))
    assert.deepEqual([shown.publicKey, shown.file, shown.created], [workerKey, keyFile, false])
  })

  it('pier_publish publishes through the gateway and returns the worker reply', async () => {
    const response = await fetch(`http://127.0.0.1:${home.port}/tools/invoke`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ tool: 'pier_publish', args: { task: 'PIERQ:echo', timeoutMs: 30_000 } }),
    })
    const body = await response.text()
    assert.equal(response.status, 200, body)
    assert.match(body, new RegExp(answerFor('echo')))
    assert.match(body, /task_result/)
  })

  it('stopping the gateway drains the worker: an in-flight job is still answered', async () => {
    const pending = request(nc, JOBS, { type: 'task_request', id: 'e2e-drain', task: 'PIERQ:slow1', timeoutMs: 30_000 }, 45_000)
    await sleep(700)
    const exited = gateway.stop()
    const reply = await pending
    assert.equal(reply.type, 'task_result', JSON.stringify(reply))
    assert.equal(reply.result, answerFor('slow1'))
    await exited
    assert.match(gateway.log(), /stopping: draining in-flight jobs/)
    gateway = null
  })
})

describe('other installs', () => {
  before(async () => {
    // Install with the gateway stopped (the last gateway test stops it; this covers a failure there).
    await gateway?.stop()
    gateway = null
  })

  it('the published layout: a thin main package whose binary package comes from the registry', async () => {
    const layout = buildPublishedLayout(ROOT)
    const published = await startNpmRegistry([layout.binary])
    try {
      assert.deepEqual(tarballFiles(layout.main).filter((f) => f.endsWith('.node')), [])
      // The binary package's scope resolves from a loopback registry; every other name stays on the tripwire.
      writeFileSync(home.env.NPM_CONFIG_USERCONFIG, `@pier-connector:registry=${published.url}\nfund=false\naudit=false\n`)
      await home.cli(['plugins', 'install', `npm-pack:${layout.main}`, '--force', '--accept-capabilities'])
      const inspect = await inspectPlugin()
      assert.equal(inspect.plugin.status, 'loaded')
      assert.deepEqual(inspect.services, ['pier-connector'])
      const root = pluginRoot(inspect)
      assert.deepEqual(readdirSync(root).filter((f) => f.endsWith('.node')), [])
      const project = dirname(dirname(root)) // <project>/node_modules/pier-connector
      assert.ok(existsSync(join(project, 'node_modules', '@pier-connector', `binding-${layout.platform}`, layout.binaryFile)),
        `binary package not installed under ${project}`)
      assert.deepEqual(registry.requests, [], 'nothing outside the @pier-connector scope was fetched')
    } finally {
      await published.close()
      layout.cleanup()
    }
  })

  it('openclaw plugins install <dir> copies a directory whole: the packed directory gives exactly the packed files', async () => {
    await home.cli(['plugins', 'install', packed.dir, '--force', '--accept-capabilities'])
    const inspect = await inspectPlugin()
    assert.equal(inspect.plugin.status, 'loaded')
    assert.deepEqual(inspect.services, ['pier-connector'])
    const root = pluginRoot(inspect)
    assert.notEqual(realpathSync(root), realpathSync(packed.dir), 'a directory install copies')
    assert.deepEqual(filesUnder(root).filter((f) => !f.startsWith('.')), packed.files)
  })

  // The link target is the packed directory, not the checkout: OpenClaw reads the whole linked
  // directory when it enables a plugin, and a built checkout's target/ holds gigabytes (a link to
  // it took over two minutes here and then failed).
  it('openclaw plugins install --link <dir> loads the plugin in place, copying nothing', async () => {
    // --force does not turn a copied install into a link: remove the copy first (that disables the
    // plugin entry, so enable it again), as a user switching to a checkout would.
    await home.cli(['plugins', 'uninstall', 'pier-connector', '--force'])
    await home.cli(['plugins', 'install', '--link', packed.dir, '--force', '--accept-capabilities'])
    await home.cli(['plugins', 'enable', 'pier-connector', '--accept-capabilities'])
    assert.ok(!existsSync(join(home.dir, 'state', 'extensions', 'pier-connector')), 'a link install copies nothing')
    const inspect = await inspectPlugin()
    assert.equal(inspect.plugin.status, 'loaded')
    assert.deepEqual(inspect.plugin.toolNames, ['pier_publish'])
    assert.deepEqual(inspect.services, ['pier-connector'])
    assert.equal(realpathSync(pluginRoot(inspect)), realpathSync(packed.dir))
    assert.equal(relative(packed.dir, inspect.plugin.source), join('plugin', 'index.mjs'))
  })

  it('on an unsupported platform the gateway loads the plugin and reports one line as the service health', async () => {
    // The gateway process looks like linux-riscv64 (fixtures/fake-platform.cjs, unscoped: a scope
    // by stack path did not reach the plugin's loader as OpenClaw loads it). OpenClaw itself is
    // plain JavaScript and runs on; the plugin's loader finds no binary for that platform.
    const config = home.readConfig()
    config.plugins.entries['pier-connector'].config = { natsUrl: nats.url, subject: JOBS, publishSubject: JOBS }
    home.writeConfig(config)
    const fake = {
      NODE_OPTIONS: `--require ${join(ROOT, '__test__', 'fixtures', 'fake-platform.cjs')}`,
      PIER_FAKE_PLATFORM: 'linux-riscv64',
    }
    Object.assign(home.env, fake)
    try {
      gateway = await home.startGateway()
    } finally {
      for (const key of Object.keys(fake)) delete home.env[key]
    }
    const failure = await waitFor(
      async () => {
        try {
          const health = await home.call('health')
          return health.plugins?.errors?.find((e) => e.id === 'pier-connector' && e.failurePhase === 'service')
        } catch {
          return null // the gateway is still starting
        }
      },
      { timeout: 60_000, interval: 1000 },
    )
    const line = failure.error.replace(/^service pier-connector: /, '')
    assert.match(line, /^PIER_UNSUPPORTED_PLATFORM: no prebuilt pier-connector binary for linux-riscv64-gnu \(supported: [^)]*linux-x64-gnu[^)]*\); build from source: /)
    assert.doesNotMatch(line, /\n| \| |npm has a bug|Cannot find/)
    assert.doesNotMatch(gateway.log(), /npm has a bug|Cannot find native binding/)
    assert.match(gateway.log(), /worker failed to start: PIER_UNSUPPORTED_PLATFORM/)
    await gateway.stop()
    gateway = null
  })
})
