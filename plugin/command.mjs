// The /pier command: one block per account, written for a person (uptime as `1h 02m`).
import { runningAccounts } from './accounts.mjs'
import { listAccountIds, resolveAccount } from './config.mjs'

const pad = (n) => String(n).padStart(2, '0')

export function formatUptime(ms) {
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0) return 'not running'
  const s = Math.floor(ms / 1000)
  if (s < 60) return `${s}s`
  const m = Math.floor(s / 60)
  if (m < 60) return `${m}m ${pad(s % 60)}s`
  const h = Math.floor(m / 60)
  if (h < 24) return `${h}h ${pad(m % 60)}m`
  return `${Math.floor(h / 24)}d ${pad(h % 24)}h`
}

const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`

/** One account's block from its worker status (null when it does not run here). */
export function formatAccount(accountId, status, { lastError, reason } = {}) {
  const head = `account ${accountId}`
  if (!status) return [head, `  connection: not running${reason ? ` (${reason})` : ''}`, `  last error: ${lastError ?? 'none'}`].join('\n')
  const s = status.stats
  const server = `${status.servers}${status.serverName ? ` (${`${status.serverName} ${status.serverVersion ?? ''}`.trim()})` : ''}`
  return [
    head,
    `  connection: ${status.state}, server ${server}`,
    `  worker: ${status.workerId}${status.walletAddress ? `, wallet ${status.walletAddress}` : ''}, up to ${plural(status.maxConcurrentJobs, 'job')} at once`,
    `  subjects: jobs ${status.subject}, queue ${status.queueGroup}, publish ${status.publishSubject}`,
    `  uptime: ${formatUptime(status.uptimeMs)}`,
    `  jobs: ${s.received} received, ${s.completed} completed, ${s.failed} failed, ${s.rejected} rejected, ${s.timedOut} timed out, ${s.inFlight} in flight`,
    `  reconnects: ${s.reconnects} (${plural(s.disconnects, 'disconnect')})`,
    `  last error: ${status.lastError ?? lastError ?? 'none'}`,
  ].join('\n')
}

export function formatStatus(cfg) {
  const blocks = listAccountIds(cfg).map((id) => {
    const account = resolveAccount(cfg, id)
    const run = runningAccounts.get(id)
    const reason = !account.configured ? 'not configured: openclaw channels add --channel pier' : !account.enabled ? 'disabled' : undefined
    return formatAccount(id, run?.status() ?? null, { lastError: run?.lastError, reason })
  })
  return ['Pier connector', ...blocks].join('\n')
}

export function createStatusCommand(api) {
  return {
    name: 'pier',
    description: 'Show the Pier connector status',
    acceptsArgs: false,
    handler: () => {
      try {
        return { text: formatStatus(api.runtime?.config?.current?.() ?? api.config ?? {}) }
      } catch (error) {
        return { text: `Pier connector\nstatus unavailable: ${error.message}` }
      }
    },
  }
}
