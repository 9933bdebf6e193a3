#!/usr/bin/env node
// pier-connector CLI: a Pier worker or publisher outside OpenClaw, built on the native addon.
'use strict'

const { parseArgs } = require('node:util')
const { readFileSync } = require('node:fs')
// The addon, or the one-line reason it cannot load on this platform (reported as exit 2 by main).
let PierWorker, PierClient, generateUserKey, ledgerDays, identity, rotateIdentity, addonError
try {
  ;({ PierWorker, PierClient, generateUserKey, ledgerDays, identity, rotateIdentity } = require('../load-addon.js'))
} catch (error) {
  addonError = error
}

// Flags that mirror config keys, generated from the Rust config (scripts/gen-config.mjs):
// `kind` decides how a flag is parsed.
const CONFIG_FLAGS = require('./config-flags.json')
const { fleetTable, amount } = require('../lib/fleet-table.js')
const { ENV_VARIABLES, withEnvironment } = require('../lib/env.js')
const { execHandler, cancelJob, signalGroup } = require('./exec-runner.js')

// Secrets can come from the environment so they stay out of `ps` output and shell history.
const USAGE = `Usage:
  pier-connector worker (--echo | --exec CMD) --nats-url URL [options]
      Take jobs from NATS. --echo answers each job with its task; --exec runs CMD in a shell
      per job, with the task on stdin; stdout is the result, a non-zero exit is EXECUTION_FAILED.
      The server must be named (--nats-url, --servers or the config): the public marketplace
      is joined only when it is named.
  pier-connector publish TASK [--system-prompt S] [--timeout-ms N] [--meta JSON] [--progress] [options]
      Send one task_request to publishSubject and print the reply JSON.
      Exit 0 for task_result, 1 for task_error, 2 when no reply came.
      --progress asks the worker for progress (protocol v1.1): on a terminal the answer's text
      as it is written and one status line for keep-alives, else each task_progress as a JSON
      line before the reply. Ctrl-C cancels the job and waits for its CANCELLED (twice: quit).
      A worker silent for 3 keep-alive intervals makes the job lost (exit 2).
  pier-connector status [options]
      Connect and print the server and subjects this config would use, as JSON.
  pier-connector workers [--wait-ms N] [--json] [options]
      List live workers (NATS service discovery, $SRV.STATS.pier-worker) as a table: worker,
      server, uptime, running, completed, failed, p50, earned, spent. --json prints the raw
      answers.
  pier-connector ledger --ledger FILE [--since 7d | --since YYYY-MM-DD] [--json]
      Sum a worker's ledger (ledgerFile) per UTC day: jobs, earned, spent, margin, tokens.
  pier-connector keygen [--json]
      Make a new NATS user key for signing: prints its seed (a secret: signingSeed, or
      PIER_SIGNING_SEED) and its public key (for allowedSenders and trustedWorkers).
  pier-connector identity [--rotate] [--json] [options]
      Show the key this worker signs its results and this requester its requests with: its
      public key (what requesters pin in trustedWorkers, workers list in allowedSenders) and
      where its seed is kept, made now if there is none yet. Without signingSeed it is kept in
      --identity-file, by default ~/.config/pier-connector/identity.seed ($XDG_CONFIG_HOME
      when set), mode 0600. --rotate replaces it and keeps the old seed as FILE.old; a
      running worker signs with the new key from its next start.

Options (each mirrors a config key of channels.pier in OpenClaw):
  --config FILE                  read a JSON config first (a channels.pier section as it is,
                                 or openclaw.json); flags override it
  --account ID                   with --config: the channels.pier account to use
  --ledger FILE                  the ledger file (same as --ledger-file)
${CONFIG_FLAGS.map(({ flag, key, kind }) => `  --${flag}${kind === 'boolean' || kind === 'negated' ? '' : ' VALUE'}`.padEnd(33) + (kind === 'negated' ? `${key}: false` : key)).join('\n')}
  --verbose                      log debug lines too
  --version                      print the version and exit
Secrets may also come from the environment, which fills what the config leaves unset:
PIER_TOKEN, PIER_USER, PIER_PASSWORD and PIER_NKEY_SEED when it names no login of its own,
PIER_SIGNING_SEED when it names no signingSeed (the same rule as the plugin's).`

