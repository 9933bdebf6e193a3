#!/usr/bin/env node
// pier-connector CLI: a Pier worker or publisher outside OpenClaw, built on the native addon.
'use strict'

const { parseArgs } = require('node:util')
const { readFileSync } = require('node:fs')
const { spawn } = require('node:child_process')
// The addon, or the one-line reason it cannot load on this platform (reported as exit 2 by main).
let PierWorker, PierClient, generateUserKey, addonError
try {
  ;({ PierWorker, PierClient, generateUserKey } = require('../load-addon.js'))
} catch (error) {
  addonError = error
}

// Flags that mirror config keys, generated from the Rust config (scripts/gen-config.mjs):
// `kind` decides how a flag is parsed.
const CONFIG_FLAGS = require('./config-flags.json')
const { fleetTable } = require('./fleet-table.js')

// Secrets can come from the environment so they stay out of `ps` output and shell history.
const SECRET_ENV = [
  ['token', 'PIER_TOKEN'],
  ['password', 'PIER_PASSWORD'],
  ['nkeySeed', 'PIER_NKEY_SEED'],
  ['signingSeed', 'PIER_SIGNING_SEED'],
]

const USAGE = `Usage:
  pier-connector worker (--echo | --exec CMD) [options]
      Take jobs from NATS. --echo answers each job with its task; --exec runs CMD in a shell
      per job, with the task on stdin; stdout is the result, a non-zero exit is EXECUTION_FAILED.
  pier-connector publish TASK [--system-prompt S] [--timeout-ms N] [--meta JSON] [options]
      Send one task_request to publishSubject and print the reply JSON.
      Exit 0 for task_result, 1 for task_error, 2 when no reply came.
  pier-connector status [options]
      Connect and print the server and subjects this config would use, as JSON.
  pier-connector workers [--wait-ms N] [--json] [options]
      List live workers (NATS service discovery, $SRV.STATS.pier-worker) as a table: worker,
      server, uptime, in flight, completed, failed, p50 ms, earned. --json prints the raw answers.
  pier-connector keygen [--json]
      Make a new NATS user key for signing: prints its seed (a secret: signingSeed, or
      PIER_SIGNING_SEED) and its public key (for allowedSenders and trustedWorkers).

Options (each mirrors a config key of channels.pier in OpenClaw):
  --config FILE                  read a JSON config first (a channels.pier section as it is,
                                 or openclaw.json); flags override it
  --account ID                   with --config: the channels.pier account to use
${CONFIG_FLAGS.map(({ flag, key, kind }) => `  --${flag}${kind === 'boolean' || kind === 'negated' ? '' : ' VALUE'}`.padEnd(33) + (kind === 'negated' ? `${key}: false` : key)).join('\n')}
  --verbose                      log debug lines too
  --version                      print the version and exit
Secrets may also come from PIER_TOKEN, PIER_PASSWORD, PIER_NKEY_SEED and PIER_SIGNING_SEED.`

function parse(argv) {
  const options = {
    config: { type: 'string' },
    account: { type: 'string' },
    echo: { type: 'boolean' },
    exec: { type: 'string' },
    'system-prompt': { type: 'string' },
    'timeout-ms': { type: 'string' },
    'wait-ms': { type: 'string' },
    json: { type: 'boolean' },
    meta: { type: 'string' },
    verbose: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
    version: { type: 'boolean' },
  }
  for (const { flag, kind } of CONFIG_FLAGS) {
    options[flag] = { type: kind === 'boolean' || kind === 'negated' ? 'boolean' : 'string' }
  }
  return parseArgs({ args: argv, options, allowPositionals: true, strict: true })
}

/**
 * A `--config` file: a `channels.pier` section as it is (shared keys, `accounts.<id>`, the
 * channel's own keys such as `enabled`), a whole openclaw.json, or plain worker keys; resolved
 * the way the plugin resolves an account (plugin/config.mjs). An env SecretRef is read from the
 * environment; other SecretRefs need OpenClaw (`openclaw pier …` resolves them).
 */
