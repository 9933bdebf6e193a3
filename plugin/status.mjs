// The channel's status surface: what `openclaw channels status [--probe] [--json]`,
// `openclaw status` and the health monitor read for each Pier account. The account lifecycle
// publishes `snapshotOf` with ctx.setStatus; these hooks shape it for the CLI.
import { runningAccounts } from './accounts.mjs'
import { PierClient } from './addon.mjs'
import { redactSecrets } from './config.mjs'

/** The standard account snapshot fields plus a `pier` block, from a worker status. */
export function snapshotOf(run, s) {
  const a = run.activity
  if (!s) return { accountId: run.accountId, running: false, lastError: run.lastError ?? null }
  const connected = s.state === 'connected'
  return {
    accountId: run.accountId,
    running: s.state !== 'stopped' || Boolean(run.worker?.running),
    connected,
    // Until the first connection the account is starting; after it, a lost connection is
    // recovering (the worker reconnects by itself).
    lifecycle: connected ? 'ready' : s.state === 'connecting' ? (a.connectedAt ? 'recovering' : 'starting') : undefined,
    lastConnectedAt: a.connectedAt,
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
    client = new PierClient({ ...account.addonConfig, connectTimeoutMs: Math.min(timeoutMs ?? 5000, 5000), maxConnectAttempts: 1 })
    const st = await client.serverStatus()
    return { ok: true, state: st.state, server: redactSecrets(st.servers, account.addonConfig), serverName: st.serverName, rttMs: st.rttMs, elapsedMs: Date.now() - started }
  } catch (error) {
    return { ok: false, error: redactSecrets(error.message, account.addonConfig), elapsedMs: Date.now() - started }
  } finally {
    await client?.close().catch(() => {})
  }
}

/**
 * What to do about a blocked account, with commands that exist: the account restarts by itself
 * when its config changes (a hot reload), so fixing the config is the whole fix.
 */
function blockedFix(lastError) {
  const restart = 'the account restarts when channels.pier changes (or: openclaw gateway restart)'
  if (/^PIER_HOST_TOOLS/.test(lastError)) return `remove the host tools from channels.pier toolsAllow, or sandbox the job agent; ${restart}`
  return `fix channels.pier (openclaw config set channels.pier.<key> <value>); ${restart}`
}

/** `status.collectStatusIssues`: a connection problem, with what to do about it. */
export function collectStatusIssues(accounts) {
  const issues = []
  for (const a of accounts) {
    if (a.enabled === false || a.configured === false) continue
    if (a.lifecycle === 'blocked' && a.lastError) {
      issues.push({ channel: 'pier', accountId: a.accountId, kind: /AUTH|authoriz/i.test(a.lastError) ? 'auth' : 'config', message: a.lastError, fix: blockedFix(a.lastError) })
    } else if (a.running && a.connected === false && a.lastError) {
      issues.push({ channel: 'pier', accountId: a.accountId, kind: 'runtime', message: `not connected, retrying: ${a.lastError}`, fix: 'check that the NATS server is reachable (natsUrl)' })
    }
  }
  return issues
}
