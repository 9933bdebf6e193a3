// The /pier command, written for a person: the fleet table of this gateway's running
// accounts (the one `pier-connector workers` prints), then one block per account.
import fleet from '../cli/fleet-table.js'
import { runningAccounts } from './accounts.mjs'
import { listAccountIds, resolveAccount } from './config.mjs'

export function formatUptime(ms) {
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0) return 'not running'
  return fleet.humanDuration(ms)
}

/** A running account's row of the fleet table. */
const fleetRow = (status) => ({ worker: status.workerId, server: status.serverName ?? status.servers, uptimeMs: status.uptimeMs, stats: status.stats })

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
  const accounts = listAccountIds(cfg).map((id) => {
    const account = resolveAccount(cfg, id)
    const run = runningAccounts.get(id)
    const reason = !account.configured ? 'not configured: openclaw channels add --channel pier' : !account.enabled ? 'disabled' : undefined
    return { id, status: run?.status() ?? null, lastError: run?.lastError, reason }
  })
  const live = accounts.filter((a) => a.status)
  // Fenced, so a chat surface shows the table in a fixed-width font.
  const table = live.length ? ['```', fleet.fleetTable(live.map((a) => fleetRow(a.status))), '```'] : []
  const blocks = accounts.map((a) => formatAccount(a.id, a.status, a))
  return ['Pier connector', ...table, ...blocks].join('\n')
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
