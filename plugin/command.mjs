// The /pier command, written for a person reading a chat 80 columns wide: the fleet table of
// this gateway's running accounts (the one `pier-connector workers` prints), then one block
// per account, with today's ledger line (the counters restart with the worker; the ledger
// does not). A running worker counts its day as its ledger does; for the others the ledger is
// read in the addon, off the gateway's event loop.
import fleet from '../lib/fleet-table.js'
import { runningAccounts } from './accounts.mjs'
import { listAccountIds, resolveAccount } from './config.mjs'
import { ledgerFileOf, ledgerToday } from './ledger.mjs'
import { describeJobTools } from './job-policy.mjs'

export function formatUptime(ms) {
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0) return 'not running'
  return fleet.humanDuration(ms)
}

/** A running account's row of the fleet table: its server URL, not the server's id. */
const fleetRow = (status) => ({ worker: status.workerId, server: status.servers, uptimeMs: status.uptimeMs, stats: status.stats })

const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`
const { amount } = fleet

/** The server's name and version, unless its name is only its 56-character id. */
function serverAbout(status) {
  const name = status.serverName && !/^N[A-Z2-7]{55}$/.test(status.serverName) ? status.serverName : null
  const about = [name, status.serverVersion ? `v${status.serverVersion}` : null].filter(Boolean).join(' ')
  return about ? ` (${about})` : ''
}

/** Today's ledger line (and a line of its reruns and undelivered answers, when any), or why there is none. */
function formatToday(today) {
  if (!today) return '  today: no ledger (OpenClaw did not say where its state dir is)'
  if (today.error) return `  today: ledger unreadable: ${today.error}`
  const margin = today.margin ?? (today.earned ?? 0) - (today.spent ?? 0)
  const lines = [`  today (UTC): ${plural(today.jobs ?? 0, 'job')}, earned ${amount(today.earned ?? 0)}, spent ${amount(today.spent ?? 0)}, margin ${amount(margin)}`]
  // Runs that spent without counting as another job: JetStream redeliveries, lost answers.
  const runs = [today.reruns ? plural(today.reruns, 'rerun') : null, today.undelivered ? `${today.undelivered} undelivered` : null].filter(Boolean)
  if (runs.length) lines.push(`  runs: ${runs.join(', ')} (spent; each job counted once)`)
  if (today.unreadableLines) lines.push(`  ledger: ${plural(today.unreadableLines, 'unreadable line')} skipped`)
  return lines.join('\n')
}

/**
 * The day's use against the daily budget, as lines: `today: spent X of maxDailySpend Y, tokens
 * T of maxDailyTokens Z` (each part only when that cap is set), and whether jobs are refused
 * for it; none without a budget. `used`: `{ spent, tokens }` (the running worker's own count,
 * `status.today`, else the ledger's day); `budget`: `{ maxDailySpend, maxDailyTokens }`.
 */
function formatBudget(used, budget = {}) {
  const spend = budget.maxDailySpend > 0 ? budget.maxDailySpend : 0
  const tokens = budget.maxDailyTokens > 0 ? budget.maxDailyTokens : 0
  if (!spend && !tokens) return []
  if (!used || used.error) return [`  today: budget ${[spend && `maxDailySpend ${amount(spend)}`, tokens && `maxDailyTokens ${tokens}`].filter(Boolean).join(', ')} (use unknown)`]
  const parts = []
  if (spend) parts.push(`spent ${amount(used.spent ?? 0)} of maxDailySpend ${amount(spend)}`)
  if (tokens) parts.push(`tokens ${used.tokens ?? 0} of maxDailyTokens ${tokens}`)
  const reached = (spend && (used.spent ?? 0) >= spend) || (tokens && (used.tokens ?? 0) >= tokens)
  return [`  today: ${parts.join(', ')}`, ...(reached ? ['  budget reached: new jobs get BUDGET_EXHAUSTED until 00:00 UTC'] : [])]
}

/** The account's daily budget: the running worker's, else its config's. */
const budgetOf = (status, config = {}) => ({
  maxDailySpend: status?.today?.maxDailySpend ?? config.maxDailySpend ?? 0,
  maxDailyTokens: status?.today?.maxDailyTokens ?? config.maxDailyTokens ?? 0,
})

/** One account's block from its worker status (null when it does not run here). */
export function formatAccount(accountId, status, { lastError, reason, today, config, jobTools } = {}) {
  const head = `account ${accountId}`
  const budget = formatBudget(status?.today ?? today, budgetOf(status, config))
  if (!status) {
    return [head, `  connection: not running${reason ? ` (${reason})` : ''}`, ...(today ? [formatToday(today)] : []), ...budget, `  last error: ${lastError ?? 'none'}`].join('\n')
  }
  const s = status.stats
  return [
    head,
    `  connection: ${status.state}, server ${status.servers}${serverAbout(status)}`,
    `  worker: ${status.workerId}${status.walletAddress ? `, wallet ${status.walletAddress}` : ''}, up to ${plural(status.maxConcurrentJobs, 'job')} at once`,
    // The key its results are signed with: what requesters pin (trustedWorkers).
    `  signs with key ${status.workerKey ?? '(known once it starts)'}`,
    ...(status.identityFile ? [`  key file: ${status.identityFile}`] : status.workerKey ? ['  key file: none (signingSeed)'] : []),
    `  takes jobs on ${status.subject} (queue ${status.queueGroup}), publishes to ${status.publishSubject}`,
    ...(jobTools ? [`  job tools: ${jobTools}`] : []),
    `  uptime: ${formatUptime(status.uptimeMs)}; the counts below start again with the worker`,
    `  jobs: ${s.received} received, ${s.completed} completed, ${s.failed} failed, ${s.timedOut} timed out, ${s.inFlight} running`,
    `  refused: ${s.rejected} (busy, stopping, price, sender's share, budget)`,
    `  money: earned ${amount(s.earned)} (meta.price), spent ${amount(s.spent)} (model cost)`,
    `  tokens: ${s.tokensIn} in, ${s.tokensOut} out${s.cacheReadTokens || s.cacheWriteTokens ? `, ${s.cacheReadTokens} cache read, ${s.cacheWriteTokens} cache write` : ''}`,
    ...(today !== undefined ? [formatToday(today)] : []),
    ...budget,
    `  reconnects: ${s.reconnects} (${plural(s.disconnects, 'disconnect')})`,
    `  last error: ${status.lastError ?? lastError ?? 'none'}`,
  ].join('\n')
}

