// One Pier account through OpenClaw's channel account lifecycle (gateway.startAccount): a
// worker of its own, started when the account starts, its status published with ctx.setStatus
// while it runs, drained once when the account is stopped (reload, stop, gateway shutdown).
import { PierWorker, releaseRuntime } from './addon.mjs'
import { createAgentTurnHandler } from './agent-turn.mjs'
import { runningAccounts } from './accounts.mjs'
import { createSessionPruner, leftoverJobSessions } from './sessions.mjs'
import { snapshotOf, blockedError } from './status.mjs'
import { redactSecrets } from './config.mjs'
import { jobToolPolicy, jobWorkspaceDir } from './job-policy.mjs'
import { accountAddonConfig } from './identity.mjs'
import { accountConfigKey, configFilePath, onConfigFileChange } from './reload.mjs'

const STATUS_INTERVAL_MS = 1000

/**
 * @param {object} deps `api` (OpenClaw plugin API), `log` (pierLogger), `deleteSession`,
 *   `cleanupSession` and `listSessions` (optional overrides of the session store's calls, for tests)
 */
export function createAccountRun(account, { api, log, deleteSession, cleanupSession, policy, workspaceDir }) {
  const { addonConfig, accountId } = account
  const running = new Map()
  // Job turns are detached (nothing stored) unless keepSessions asks to keep some for
  // debugging; stored ones past that number are deleted as their turns end (see sessions.mjs).
  // The pruner also deletes what an earlier gateway run left behind.
  const sessions = createSessionPruner({ agentId: account.agentId, keep: account.keepSessions, log, deleteSession, cleanupSession })
  const stored = account.keepSessions > 0 ? { onTurnSettled: sessions.finished } : {}
  const clean = (message) => redactSecrets(message, addonConfig)
  const turnLog = { error: (m) => log.error(`[${accountId}] ${clean(m)}`), info: (m) => log.info(`[${accountId}] ${clean(m)}`) }
  // No policy: the account is blocked (host tools) and never builds a worker.
  const handler = policy && createAgentTurnHandler(api, running, { ...stored, agentId: account.agentId, policy, workspaceDir, log: turnLog, limits: account.limits })
  let worker = null
  let drained = null
  const run = {
    accountId,
    account,
    startedAtMs: Date.now(),
    lastError: null,
    activity: { inboundAt: null, outboundAt: null, runAt: null, connectedAt: null, disconnectedAt: null, connected: false, seen: { received: 0, answered: 0 } },
    sessions,
    get worker() {
      return worker
    },
    /** Builds the worker; throws the addon's error (config, unsupported platform) as a redacted one. */
    create() {
      try {
        worker = new PierWorker(accountAddonConfig(api, account), handler, {
          logger: (level, message) => log.addon(level, `[${accountId}] ${clean(message).replace(/^\[pier-connector\] /, '')}`),
          onCancel: (runKey, reason) => running.get(runKey)?.abort(new Error(reason)),
        })
        return worker
      } catch (error) {
        throw cleanError(error, clean)
      }
    },
    status() {
      if (!worker) return null
      const s = worker.status()
      if (s.lastError) s.lastError = clean(s.lastError)
      s.servers = clean(s.servers)
      return s
    },
    /** Stops the worker at most once, however many of stop/abort/service-stop ask. */
    drain() {
      drained ??= (async () => {
        if (!worker) return
        const starting = run.starting
        if (starting || worker.running || run.status()?.state === 'connecting') {
          log.info(`[${accountId}] stopping: draining in-flight jobs`)
          try {
            await worker.stop()
            // A start still under way (making the identity, connecting) holds the worker until
            // it has connected or given up, and a stop that came before it began stops
            // nothing: once it is done, stop what it started.
            if (starting && (await starting).ok) await worker.stop()
          } catch (error) {
            log.warn(`[${accountId}] stop failed: ${clean(error.message)}`)
          }
          const { stats } = worker.status()
          log.info(`[${accountId}] stopped; ${stats.received} jobs received, ${stats.completed} completed, ${stats.failed} failed`)
        }
        // This copy of the addon keeps its threads only while one of its workers runs.
        releaseRuntime()
        await sessions.idle()
      })()
      return drained
    },
  }
  return run
}

function cleanError(error, clean) {
  const out = new Error(clean(error?.message ?? String(error)))
  if (error?.code) out.code = error.code
  return out
}

/** Hands job sessions an earlier gateway process left behind to this run's pruner. */
function sweepLeftovers(run, { log, listSessions }) {
  leftoverJobSessions({ agentId: run.account.agentId, listSessions }).then(
    (keys) => {
      if (!keys.length) return
      log.info(`[${run.accountId}] deleting ${keys.length} job sessions an earlier gateway run left behind`)
      run.sessions.adopt(keys)
    },
    (error) => log.warn(`[${run.accountId}] could not list leftover job sessions: ${error?.message ?? error}`),
  )
}

/** Records when jobs arrived and were answered, from the worker's counters. */
function trackActivity(run, s) {
  const now = Date.now()
  const a = run.activity
  const connected = s.state === 'connected'
  if (connected && !a.connected) a.connectedAt = now
  if (!connected && a.connected) a.disconnectedAt = now
  a.connected = connected
  const answered = s.stats.completed + s.stats.failed + s.stats.rejected + s.stats.timedOut
  if (s.stats.received > a.seen.received) a.inboundAt = a.runAt = now
  if (answered > a.seen.answered) a.outboundAt = a.runAt = now
  a.seen = { received: s.stats.received, answered }
}

/**
 * When this account's config in the file changes, stops taking jobs and finishes the ones in
 * flight so the gateway, idle, can apply the change (reload.mjs). `drained` resolves then: the
 * account's run ends there, because OpenClaw retires the plugin's old instance before it
 * restarts the channel and waits for its running calls (this one) first.
 */
