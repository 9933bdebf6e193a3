// The channel's status surface: what `openclaw channels status [--probe] [--json]`,
// `openclaw status` and the health monitor read for each Pier account. The account lifecycle
// publishes `snapshotOf` with ctx.setStatus; these hooks shape it for the CLI.
import { runningAccounts } from './accounts.mjs'
import addon from '../load-addon.js'
import { redactSecrets } from './config.mjs'
import { describeJobTools } from './job-policy.mjs'

const ANONYMOUS_WORKER = 'anonymous-worker'

const LIFECYCLE = { disconnected: 'recovering', recovering: 'recovering', stopped: 'stopped', reloading: 'recovering' }

/** The standard account snapshot fields plus a `pier` block, from a worker status. */
export function snapshotOf(run, s) {
  const a = run.activity
  if (!s) return { accountId: run.accountId, running: false, lastError: run.lastError ?? null }
  const connected = s.state === 'connected'
  // Drained for a config change the gateway is about to apply: not a stopped account.
  if (run.reloading) {
    s = { ...s, state: 'reloading' }
  } else if (run.startPending && s.state === 'stopped') {
    // start() asked for and not yet under way in the addon (it reads the identity first): the
    // account is connecting, not stopped. A probe shows the connect error from the first
    // attempt, before the next publish.
    s = { ...s, state: 'connecting' }
  }
  return {
    accountId: run.accountId,
    running: s.state !== 'stopped' || Boolean(run.worker?.running),
    ...(run.reloading
      ? { stateReason: 'config changed: finishing the jobs in flight; the account restarts with the new config' }
      : run.notice
        ? { stateReason: run.notice }
        : {}),
    connected,
    // Until the first connection the account is starting; after it, a lost connection is
    // recovering (the worker reconnects by itself); a stopping worker is draining its jobs.
    lifecycle: connected ? 'ready' : LIFECYCLE[s.state] ?? (a.connectedAt ? 'recovering' : 'starting'),
    reconnectAttempts: s.stats.connectAttempts ?? 0,
    lastConnectedAt: a.connectedAt,
    lastDisconnect: a.disconnectedAt ? { at: a.disconnectedAt, ...(s.lastError ? { error: s.lastError } : {}) } : null,
    lastError: s.lastError ?? run.lastError ?? null,
    activeRuns: s.stats.inFlight,
    busy: s.stats.inFlight > 0,
    lastRunActivityAt: a.runAt,
    lastInboundAt: a.inboundAt,
    lastOutboundAt: a.outboundAt,
    mode: run.account.addonConfig.delivery ?? 'core',
    baseUrl: s.servers,
    pier: {
      state: s.state,
      server: s.servers,
      serverName: s.serverName ?? null,
      serverVersion: s.serverVersion ?? null,
      workerId: s.workerId,
      wallet: s.walletAddress ?? null,
      // The key its results are signed with: what requesters pin (trustedWorkers).
      workerKey: s.workerKey ?? null,
      identityFile: s.identityFile ?? null,
      // What a job turn is offered and where it runs: `none`, `exec, read, write in a docker
      // sandbox (agent pier-jobs, image …)`, `… ON THE HOST (unsafeHostTools)`.
      ...(run.jobAgent ? { jobTools: describeJobTools(run.jobAgent.policy, run.jobAgent.sandbox) } : {}),
      subject: s.subject,
      queueGroup: s.queueGroup,
      uptimeMs: s.uptimeMs ?? null,
      inFlight: s.stats.inFlight,
      received: s.stats.received,
      completed: s.stats.completed,
      failed: s.stats.failed,
      rejected: s.stats.rejected,
      timedOut: s.stats.timedOut,
      disconnects: s.stats.disconnects,
      reconnects: s.stats.reconnects,
      earned: s.stats.earned,
      spent: s.stats.spent,
      tokensIn: s.stats.tokensIn,
      tokensOut: s.stats.tokensOut,
      // The UTC day's use against the daily budget (maxDailySpend, maxDailyTokens: 0 is none).
      // Its jobs and earnings, each once, as the ledger counts them.
      today: s.today
        ? {
            day: s.today.day,
            jobs: s.today.jobs,
            completed: s.today.completed,
            earned: s.today.earned,
            spent: s.today.spent,
            margin: s.today.margin,
            tokens: s.today.tokens,
            undelivered: s.today.undelivered,
            reruns: s.today.reruns,
            maxDailySpend: s.today.maxDailySpend,
            maxDailyTokens: s.today.maxDailyTokens,
          }
        : null,
    },
  }
}

/** `status.buildAccountSnapshot`: the published runtime, never the resolved account's secrets. */
export function buildAccountSnapshot({ account, runtime, probe }) {
  return {
    ...runtime,
    accountId: account.accountId,
    ...(account.name ? { name: account.name } : {}),
    enabled: account.enabled,
    configured: account.configured,
    credentialSource: account.credentialSource,
    ...(probe !== undefined ? { probe } : {}),
  }
}