function configFromFile(path, accountId) {
  const raw = JSON.parse(readFileSync(path, 'utf8'))
  const { resolveAccount, SECRET_KEYS, isSecretRef } = require('../plugin/config.mjs')
  const cfg = raw?.channels?.pier ? raw : { channels: { pier: raw } }
  const { addonConfig } = resolveAccount(cfg, accountId, {})
  for (const key of SECRET_KEYS) {
    const ref = addonConfig[key]
    if (!isSecretRef(ref)) continue
    if (ref.source === 'env' && process.env[ref.id]) addonConfig[key] = process.env[ref.id]
    else throw usageError(`${key} in ${path} is a SecretRef (${ref.source}:${ref.id}) this CLI cannot resolve: set ${ref.source === 'env' ? ref.id : SECRET_ENV.find(([k]) => k === key)?.[1] ?? 'it'} in the environment, or run openclaw pier, which resolves it`)
  }
  return addonConfig
}

function buildConfig(values, base) {
  const config = base ? { ...base } : values.config ? configFromFile(values.config, values.account) : {}
  for (const [key, variable] of SECRET_ENV) {
    if (process.env[variable]) config[key] = process.env[variable]
  }
  for (const { flag, key, kind: type } of CONFIG_FLAGS) {
    const raw = values[flag]
    if (raw === undefined) continue
    if (type === 'number') {
      const n = Number(raw)
      if (!Number.isFinite(n)) throw usageError(`--${flag} must be a number`)
      config[key] = n
    } else if (type === 'negated') {
      config[key] = !raw
    } else if (type === 'list') {
      config[key] = raw.split(',').map((s) => s.trim()).filter(Boolean)
    } else {
      config[key] = raw
    }
  }
  return config
}

function usageError(message) {
  const error = new Error(message)
  error.usage = true
  return error
}

function logOptions(verbose, config = {}) {
  // With logFormat json the addon writes each line as one JSON object (time and level inside).
  const json = config.logFormat === 'json'
  return {
    logger: (level, message) =>
      process.stderr.write(json ? `${message}\n` : `${new Date().toISOString()} ${level} ${message}\n`),
    logLevel: verbose ? 'debug' : 'info',
  }
}

// What a job's command gets in its environment. Node refuses a NUL byte in an environment
// value, so a job carrying one is answered with a one-line INVALID_REQUEST instead.
const JOB_ENV = [
  ['PIER_JOB_ID', 'id', (job) => job.id],
  ['PIER_TIMEOUT_MS', 'timeoutMs', (job) => String(job.timeoutMs)],
  ['PIER_SYSTEM_PROMPT', 'systemPrompt', (job) => job.systemPrompt ?? ''],
  ['PIER_SENDER', 'sender', (job) => job.sender ?? ''],
  ['PIER_SENDER_KEY', 'senderKey', (job) => job.senderKey ?? ''],
]
// How long a cancelled job's commands get after SIGTERM before the group is SIGKILLed.
const KILL_GRACE_MS = 500

/** Signals every process of a job's process group (the shell and all it started). */
function signalGroup(child, signal) {
  if (child.pid === undefined) return
  try {
    process.kill(-child.pid, signal)
  } catch {
    // ESRCH: the group is gone already.
  }
}

/** Ends a job's processes: SIGTERM to the group, SIGKILL after a short grace. */
function cancelJob(child) {
  if (!child || child.cancelTimer) return
  signalGroup(child, 'SIGTERM')
  child.cancelTimer = setTimeout(() => signalGroup(child, 'SIGKILL'), KILL_GRACE_MS)
}

/**
 * Runs CMD in a shell with the task on stdin; resolves to its stdout. Each job's shell leads
 * its own process group, so cancelling the job (deadline, shutdown) kills everything it
 * started, and whatever the command left running in the background dies when it exits.
 */
/** The worker's credentials in its environment, kept out of an `--exec` command's. */
const WORKER_ONLY_ENV = [...SECRET_ENV.map(([, variable]) => variable), 'PIER_USER']