function drainOnConfigChange(run, ctx, log) {
  const path = configFilePath()
  const running = accountConfigKey(ctx.accountId, path)
  let resolveDrained
  const drained = new Promise((resolve) => (resolveDrained = resolve))
  let pending = false
  const unwatch = onConfigFileChange(() => {
    if (pending || ctx.abortSignal.aborted) return
    const now = accountConfigKey(ctx.accountId, path)
    if (now === undefined || running === undefined || now === running) return
    pending = true
    run.reloading = true
    log.info(`[${ctx.accountId}] config changed: taking no more jobs and finishing the ones in flight, then the account restarts with it`)
    run.drain().then(resolveDrained, resolveDrained)
  }, path)
  return { drained, unwatch }
}

/**
 * The channel's `gateway.startAccount`: stays pending while the account runs (as OpenClaw
 * expects of an account monitor) and returns once it is stopped and drained.
 */
export async function startAccount(ctx, deps) {
  const { log } = deps
  const account = ctx.account
  const previous = runningAccounts.get(ctx.accountId)
  if (previous) await previous.drain()
  // Which tools a stranger's job may have (none by default); host tools without a sandbox
  // block the account (PIER_HOST_TOOLS) before it takes a job.
  let policy = null
  let workspaceDir = null
  let policyError = null
  try {
    policy = jobToolPolicy(account, { cfg: ctx.cfg ?? deps.api.runtime?.config?.current?.(), sandbox: deps.api.runtime?.sandbox })
    workspaceDir = jobWorkspaceDir(deps.api)
  } catch (error) {
    policyError = error
  }
  const run = createAccountRun(account, { ...deps, policy, workspaceDir })
  runningAccounts.set(ctx.accountId, run)
  const publish = () => {
    const s = run.status()
    if (s) trackActivity(run, s)
    ctx.setStatus({ ...ctx.getStatus?.(), terminalDisconnect: false, stateReason: undefined, ...snapshotOf(run, s) })
  }
  let timer = null
  let unwatch = () => {}
  try {
    if (policyError) throw policyError
    if (policy.unsafe) log.warn(`[${ctx.accountId}] unsafeHostTools: job turns get host tools (${policy.tools.reachesHost.join(', ')}) without a sandbox; a stranger's task can run them on this host`)
    if (account.unresolvedSecrets.length) {
      throw Object.assign(new Error(`PIER_CONFIG: ${account.unresolvedSecrets.join(', ')} is a SecretRef OpenClaw did not resolve; check the secrets provider`), { code: 'PIER_CONFIG' })
    }
    run.create()
    sweepLeftovers(run, deps)
    // Nothing of a previous run's end (a config-change stop) carries over.
    ctx.setStatus({ ...snapshotOf(run, run.status()), running: true, lastStartAt: Date.now(), lifecycle: 'starting', terminalDisconnect: false, stateReason: undefined })
    timer = setInterval(publish, STATUS_INTERVAL_MS)
    timer.unref?.()
    const aborted = new Promise((resolve) => {
      if (ctx.abortSignal.aborted) resolve()
      else ctx.abortSignal.addEventListener('abort', resolve, { once: true })
    })
    // start() keeps retrying while no server answers (maxConnectAttempts 0 = until stopped).
    const started = run.worker.start().then(
      () => ({ ok: true }),
      (error) => ({ error }),
    )
    run.starting = started
    const first = await Promise.race([started, aborted.then(() => ({ aborted: true }))])
    if (first.error && first.error.code !== 'PIER_STOPPED') throw cleanError(first.error, (m) => m)
    if (first.ok) {
      const s = run.status()
      log.info(`[${ctx.accountId}] worker ${s.workerId} taking jobs on ${s.subject} (queue ${s.queueGroup}) via ${s.servers}; results signed by ${s.workerKey}`)
      publish()
      const reload = drainOnConfigChange(run, ctx, log)
      unwatch = reload.unwatch
      await Promise.race([aborted, reload.drained])
    }
    unwatch()
    await run.drain()
    clearInterval(timer)
    // Ended for a config change: the gateway restarts the account with it as soon as nothing
    // runs. No auto-restart with the old config meanwhile (OpenClaw's channel task would stay
    // alive for its backoff and hold the plugin's retirement for 5 s); should the change not be
    // applied (an invalid config), the status says what to do.
    const reloading = run.reloading && !ctx.abortSignal.aborted
    ctx.setStatus({
      ...snapshotOf({ ...run, reloading: false }, run.status()),
      running: false,
      connected: false,
      lifecycle: 'stopped',
      lastStopAt: Date.now(),
      ...(reloading
        ? {
            terminalDisconnect: true,
            stateReason: 'config changed: the account restarts with the new config',
            lastError: 'stopped for a config change the gateway has not applied: check openclaw config validate, then openclaw gateway restart',
          }
        : {}),
    })
  } catch (error) {
    unwatch()
    clearInterval(timer)
    await run.drain()
    // A refused login or a bad config will not heal by restarting: report it as terminal so
    // the channel manager does not restart it in a loop, and keep the reason visible.
    run.lastError = error.message
    log.error(`[${ctx.accountId}] worker failed to start: ${error.message}`)
    ctx.setStatus({
      ...snapshotOf(run, run.status()),
      running: false,
      connected: false,
      lifecycle: 'blocked',
      terminalDisconnect: true,
      lastError: blockedError(error.message),
      lastStopAt: Date.now(),
    })
  } finally {
    if (runningAccounts.get(ctx.accountId) === run) runningAccounts.delete(ctx.accountId)
  }
}