/**
 * `status.probeAccount` (`channels status --probe`): the running worker's live status when
 * this gateway runs the account, else one connection of a client of its own.
 */
export async function probeAccount({ account, timeoutMs }) {
  const run = runningAccounts.get(account.accountId)
  const s = run?.status()
  if (s) {
    const ok = s.state === 'connected'
    return { ok, state: s.state, server: s.servers, serverName: s.serverName ?? null, inFlight: s.stats.inFlight, ...(ok ? {} : { error: s.lastError ?? null }) }
  }
  const started = Date.now()
  let client
  try {
    client = new addon.PierClient({ ...account.addonConfig, connectTimeoutMs: Math.min(timeoutMs ?? 5000, 5000), maxConnectAttempts: 1 })
    const st = await client.serverStatus()
    return { ok: true, state: st.state, server: redactSecrets(st.servers, account.addonConfig), serverName: st.serverName, rttMs: st.rttMs, elapsedMs: Date.now() - started }
  } catch (error) {
    return { ok: false, error: redactSecrets(error.message, account.addonConfig), elapsedMs: Date.now() - started }
  } finally {
    await client?.close().catch(() => {})
  }
}

/**
 * A blocked account's error as status shows it: the cause and what to do about it, with
 * commands that exist (the account restarts by itself when its config changes, so fixing the
 * config is the whole fix).
 */
export function blockedError(error) {
  return /\bFix: /.test(error) ? `${error}; then ${RESTART}` : `${error}; fix: ${blockedFix(error)}`
}

const RESTART = 'the account restarts when channels.pier changes (or: openclaw gateway restart)'

function blockedFix(lastError) {
  const restart = RESTART
  if (/^PIER_HOST_TOOLS/.test(lastError)) return `remove the host tools from channels.pier toolsAllow, or sandbox the job agent; ${restart}`
  return `fix channels.pier (openclaw config set channels.pier.<key> <value>); ${restart}`
}

/** A worker that can be paid but names nobody to pay: jobs earn for an anonymous worker. */
function anonymousEarner(pier) {
  return Boolean(pier) && (!pier.workerId || pier.workerId === ANONYMOUS_WORKER) && !pier.wallet
}

export const IDENTITY_FIX = `set who is paid: openclaw config set channels.pier.walletAddress '"0x…"' and openclaw config set channels.pier.workerId <name>`

/**
 * `status.collectStatusIssues`: what is wrong with an account, with what to do about it.
 * OpenClaw adds a generic issue of its own for a blocked or long-disconnected account; this
 * one names the cause and a fix with Pier's commands.
 */
export function collectStatusIssues(accounts) {
  const issues = []
  for (const a of accounts) {
    if (a.enabled === false || a.configured === false) continue
    const issue = (kind, message, fix) => issues.push({ channel: 'pier', accountId: a.accountId, kind, message, fix })
    // A blocked account has OpenClaw's own issue, whose message is the account's lastError:
    // snapshotOf puts the fix there (blockedError), so the warning is printed once.
    if (a.lifecycle === 'blocked') {
      // nothing of its own
    } else if (a.running && a.pier?.state === 'recovering') {
      // Connected to NATS, but JetStream does not answer: an election, or a node restarting.
      issue('runtime', `not taking jobs, JetStream is not answering: ${a.lastError ?? 'no reason given'}`, 'the worker resumes by itself after a leader election; if it lasts, check the JetStream cluster (nats server report jetstream) and streamReplicas')
    } else if (a.running && a.connected === false && a.lastError && a.pier?.state !== 'reloading') {
      const attempts = a.reconnectAttempts ? ` (${a.reconnectAttempts} attempts)` : ''
      issue('runtime', `not connected, retrying${attempts}: ${a.lastError}`, `check that the NATS server in channels.pier natsUrl (${a.pier?.server ?? a.baseUrl ?? '?'}) is up and reachable from this host; the worker reconnects by itself`)
    }
    const today = a.pier?.today
    if (a.running && today && ((today.maxDailySpend > 0 && today.spent >= today.maxDailySpend) || (today.maxDailyTokens > 0 && today.tokens >= today.maxDailyTokens))) {
      const used = [today.maxDailySpend > 0 ? `spent ${today.spent} of maxDailySpend ${today.maxDailySpend}` : null, today.maxDailyTokens > 0 ? `tokens ${today.tokens} of maxDailyTokens ${today.maxDailyTokens}` : null].filter(Boolean).join(', ')
      issue('runtime', `daily budget reached (${used}): jobs are answered BUDGET_EXHAUSTED until 00:00 UTC`, `raise channels.pier maxDailySpend / maxDailyTokens if you mean to spend more today`)
    }
    if (a.running && anonymousEarner(a.pier)) {
      issue('config', `paid jobs with nobody to pay: worker ${a.pier.workerId || ANONYMOUS_WORKER} has no workerId and no walletAddress${a.pier.earned ? ` (earned ${a.pier.earned} so far)` : ''}`, IDENTITY_FIX)
    }
  }
  return issues
}