function execHandler(command, running) {
  return (job) => {
    // A stranger's task runs in this shell: none of the worker's own credentials go with it.
    const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !WORKER_ONLY_ENV.includes(name)))
    for (const [variable, field, value] of JOB_ENV) {
      const text = value(job)
      if (text.includes('\0')) {
        return { error: { code: 'INVALID_REQUEST', message: `${field} contains a NUL byte, which a command environment cannot carry` } }
      }
      env[variable] = text
    }
    return new Promise((resolve, reject) => {
      let child
      try {
        child = spawn('sh', ['-c', command], { stdio: ['pipe', 'pipe', 'pipe'], env, detached: true })
      } catch (error) {
        reject(new Error(`could not run the command (${error.code ?? 'spawn failed'})`))
        return
      }
      running.set(job.id, child)
      const stdout = []
      let stderr = ''
      child.stdout.on('data', (chunk) => stdout.push(chunk))
      child.stderr.on('data', (chunk) => {
        if (stderr.length < 4096) stderr += chunk
      })
      child.stdin.on('error', () => {}) // the command may exit without reading its input
      child.stdin.end(job.task)
      // The shell is done: what it left in the background (holding our pipes, or not) goes too.
      child.on('exit', () => signalGroup(child, 'SIGKILL'))
      child.on('error', (error) => {
        running.delete(job.id)
        clearTimeout(child.cancelTimer)
        reject(new Error(`could not run the command (${error.code ?? 'spawn failed'})`))
      })
      child.on('close', (code, signal) => {
        running.delete(job.id)
        clearTimeout(child.cancelTimer)
        if (code === 0) {
          resolve(Buffer.concat(stdout).toString('utf8').replace(/\r?\n$/, ''))
        } else {
          const why = signal ? `was killed by ${signal}` : `exited with code ${code}`
          const detail = stderr.trim().split('\n')[0]
          reject(new Error(`the command ${why}${detail ? `: ${detail}` : ''}`))
        }
      })
    })
  }
}

async function runWorker(values, config) {
  if (Boolean(values.echo) === Boolean(values.exec)) {
    throw usageError('worker needs exactly one of --echo or --exec CMD')
  }
  const running = new Map()
  const log = logOptions(values.verbose, config)
  const worker = values.echo
    ? PierWorker.echo(config, log)
    : new PierWorker(config, execHandler(values.exec, running), {
        ...log,
        onCancel: (jobId) => cancelJob(running.get(jobId)),
      })
  // Last resort: no job's processes outlive the CLI, however it exits.
  process.on('exit', () => running.forEach((child) => signalGroup(child, 'SIGKILL')))
  await worker.start()
  const shutdown = async (signal) => {
    process.removeAllListeners('SIGINT')
    process.removeAllListeners('SIGTERM')
    worker.log('info', `[pier-connector] ${signal}: stopping`)
    await worker.stop()
    // Jobs answered SHUTTING_DOWN were cancelled; kill what is left of them now.
    running.forEach((child) => signalGroup(child, 'SIGKILL'))
    process.stdout.write(JSON.stringify(worker.status()) + '\n')
  }
  process.once('SIGINT', () => shutdown('SIGINT'))
  process.once('SIGTERM', () => shutdown('SIGTERM'))
  process.on('SIGUSR2', () => process.stdout.write(JSON.stringify(worker.status()) + '\n'))
}

async function runPublish(values, positionals, config) {
  const task = positionals.join(' ')
  if (!task.trim()) throw usageError('publish needs a TASK')
  let meta
  if (values.meta !== undefined) {
    try {
      meta = JSON.parse(values.meta)
    } catch {
      throw usageError('--meta must be JSON')
    }
  }
  const timeoutMs = values['timeout-ms'] === undefined ? undefined : Number(values['timeout-ms'])
  await withClient(values, config, async (client) => {
    try {
      const reply = await client.publish(task, { systemPrompt: values['system-prompt'], timeoutMs, meta })
      process.stdout.write(JSON.stringify(reply) + '\n')
      process.exitCode = reply && reply.ok === true ? 0 : 1
    } catch (error) {
      process.stderr.write(`${error.message}${error.code === 'PIER_NO_RESPONDERS' ? noRespondersHint(config) : ''}\n`)
      process.exitCode = 2
    }
  })
}