/**
 * Today's line of an account: its running worker's own count of the day (the ledger's rule, from
 * the ledger's lines when it started), else the ledger file read off the event loop; null
 * without a ledger file, undefined when not asked (`file` undefined).
 */
async function todayOf(file, status) {
  if (file === undefined) return undefined
  if (!file) return null
  if (status?.today && status.today.countedFrom === 'ledger') return status.today
  return ledgerToday(file)
}

/**
 * The whole /pier text. `api` (optional) tells where each account's ledger is; without it
 * the blocks have no ledger line.
 */
export async function formatStatus(cfg, api) {
  const accounts = await Promise.all(
    listAccountIds(cfg).map(async (id) => {
      const account = resolveAccount(cfg, id)
      const run = runningAccounts.get(id)
      const reason = !account.configured ? 'not configured: openclaw channels add --channel pier' : !account.enabled ? 'disabled' : undefined
      const file = api && account.configured ? ledgerFileOf(api, run?.account ?? account) : undefined
      const config = (run?.account ?? account).addonConfig
      const status = run?.status() ?? null
      const jobTools = run?.jobAgent && describeJobTools(run.jobAgent.policy, run.jobAgent.sandbox)
      return { id, status, lastError: run?.lastError, reason, config, jobTools, today: await todayOf(file, status) }
    }),
  )
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
    handler: async () => {
      try {
        return { text: await formatStatus(api.runtime?.config?.current?.() ?? api.config ?? {}, api) }
      } catch (error) {
        return { text: `Pier connector\nstatus unavailable: ${error.message}` }
      }
    },
  }
}
