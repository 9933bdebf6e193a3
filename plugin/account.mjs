// One Pier account through OpenClaw's channel account lifecycle (gateway.startAccount): a
// worker of its own, started when the account starts, its status published with ctx.setStatus
// while it runs, stopped once (its jobs in flight finished) when the account is stopped (reload,
// stop, gateway shutdown).
import addon from '../load-addon.js'
import { createAgentTurnHandler } from './agent-turn.mjs'
import { runningAccounts } from './accounts.mjs'
import { createSessionPruner, leftoverJobSessions } from './sessions.mjs'
import { snapshotOf, blockedError } from './status.mjs'
import { redactSecrets, resolveAccount } from './config.mjs'
import { jobToolPolicy, jobWorkspaceDir, sandboxSettings } from './job-policy.mjs'
import { jobSandboxRoot, sandboxesIdle, sweepJobSandboxes } from './job-sandbox.mjs'
import { accountAddonConfig } from './identity.mjs'
import { accountConfigKeys, accountConfigKeysOfFile, configFilePath, onConfigFileChange } from './reload.mjs'

const STATUS_INTERVAL_MS = 1000

/**
 * @param {object} deps `api` (OpenClaw plugin API), `log` (pierLogger), `deleteSession`,
 *   `cleanupSession` and `listSessions` (optional overrides of the session store's calls, for tests)
 */
