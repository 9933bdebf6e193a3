// Each account's ledger: one JSON line per run of a job, written by the addon at the run's end
// (ledgerFile). Under OpenClaw it is a plugin-owned file under the state dir unless the operator
// names one; `/pier` shows today's line (the running worker's own count, else read from the file
// off the event loop).
import { join } from 'node:path'
import addon from '../load-addon.js'

/** OpenClaw's state dir, or null when the host does not say. */
export function stateDirOf(api, env = process.env) {
  return api?.runtime?.state?.resolveStateDir?.(env) ?? env.OPENCLAW_STATE_DIR ?? null
}

/** The account's ledger file: its ledgerFile, else `<stateDir>/pier/ledger/<account>.jsonl`. */
export function ledgerFileOf(api, account) {
  const named = account?.addonConfig?.ledgerFile
  if (typeof named === 'string' && named) return named
  const stateDir = stateDirOf(api)
  if (!stateDir) return null
  return join(stateDir, 'pier', 'ledger', `${String(account.accountId).replace(/[^A-Za-z0-9_-]/g, '_')}.jsonl`)
}

/** The addon config of an account's worker, with its ledger file. */
export function withLedger(api, account) {
  const ledgerFile = ledgerFileOf(api, account)
  return ledgerFile ? { ...account.addonConfig, ledgerFile } : account.addonConfig
}

/**
 * Today's (UTC) sums of the ledger at `file`, read in the addon off the event loop: `{ day, jobs,
 * completed, undelivered, reruns, earned, spent, margin, tokensIn, tokensOut, tokens,
 * unreadableLines }` (zeros when nothing ran today), or `{ day, error }` when it cannot be read.
 * Yesterday's lines are read too, so a rerun today of a job that ran yesterday counts as the
 * worker counts it.
 */
export async function ledgerToday(file, now = Date.now()) {
  const day = new Date(now).toISOString().slice(0, 10)
  try {
    const { days, unreadableLines } = await addon.ledgerDays(file, now - 86_400_000)
    const found = days.find((d) => d.day === day)
    return { ...(found ?? { day, jobs: 0, completed: 0, undelivered: 0, reruns: 0, earned: 0, spent: 0, margin: 0, tokensIn: 0, tokensOut: 0, tokens: 0 }), unreadableLines }
  } catch (error) {
    return { day, error: error?.message ?? String(error) }
  }
}