function parse(argv) {
  const options = {
    config: { type: 'string' },
    account: { type: 'string' },
    echo: { type: 'boolean' },
    exec: { type: 'string' },
    'system-prompt': { type: 'string' },
    'timeout-ms': { type: 'string' },
    progress: { type: 'boolean' },
    'wait-ms': { type: 'string' },
    json: { type: 'boolean' },
    ledger: { type: 'string' },
    since: { type: 'string' },
    meta: { type: 'string' },
    verbose: { type: 'boolean' },
    rotate: { type: 'boolean' },
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
  // The environment fills the default account only, as in the gateway.
  const { addonConfig } = resolveAccount(cfg, accountId, process.env)
  for (const key of SECRET_KEYS) {
    const ref = addonConfig[key]
    if (!isSecretRef(ref)) continue
    if (ref.source === 'env' && process.env[ref.id]) addonConfig[key] = process.env[ref.id]
    else if (ref.source === 'env') throw usageError(`${key} in ${path} is a SecretRef to ${ref.id}, which is not set in this environment`)
    else throw usageError(`${key} in ${path} is a SecretRef (${ref.source}:${ref.id}) this CLI cannot resolve: run openclaw pier, which resolves it`)
  }
  return addonConfig
}

function buildConfig(values, base) {
  // `base` (openclaw pier) and --config were resolved as an account, environment included.
  const resolved = Boolean(base || values.config)
  const config = base ? { ...base } : values.config ? configFromFile(values.config, values.account) : {}
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
  if (values.ledger !== undefined) config.ledgerFile = values.ledger
  return resolved ? config : withEnvironment(config).config
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

/** The public Pier marketplace: the config's default server, which a CLI worker joins only when named. */
const PUBLIC_MARKETPLACE = 'wss://pier.gholl.com/nexus'

/** The worker's credentials in its environment, kept out of an `--exec` command's. */
const WORKER_ONLY_ENV = ENV_VARIABLES

async function runWorker(values, config) {
  if (Boolean(values.echo) === Boolean(values.exec)) {
    throw usageError('worker needs exactly one of --echo or --exec CMD')
  }
  // With no server named the worker would join the public marketplace and answer strangers'
  // jobs, paid ones included, with whatever --echo or --exec makes of them: only when told so.
  if (!config.natsUrl && !config.servers?.length) {
    throw usageError(
      `worker takes jobs only from a server you name: --nats-url nats://127.0.0.1:4222 for a local nats-server, or --nats-url ${PUBLIC_MARKETPLACE} to answer strangers' jobs on the public Pier marketplace`,
    )
  }
  const running = new Map()
  const log = logOptions(values.verbose, config)
  const worker = values.echo
    ? PierWorker.echo(config, log)
    : new PierWorker(config, execHandler(values.exec, running, WORKER_ONLY_ENV), {
        ...log,
        onCancel: (runKey) => cancelJob(running.get(runKey)),
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
  const watching = values.progress ? watchProgress() : undefined
  await withClient(values, config, async (client) => {
    try {
      const reply = await client.publish(task, { systemPrompt: values['system-prompt'], timeoutMs, meta, ...watching?.options })
      watching?.done()
      process.stdout.write(JSON.stringify(reply) + '\n')
      process.exitCode = reply && reply.ok === true ? 0 : 1
    } catch (error) {
      watching?.done()
      process.stderr.write(`${error.message}${error.code === 'PIER_NO_RESPONDERS' ? noRespondersHint(config) : ''}\n`)
      process.exitCode = 2
    } finally {
      watching?.stop()
    }
  })
}

/**
 * `publish --progress`: what to pass to PierClient.publish (onProgress, an AbortSignal that
 * Ctrl-C aborts), and how it shows. On a terminal the answer's text goes to stdout as it is
 * written and keep-alives are one status line on stderr; otherwise each task_progress is a
 * JSON line on stdout, before the reply's.
 */
function watchProgress() {
  const tty = Boolean(process.stdout.isTTY)
  const controller = new AbortController()
  let streamed = false
  let status = ''
  const clearStatus = () => {
    if (status && process.stderr.isTTY) process.stderr.write('\r\x1b[K')
    status = ''
  }
  const showStatus = (text) => {
    if (!process.stderr.isTTY) return
    clearStatus()
    status = text
    process.stderr.write(text)
  }
  const onProgress = (p) => {
    if (!tty) return process.stdout.write(JSON.stringify(p) + '\n')
    if (p.state === 'partial' && typeof p.text === 'string') {
      clearStatus()
      process.stdout.write(p.text)
      streamed = true
    } else if (!streamed) {
      showStatus(`${p.state === 'accepted' ? 'accepted' : 'working'} (${p.worker?.id ?? 'worker'}, ${(p.elapsedMs / 1000).toFixed(1)} s)${controller.signal.aborted ? ', cancelling' : ''}`)
    }
  }
  const onSigint = () => {
    if (controller.signal.aborted) process.exit(130)
    process.stderr.write(`${status || streamed ? '\n' : ''}cancelling the job (Ctrl-C again to quit without waiting)\n`)
    status = ''
    controller.abort()
  }
  process.on('SIGINT', onSigint)
  return {
    options: { onProgress, signal: controller.signal },
    done: () => {
      clearStatus()
      if (streamed) process.stdout.write('\n')
    },
    stop: () => process.off('SIGINT', onSigint),
  }
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

/** `--since`: `7d` (today and the 6 days before it, UTC) or a `YYYY-MM-DD` day; ms since the epoch. */
function sinceOf(text, now = Date.now()) {
  if (text === undefined) return undefined
  const days = /^(\d+)d$/.exec(text)
  if (days && Number(days[1]) >= 1) return now - (Number(days[1]) - 1) * 86_400_000
  if (/^\d{4}-\d{2}-\d{2}$/.test(text) && Number.isFinite(Date.parse(`${text}T00:00:00Z`))) return Date.parse(`${text}T00:00:00Z`)
  throw usageError('--since must be a number of days (7d) or a day (2026-12-01)')
}

const LEDGER_HEADER = ['DAY (UTC)', 'JOBS', 'DONE', 'EARNED', 'SPENT', 'MARGIN', 'TOKENS IN', 'OUT']

/** Per-day sums of the ledger, as a table with a total line, or as JSON. */
async function runLedger(values, config) {
  const file = config.ledgerFile
  if (!file) throw usageError('ledger needs --ledger FILE (the worker\'s ledgerFile)')
  const { days, unreadableLines } = await ledgerDays(file, sinceOf(values.since))
  const total = days.reduce(
    (t, d) => ({ jobs: t.jobs + d.jobs, completed: t.completed + d.completed, undelivered: t.undelivered + d.undelivered, reruns: t.reruns + d.reruns, earned: t.earned + d.earned, spent: t.spent + d.spent, margin: t.margin + d.margin, tokensIn: t.tokensIn + d.tokensIn, tokensOut: t.tokensOut + d.tokensOut }),
    { jobs: 0, completed: 0, undelivered: 0, reruns: 0, earned: 0, spent: 0, margin: 0, tokensIn: 0, tokensOut: 0 },
  )
  const budget = await ledgerBudget(file, config)
  if (values.json) return printJson({ file, days, total, unreadableLines, ...(budget ? { budget } : {}) })
  const row = (day, d) => [day, String(d.jobs), String(d.completed), amount(d.earned), amount(d.spent), amount(d.margin), String(d.tokensIn), String(d.tokensOut)]
  const rows = [LEDGER_HEADER, ...days.map((d) => row(d.day, d)), row('total', total)]
  const widths = LEDGER_HEADER.map((_, i) => Math.max(...rows.map((r) => r[i].length)))
  const line = (r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ')
  process.stdout.write(
    [
      ...rows.map(line),
      'EARNED: meta.price of delivered results, each job once; SPENT: model cost of every run (cost config unit)',
      'MARGIN = EARNED - SPENT: meaningful when both use one unit',
      ...(total.reruns ? [`${total.reruns} rerun(s): runs of jobs that had run before (JetStream redeliveries); spent, not counted again`] : []),
      ...(total.undelivered ? [`${total.undelivered} run(s) undelivered: their answer could not be sent; spent, not counted as jobs`] : []),
      ...(unreadableLines ? [`${unreadableLines} ledger line(s) unreadable (cut short by a crash, or not the worker's): skipped`] : []),
      ...(budget ? [budgetLine(budget)] : []),
    ].join('\n') + '\n',
  )
}

/** Today's (UTC) use against the config's daily budget, or null when it has none. */
async function ledgerBudget(file, config, now = Date.now()) {
  const maxDailySpend = config.maxDailySpend > 0 ? config.maxDailySpend : 0
  const maxDailyTokens = config.maxDailyTokens > 0 ? config.maxDailyTokens : 0
  if (!maxDailySpend && !maxDailyTokens) return null
  const day = new Date(now).toISOString().slice(0, 10)
  const today = (await ledgerDays(file, now)).days.find((d) => d.day === day)
  const spent = today?.spent ?? 0
  const tokens = today?.tokens ?? 0
  const reached = (maxDailySpend > 0 && spent >= maxDailySpend) || (maxDailyTokens > 0 && tokens >= maxDailyTokens)
  return { day, spent, tokens, maxDailySpend, maxDailyTokens, reached }
}

/** `budget today (UTC): spent X of maxDailySpend Y, tokens T of maxDailyTokens Z`. */
function budgetLine(b) {
  const parts = []
  if (b.maxDailySpend) parts.push(`spent ${amount(b.spent)} of maxDailySpend ${amount(b.maxDailySpend)}`)
  if (b.maxDailyTokens) parts.push(`tokens ${b.tokens} of maxDailyTokens ${b.maxDailyTokens} (input, output and cache)`)
  if (b.reached) parts.push('reached: new jobs are answered BUDGET_EXHAUSTED until 00:00 UTC')
  return `budget today (${b.day} UTC): ${parts.join(', ')}`
}

/** A new user key: the seed and public key, as two labelled lines or as JSON. */
function runKeygen(values) {
  const { seed, publicKey } = generateUserKey()
  if (values.json) printJson({ seed, publicKey })
  else process.stdout.write(`seed:       ${seed}\npublic key: ${publicKey}\n`)
}

/** The signing identity: shown (made if missing), or rotated with --rotate. */
function runIdentity(values, config) {
  const info = values.rotate ? rotateIdentity(config) : identity(config, true)
  if (values.json) return printJson(info)
  const lines = [`public key: ${info.publicKey}`]
  if (info.source === 'signingSeed') lines.push('seed:       signingSeed (from the config; rotate it by setting a new one)')
  else lines.push(`seed:       ${info.file}${info.created && !values.rotate ? ' (made now)' : ''} (a secret: back it up; never share it)`)
  if (values.rotate) {
    if (info.previousPublicKey) lines.push(`replaced:   ${info.previousPublicKey} (its seed kept in ${info.backupFile})`)
    lines.push('Requesters that pin the old key (trustedWorkers) need the new one; a running worker signs with it from its next start.')
  } else {
    lines.push('Requesters pin the public key in trustedWorkers; workers list it in allowedSenders.')
  }
  process.stdout.write(lines.join('\n') + '\n')
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
    case 'ledger':
      return runLedger(values, config)
    case 'identity':
      return runIdentity(values, config)
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
