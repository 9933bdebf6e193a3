// The demo (scripts/demo.sh runs it after setup and build). Part one: the CLI, a worker over
// ws:// whose "agent" is a shell command. Part two: the product itself, the plugin in a real
// OpenClaw gateway (Node 24 and openclaw from scripts/setup-e2e.sh's cache) whose agent answers
// a Pier job, with the stand-in model the tests use and a real nats-server on loopback.
//
// A real model: PIER_DEMO_MODEL_URL (an OpenAI-compatible /v1 URL), PIER_DEMO_MODEL (its model
// id) and PIER_DEMO_MODEL_KEY (its API key; the config names the variable, never the key).
// A real Pier server: PIER_DEMO_NATS_URL, PIER_TOKEN if it needs one, and PIER_DEMO_SUBJECT
// (default: a subject of this run's own, so the demo's worker takes no one else's jobs).
// PIER_DEMO_TASK replaces the demo's task.
//
// Everything it starts is stopped and every directory it makes is removed, on failure and on
// Ctrl-C too; dist/ (scripts/pack.sh's output) stays, like target/.
import { spawn, execFile } from 'node:child_process'
import { randomBytes, createHash } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { relative, join } from 'node:path'
import { mkdirSync, readdirSync, realpathSync, rmSync, rmdirSync } from 'node:fs'
import { startNatsServer } from '../__test__/helpers/nats-server.mjs'
import { startFakeModel } from '../__test__/helpers/fake-model.mjs'
import { createOpenClawHome, packPlugin, OPENCLAW } from '../__test__/helpers/openclaw.mjs'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const CLI = fileURLToPath(new URL('../cli/pier-connector.js', import.meta.url))
const started = Date.now()
const STEPS = 13
let step = 0
const bold = (text) => (process.stdout.isTTY ? `\x1b[1m${text}\x1b[0m` : text)
/** A numbered step heading, so a reader can follow (and find a failure's step). */
const say = (text) => stopIfCleaning() || process.stdout.write(`\n${bold(`[${++step}/${STEPS}] ${text}`)}  (${((Date.now() - started) / 1000).toFixed(0)} s)\n`)
const indent = (text) => String(text).trimEnd().replace(/^/gm, '    ')
/** A command line as a reader would type it. */
const shell = (words) => words.map((w) => (/^[\w./:@=,+-]+$/.test(w) ? w : `'${w.replace(/'/g, `'\\''`)}'`)).join(' ')

// Undone last first, once, whatever ends the demo. Commands still running (an `openclaw` call
// cut short by Ctrl-C or a failure) end first: they write into the directories removed after.
const cleanups = []
const commands = new Set()
let cleaning
function cleanup() {
  cleaning ??= (async () => {
    await Promise.all([...commands].map((child) => new Promise((resolve) => {
      child.once('close', resolve)
      try {
        process.kill(-child.pid, 'SIGTERM') // its process group: what the command started too
      } catch {
        resolve()
      }
    })))
    for (const undo of cleanups.reverse()) await Promise.resolve().then(undo).catch((e) => console.error(`cleanup: ${e.message}`))
  })()
  return cleaning
}
/** Once cleaning up has begun (Ctrl-C), the demo starts nothing more. */
function stopIfCleaning() {
  if (cleaning) throw new Error('the demo is stopping')
}
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(signal, async () => {
    console.error(`\ndemo: ${signal}, cleaning up`)
    await cleanup()
    process.exit(130)
  })
}

/** Runs a command (in a process group of its own) to its end: its output, or an error that
 * carries it. */
function run(file, args, options = {}) {
  return new Promise((resolve, reject) => {
    stopIfCleaning()
    const child = execFile(file, args, { maxBuffer: 64 * 1024 * 1024, timeout: 120_000, detached: true, ...options }, (error, stdout, stderr) => {
      commands.delete(child)
      if (error) reject(Object.assign(error, { stdout, stderr }))
      else resolve({ stdout, stderr })
    })
    commands.add(child)
  })
}

const remote = process.env.PIER_DEMO_NATS_URL
const realModel = process.env.PIER_DEMO_MODEL_URL

try {
  const nats = await startNatsServer({ websocket: true, name: 'pier-demo' })
  cleanups.push(() => nats.stop())
  await cliPart(nats)
  await openclawPart(nats)
} catch (error) {
  console.error(`\ndemo failed at step ${step}: ${error.stack ?? error}`)
  process.exitCode = 1
} finally {
  await cleanup()
}
if (!process.exitCode) console.log(`\n${bold(`demo done in ${((Date.now() - started) / 1000).toFixed(0)} s; nothing it started is left running`)}`)

/** `pier-connector publish`: what it printed, the reply JSON (exit 1 is a task_error, exit 2
 * no reply, with the reason on stderr). */
async function publish(args) {
  const { stdout, stderr } = await run(process.execPath, [CLI, 'publish', ...args], { timeout: 180_000 }).catch((e) => e)
  return String(stdout ?? '').trim() || String(stderr ?? '').trim()
}

async function cliPart(nats) {
  say(`A nats-server on loopback: ${nats.url} (websocket ${nats.wsUrl})`)

  say('The CLI worker over ws:// (pier-connector worker --exec): its "agent" is a shell command')
  // It counts the task's words, and dawdles on tasks that say "slow" so the deadline shows.
  const AGENT = 't=$(cat); case "$t" in *slow*) sleep 5;; esac; ' +
    'printf "%s words%s" "$(printf %s "$t" | wc -w)" "${PIER_SYSTEM_PROMPT:+ (system prompt: $PIER_SYSTEM_PROMPT)}"'
  const worker = spawn(
    process.execPath,
    [CLI, 'worker', '--nats-url', nats.wsUrl, '--worker-id', 'demo-worker', '--wallet-address', '0xDEMO',
      '--max-concurrent-jobs', '2', '--exec', AGENT],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  )
  const exited = new Promise((resolve) => worker.once('exit', resolve))
  cleanups.push(() => {
    if (worker.exitCode === null && worker.signalCode === null) worker.kill('SIGTERM')
    return exited
  })
  let workerOut = ''
  worker.stdout.on('data', (c) => (workerOut += c))
  worker.stderr.on('data', (c) => process.stderr.write(indent(`worker| ${c}`) + '\n'))
  await new Promise((resolve, reject) => {
    worker.stderr.on('data', (c) => /subscribed to/.test(String(c)) && resolve())
    worker.once('exit', (code) => reject(new Error(`worker exited with ${code}`)))
  })

  say('pier-connector publish: four tasks, each answered with a task_result or a task_error')
  for (const [task, extra] of [
    ['Summarize the Pier protocol in one line', []],
    ['Translate hello to French', ['--system-prompt', 'answer in French']],
    ['A task with a price', ['--meta', '{"sender":"demo-user","price":50}']],
    ['A slow task with a 500 ms deadline', ['--timeout-ms', '500']],
  ]) {
    console.log(`  $ ${shell(['pier-connector', 'publish', task, ...extra])}`)
    console.log(indent(await publish([task, '--timeout-ms', '5000', ...extra, '--nats-url', nats.url, '--publish-subject', 'jobs.worker'])))
  }

  say('The CLI worker stops: its status (SIGUSR2), then SIGTERM drains it')
  worker.kill('SIGUSR2')
  await new Promise((r) => setTimeout(r, 300))
  console.log(indent(`status: ${workerOut.trim().split('\n').pop()}`))
  worker.kill('SIGTERM')
  await exited
  console.log(indent(`final status: ${workerOut.trim().split('\n').pop()}`))
}

async function openclawPart(nats) {
  say(realModel ? `The model: ${realModel} (${process.env.PIER_DEMO_MODEL})` : 'The stand-in model the tests use (__test__/helpers/fake-model.mjs), an OpenAI-compatible server on loopback')
  let model
  if (!realModel) {
    model = await startFakeModel()
    cleanups.push(() => model.close())
    console.log(indent(`${model.baseUrl}: answers a prompt holding PIERQ:<word> with "answer-<word>"`))
  }

  say('Pack the plugin (scripts/pack.sh): the npm package, unpacked into dist/pier-connector/')
  const packed = packPlugin(join(ROOT, 'dist'))
  console.log(indent(`${relative(ROOT, packed.tgz)}: ${packed.files.length} files, ${packed.files.filter((f) => f.endsWith('.node')).join(', ')}`))

  // The gateway's state and config in a temporary directory (OPENCLAW_STATE_DIR,
  // OPENCLAW_CONFIG_PATH): the demo touches no OpenClaw of the user's. The registry is unused:
  // a directory install runs no npm.
  const home = await createOpenClawHome({ modelBaseUrl: model?.baseUrl ?? realModel, registryUrl: 'http://127.0.0.1:9/' })
  cleanups.push(() => rmSync(home.dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 }))
  cleanups.push(() => removeSharedLeftovers(home.dir))
  // OpenClaw's log file and its temporary files go into the throwaway home too. No compile
  // cache: a child OpenClaw leaves behind writes it for a moment after its parent has exited,
  // while the home is being removed (and in a throwaway directory it would start cold anyway).
  home.env.TMPDIR = join(home.dir, 'tmp')
  home.env.NODE_DISABLE_COMPILE_CACHE = '1'
  mkdirSync(home.env.TMPDIR)
  const config = home.readConfig()
  config.logging = { file: join(home.dir, 'openclaw.log') }
  if (realModel) {
    const id = process.env.PIER_DEMO_MODEL
    if (!id) throw new Error('PIER_DEMO_MODEL_URL needs PIER_DEMO_MODEL (the model id)')
    const stub = config.models.providers.vllm.models[0]
    config.models.providers = {
      demo: { baseUrl: realModel, apiKey: '${PIER_DEMO_MODEL_KEY}', api: 'openai-completions', models: [{ ...stub, id, name: id }] },
    }
    config.agents.defaults.model.primary = `demo/${id}`
  }
  home.writeConfig(config)
  const openclaw = async (args, { quiet = false, ...options } = {}) => {
    if (!quiet) console.log(`  $ ${shell(['openclaw', ...args])}`)
    try {
      return (await run(OPENCLAW, args, { env: home.env, ...options })).stdout
    } catch (error) {
      throw new Error(`openclaw ${args[0]} ${args[1] ?? ''} failed: ${error.message}\n${error.stdout ?? ''}\n${String(error.stderr ?? '').slice(-2000)}`)
    }
  }
  const version = (await run(OPENCLAW, ['--version'], { env: home.env })).stdout.trim()

  say(`Install the plugin from the packed directory into ${version} (a throwaway home: ${home.dir})`)
  console.log(indent(await openclaw(['plugins', 'install', packed.dir, '--force', '--accept-capabilities'])))

  const natsUrl = remote ?? nats.url
  const subject = process.env.PIER_DEMO_SUBJECT ?? (remote ? `jobs.demo.${randomBytes(4).toString('hex')}` : 'jobs.worker')
  say(`Add the channel: openclaw channels add (the Pier server: ${natsUrl})`)
  const addArgs = ['channels', 'add', '--channel', 'pier', '--url', natsUrl, '--name', 'Demo worker']
  if (process.env.PIER_TOKEN) addArgs.push('--use-env') // a reference to PIER_TOKEN, not the token
  console.log(indent(await openclaw(addArgs)))
  // The rest a user sets by hand: who this worker is, and where its jobs come from.
  const added = home.readConfig()
  Object.assign(added.channels.pier, { workerId: 'demo-agent', walletAddress: '0xDEMO', subject })
  home.writeConfig(added)
  console.log(indent(`channels.pier in ${home.configPath}:\n${JSON.stringify(added.channels.pier, null, 2)}`))

  say('Start the gateway: openclaw gateway run')
  const gateway = await startGateway(home)
  console.log(indent(`ready on 127.0.0.1:${home.port}`))

  say('openclaw channels status: the pier account runs and is connected')
  const deadline = Date.now() + 90_000
  for (;;) {
    const status = await openclaw(['channels', 'status', '--probe', '--json'], { quiet: true }).then(JSON.parse, () => null)
    const account = status?.channelAccounts?.pier?.find((a) => a.accountId === 'default')
    if (account?.running && account.connected) break
    stopIfCleaning()
    if (Date.now() > deadline) throw new Error(`the pier account is not running and connected: ${JSON.stringify(account ?? status)}\n${gateway.log().slice(-3000)}`)
    await new Promise((r) => setTimeout(r, 1000))
  }
  console.log(indent(await openclaw(['channels', 'status', '--probe'])))

  const task = process.env.PIER_DEMO_TASK ?? (realModel ? 'Say hello to Pier in one short sentence.' : 'Say hello to Pier. PIERQ:hello-from-openclaw')
  say(`Publish a job on ${subject}: an agent turn in the gateway answers it`)
  console.log(`  $ ${shell(['pier-connector', 'publish', task, '--nats-url', natsUrl, '--publish-subject', subject])}`)
  let reply
  for (const until = Date.now() + 30_000; ;) {
    reply = await publish([task, '--nats-url', natsUrl, '--publish-subject', subject, '--timeout-ms', '120000'])
    if (!/NO_RESPONDERS/.test(reply) || Date.now() > until) break
    await new Promise((r) => setTimeout(r, 500))
  }
  let answer = null
  try {
    answer = JSON.parse(reply)
  } catch {}
  console.log(indent(answer ? JSON.stringify(answer, null, 2) : reply))
  if (answer?.type !== 'task_result') throw new Error('the job was not answered with a task_result')

  say('/pier in the agent\'s chat (gateway call chat.send, then chat.history)')
  const sessionKey = 'agent:main:main'
  await openclaw(['gateway', 'call', 'chat.send', '--params', JSON.stringify({ sessionKey, message: '/pier', idempotencyKey: `demo-${Date.now()}` }), '--json'])
  let text
  for (const until = Date.now() + 30_000; !text && Date.now() < until; await new Promise((r) => setTimeout(r, 500))) {
    const history = JSON.parse(await openclaw(['gateway', 'call', 'chat.history', '--params', JSON.stringify({ sessionKey, limit: 4 }), '--json'], { quiet: true }))
    text = textsOf(history).findLast((t) => t.startsWith('Pier connector'))
  }
  if (!text) throw new Error('/pier did not answer')
  console.log(`  $ ${shell(['openclaw', 'gateway', 'call', 'chat.history', '--params', JSON.stringify({ sessionKey, limit: 4 }), '--json'])}`)
  console.log(indent(text))

  say('Stop the gateway (the account drains), the model and nats-server; remove the throwaway home')
}

/**
 * What OpenClaw leaves in /tmp whatever its config says, in places every OpenClaw of this user
 * shares: lock files for its SQLite databases in /tmp/openclaw-state-locks-<uid>, named by a
 * hash of each database's path, and /tmp/openclaw (its preferred temporary directory). Removes
 * this run's locks (the databases under `dir`), then each directory if nothing else is in it.
 */
function removeSharedLeftovers(dir) {
  const databases = readdirSync(dir, { recursive: true }).filter((f) => String(f).endsWith('.sqlite'))
  const hashes = databases.map((f) => createHash('sha256').update(realpathSync(join(dir, String(f)))).digest('hex').slice(0, 8))
  const locks = `/tmp/openclaw-state-locks-${process.getuid?.() ?? ''}`.replace(/-$/, '')
  const names = (() => {
    try {
      return readdirSync(locks)
    } catch {
      return []
    }
  })()
  for (const name of names) if (hashes.some((h) => name.endsWith(`.${h}.lock.sqlite`))) rmSync(join(locks, name), { force: true })
  for (const shared of [locks, '/tmp/openclaw']) {
    try {
      rmdirSync(shared)
    } catch {} // absent, or another OpenClaw's files are in it
  }
}

/**
 * `openclaw gateway run`, stopped (SIGTERM: its accounts drain) by the cleanup from the moment
 * it is spawned, ready or not; resolves once it logs that it is ready.
 */
async function startGateway(home) {
  stopIfCleaning()
  const child = spawn(OPENCLAW, ['gateway', 'run', '--port', String(home.port)], { env: home.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
  const exited = new Promise((resolve) => child.once('exit', resolve))
  cleanups.push(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
    return exited
  })
  let log = ''
  child.stdout.on('data', (c) => (log += c))
  child.stderr.on('data', (c) => (log += c))
  for (const deadline = Date.now() + 90_000; !/\bready\b/i.test(log); await new Promise((r) => setTimeout(r, 100))) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`the gateway exited:\n${log.slice(-3000)}`)
    if (Date.now() > deadline) throw new Error(`the gateway is not ready after 90 s:\n${log.slice(-3000)}`)
    stopIfCleaning()
  }
  return { log: () => log }
}

/** Every string in a chat.history answer (message contents, whatever their shape). */
function textsOf(value) {
  if (typeof value === 'string') return [value]
  if (Array.isArray(value)) return value.flatMap(textsOf)
  if (value && typeof value === 'object') return Object.values(value).flatMap(textsOf)
  return []
}