/** Why nobody listens on publishSubject, and how to reach a worker directly. */
function noRespondersHint(config) {
  const to = config.publishSubject ?? 'jobs.submit'
  return (
    `\nNobody subscribes to ${to} on this server. publishSubject (default jobs.submit) is where the Pier marketplace takes tasks; ` +
    `workers listen on their subject (default jobs.worker, queue openclaw-workers). ` +
    `To reach a worker directly, publish to its subject: --publish-subject jobs.worker (or the worker's subject).`
  )
}

/** Runs `use` with a client for this config and always closes it. */
async function withClient(values, config, use) {
  const client = new PierClient(config, logOptions(values.verbose, config))
  try {
    return await use(client)
  } finally {
    await client.close()
  }
}

const printJson = (value) => process.stdout.write(JSON.stringify(value, null, 2) + '\n')

function runStatus(values, config) {
  return withClient(values, config, async (client) => printJson(await client.serverStatus()))
}

function runWorkers(values, config) {
  const waitMs = values['wait-ms'] === undefined ? undefined : Number(values['wait-ms'])
  return withClient(values, config, async (client) => {
    const workers = await client.workers(waitMs)
    if (values.json) printJson(workers)
    else process.stdout.write(workersTable(workers, Date.now()) + '\n')
  })
}

/** The discovery answers as the fleet table. */
function workersTable(workers, now) {
  return fleetTable(
    workers.map((w) => {
      const data = w.endpoints?.[0]?.data ?? {}
      return { worker: w.metadata?.workerId ?? w.id, server: data.server, uptimeMs: w.started ? now - Date.parse(w.started) : undefined, stats: data }
    }),
  )
}

/** A new user key: the seed and public key, as two labelled lines or as JSON. */
function runKeygen(values) {
  const { seed, publicKey } = generateUserKey()
  if (values.json) printJson({ seed, publicKey })
  else process.stdout.write(`seed:       ${seed}\npublic key: ${publicKey}\n`)
}

/**
 * The commands this CLI has, read from its usage text (so a command documented there is one
 * `openclaw pier` offers too): `{ name, summary }`.
 */
function commands() {
  const out = []
  for (const block of USAGE.split(/\n(?=  pier-connector )/).slice(1)) {
    const [head, ...body] = block.split('\n')
    const name = /^  pier-connector (\S+)/.exec(head)?.[1]
    const end = body.findIndex((l) => !l.startsWith('      '))
    const text = body.slice(0, end < 0 ? body.length : end).map((l) => l.trim()).join(' ')
    if (name && !out.some((c) => c.name === name)) out.push({ name, summary: /^.*?\.(?=\s|$)|^.*/.exec(text)[0] })
  }
  return out
}

/**
 * Runs one command line. `options.config`: the config to start from instead of `--config`
 * (OpenClaw's channels.pier account, SecretRefs resolved); `options.prog`: how the usage names
 * this CLI.
 */
async function main(argv, options = {}) {
  const { values, positionals } = parse(argv)
  const [command, ...rest] = positionals
  if (values.version) return void process.stdout.write(`pier-connector ${require('../package.json').version}\n`)
  if (values.help || !command) {
    process.stdout.write(usage(options.prog) + '\n')
    return
  }
  if (addonError) throw addonError
  // Needs no config and no server.
  if (command === 'keygen') return runKeygen(values)
  const config = buildConfig(values, options.config)
  switch (command) {
    case 'worker':
      return runWorker(values, config)
    case 'publish':
      return runPublish(values, rest, config)
    case 'status':
      return runStatus(values, config)
    case 'workers':
      return runWorkers(values, config)
    default:
      throw usageError(`unknown command ${JSON.stringify(command)}`)
  }
}

const usage = (prog = 'pier-connector') => USAGE.replaceAll('pier-connector ', `${prog} `)

/** main, with a failure printed as one line (and the usage for a usage error), exit code 2. */
function run(argv, options = {}) {
  return main(argv, options).catch((error) => {
    process.stderr.write(`${options.prog ?? 'pier-connector'}: ${error.message}\n`)
    if (error.usage || error.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') process.stderr.write(`\n${usage(options.prog)}\n`)
    process.exitCode = 2
  })
}

module.exports = { run, commands, usage }

if (require.main === module) run(process.argv.slice(2))