export function createAccountRun(account, { api, log, deleteSession, cleanupSession, policy, sandbox, workspaceDir }) {
  const { addonConfig, accountId } = account
  const running = new Map()
  // Job turns are detached (nothing stored) unless keepSessions asks to keep some for
  // debugging; stored ones past that number are deleted as their turns end (see sessions.mjs).
  // The pruner also deletes what an earlier gateway run left behind.
  const sessions = createSessionPruner({ agentId: account.agentId, keep: account.keepSessions, log, deleteSession, cleanupSession })
  const stored = account.keepSessions > 0 ? { onTurnSettled: sessions.finished } : {}
  const clean = (message) => redactSecrets(message, addonConfig)
  const turnLog = { error: (m) => log.error(`[${accountId}] ${clean(m)}`), info: (m) => log.info(`[${accountId}] ${clean(m)}`) }
  // No policy: the account is blocked (host tools) and never builds a worker. `sandbox`: the job
  // agent's sandbox settings, for status (where its jobs' tools run).
  let jobAgent = { agentId: account.agentId, policy, sandbox }
  const handler = policy && createAgentTurnHandler(api, running, { ...stored, jobAgent: () => jobAgent, workspaceDir, log: turnLog, limits: account.limits })
  let worker = null
  let stopping = null
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
    get jobAgent() {
      return jobAgent
    },
    /** Jobs from now on run as this agent, with this policy; the ones in flight keep theirs. */
    setJobAgent(next) {
      jobAgent = next
    },
    /** Builds the worker; throws the addon's error (config, unsupported platform) as a redacted one. */
    create() {
      try {
        worker = new addon.PierWorker(accountAddonConfig(api, account), handler, {
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
    /**
     * Stops the worker at most once, however many of stop/abort/service-stop ask: no more jobs,
     * the ones in flight finished (up to drainTimeoutMs), then its sessions and sandboxes.
     */
    stop() {
      stopping ??= (async () => {
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
        addon.releaseRuntime()
        await sessions.idle()
        // The drained jobs' sandboxes are being removed: a stop leaves none behind.
        await sandboxesIdle()
      })()
      return stopping
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

/** Removes the job sandboxes an earlier gateway process left behind (killed mid-job). */
function sweepSandboxes(run, { log }, workspaceDir) {
  const { agentId } = run.jobAgent
  sweepJobSandboxes({ agentId, root: jobSandboxRoot(workspaceDir) }).then(
    ({ containers, dirs }) => {
      if (containers || dirs) log.info(`[${run.accountId}] removed ${containers} job sandbox containers and ${dirs} job workspaces an earlier gateway run left behind`)
    },
    (error) => log.warn(`[${run.accountId}] could not look for job sandboxes an earlier gateway run left behind: ${error?.message ?? error}`),
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
 * Follows this account's config in the file (reload.mjs). Its own settings changed: stops taking
 * jobs and finishes the ones in flight so the gateway, idle, can apply the change; `stopped`
 * resolves then, and the account's run ends there, because OpenClaw retires the plugin's old
 * instance before it restarts the channel and waits for its running calls (this one) first. Its
 * job agent changed: jobs run as the new agent once the gateway has it, the worker running on.
 */
function followConfig(run, ctx, { api, log }) {
  const path = configFilePath()
  // The config this account started with, as the file had it then; read once, before any change.
  const started = accountConfigKeysOfFile(ctx.accountId, path).then((keys) => {
    // Inside a gateway OpenClaw's reader is always there; without it a JSON5 or $include config
    // would look unreadable and its changes deferred again, so say so once.
    if (keys?.reader === 'json') log.warn(`[${ctx.accountId}] OpenClaw's config reader could not be loaded: the config file is read as plain JSON, and a JSON5 or $include change is not followed`)
    return keys
  })
  let agentKey = null
  let resolveStopped
  const stopped = new Promise((resolve) => (resolveStopped = resolve))
  let pending = false
  let checks = Promise.resolve()
  const check = async () => {
    if (pending || ctx.abortSignal.aborted) return
    const [was, now] = await Promise.all([started, accountConfigKeysOfFile(ctx.accountId, path)])
    if (pending || ctx.abortSignal.aborted || now === undefined || was === undefined) return
    if (now.own !== was.own) {
      if (!now.applies) {
        run.notice = 'config changed in openclaw.json; gateway.reload.mode is "off": openclaw gateway restart applies it'
        return
      }
      run.notice = null
      pending = true
      run.reloading = true
      log.info(`[${ctx.accountId}] config changed: taking no more jobs and finishing the ones in flight, then the account restarts with it`)
      run.stop().then(() => resolveStopped(), () => resolveStopped())
      return
    }
    agentKey ??= was.agent
    if (now.agent === agentKey) return
    agentKey = now.agent
    const outcome = await followJobAgent(run, ctx, { api, log, wanted: now.agent })
    if (outcome.error) {
      pending = true
      run.stop().then(() => resolveStopped({ error: outcome.error }), () => resolveStopped({ error: outcome.error }))
    }
  }
  // One read at a time, in the order the changes came: a slow read never overtakes a later one.
  const unwatch = onConfigFileChange(() => {
    checks = checks.then(check).catch((error) => log.warn(`[${ctx.accountId}] could not read the changed config: ${error?.message ?? error}`))
  }, path)
  return { stopped, unwatch }
}

const AGENT_APPLY_WAIT_MS = 30_000

/**
 * The job agent in the file changed (`wanted`, accountConfigKeys' `agent`): once the gateway's
 * own config has it (a turn can run only as an agent the gateway knows), jobs run as that agent
 * with the policy its config gives. A policy that refuses it (host tools and no sandbox)
 * blocks the account: `{ error }`.
 */
async function followJobAgent(run, ctx, { api, log, wanted }) {
  const deadline = Date.now() + AGENT_APPLY_WAIT_MS
  let cfg
  for (;;) {
    cfg = api.runtime?.config?.current?.()
    if (cfg && accountConfigKeys(cfg, ctx.accountId).agent === wanted) break
    if (Date.now() > deadline || ctx.abortSignal.aborted) {
      if (!ctx.abortSignal.aborted) {
        run.notice = `the job agent changed in openclaw.json, and the gateway has not applied it: jobs still run as agent ${run.jobAgent.agentId}`
        log.warn(`[${ctx.accountId}] ${run.notice}`)
      }
      return {}
    }
    await new Promise((resolve) => setTimeout(resolve, 250))
  }
  const account = resolveAccount(cfg, ctx.accountId, {})
  try {
    const policy = jobToolPolicy({ ...run.account, agentId: account.agentId }, { cfg, sandbox: api.runtime?.sandbox })
    const was = run.jobAgent.agentId
    run.setJobAgent({ agentId: account.agentId, policy, sandbox: sandboxSettings(cfg, account.agentId) })
    run.notice = null
    log.info(`[${ctx.accountId}] the job agent's config changed: jobs now run as agent ${account.agentId}${was === account.agentId ? '' : ` (was ${was})`}, the worker running on`)
    return {}
  } catch (error) {
    return { error }
  }
}

/**
 * The channel's `gateway.startAccount`: stays pending while the account runs (as OpenClaw
 * expects of an account monitor) and returns once it is stopped, its jobs in flight finished.
 */
export async function startAccount(ctx, deps) {
  const { log } = deps
  const account = ctx.account
  const previous = runningAccounts.get(ctx.accountId)
  if (previous) await previous.stop()
  // Which tools a stranger's job may have (none by default); host tools without a sandbox
  // block the account (PIER_HOST_TOOLS) before it takes a job.
  let policy = null
  let workspaceDir = null
  let policyError = null
  const cfg = ctx.cfg ?? deps.api.runtime?.config?.current?.()
  try {
    policy = jobToolPolicy(account, { cfg, sandbox: deps.api.runtime?.sandbox })
    workspaceDir = jobWorkspaceDir(deps.api)
  } catch (error) {
    policyError = error
  }
  const run = createAccountRun(account, { ...deps, policy, sandbox: sandboxSettings(cfg, account.agentId), workspaceDir })
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
    run.startPending = true
    sweepLeftovers(run, deps)
    if (policy.sandboxed) sweepSandboxes(run, deps, workspaceDir)
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
    started.then(() => (run.startPending = false))
    run.starting = started
    const first = await Promise.race([started, aborted.then(() => ({ aborted: true }))])
    if (first.error && first.error.code !== 'PIER_STOPPED') throw cleanError(first.error, (m) => m)
    if (first.ok) {
      const s = run.status()
      log.info(`[${ctx.accountId}] worker ${s.workerId} taking jobs on ${s.subject} (queue ${s.queueGroup}) via ${s.servers}; results signed by ${s.workerKey}`)
      publish()
      const reload = followConfig(run, ctx, deps)
      unwatch = reload.unwatch
      const ended = await Promise.race([aborted, reload.stopped])
      if (ended?.error) throw ended.error
    }
    unwatch()
    await run.stop()
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
    await run.stop()
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
