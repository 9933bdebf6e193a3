// Stored job sessions, bounded. Job turns are detached by default (agent-turn.mjs) and store
// nothing; with keepSessions > 0 each job runs in a stored session of its own, deleted from the
// agent's session store once the job's turn has ended, keeping the newest `keep` for debugging.
// Sessions an earlier gateway run left behind (older versions stored every job) go the same way.
//
// Deletion is OpenClaw's own (deleteSessionEntry with archiveTranscript, as `openclaw sessions
// delete` does): the row and its transcript leave the database, the transcript stays as a
// `.deleted` archive under OpenClaw's retention (session.maintenance.resetArchiveRetention,
// maxDiskBytes). In OpenClaw 2026.9.6 each such call starts an archive Worker thread of its own
// and costs 0.3-0.9 s of CPU on a 2-core machine (bench/gateway.mjs --delete-cost), several
// times an agent turn, and turns running beside it wait for the CPU and the store. Without the
// archive it costs ~30 ms but leaves the transcript and a row needing repair in SQLite. The
// bulk cleanupSessionLifecycleArtifacts is cheap but selects by key prefix, so removing job
// "a" would also remove a kept job "ab": not used.
//
// So deletions wait for a gap: they run one at a time while the account has no job in flight
// (`busy()` false for `idleMs`), and stop as soon as a job comes in. Only when more than
// `maxBacklog` finished sessions are waiting do they run beside jobs, one per finished job, so
// the store never holds more than keep + maxBacklog + in-flight job sessions. Drain deletes
// everything due.

import { jobSessionPrefix } from './agent-turn.mjs'

let storeRuntime
/** OpenClaw's session store API, from the host (`openclaw/plugin-sdk/session-store-runtime`). */
const hostStore = () => (storeRuntime ??= import('openclaw/plugin-sdk/session-store-runtime'))
const hostDeleteSessionEntry = async (params) => (await hostStore()).deleteSessionEntry(params)
const hostListSessionEntries = async (params) => (await hostStore()).listSessionEntries(params)

// A gateway that stopped without draining (a crash, a kill) leaves up to keep + maxBacklog +
// in-flight job sessions behind. Those are this agent's pier sessions last updated before this
// process started, so none of them can be a job in flight here. Once per agent and process:
// accounts that share an agent share its sessions.
const sweptAgents = new Set()

/** Keys of job sessions an earlier gateway process left behind, oldest first. */
export async function leftoverJobSessions({ agentId, listSessions = hostListSessionEntries, since = Date.now() - process.uptime() * 1000 }) {
  if (sweptAgents.has(agentId)) return []
  sweptAgents.add(agentId)
  const prefix = jobSessionPrefix(agentId).toLowerCase()
  const rows = (await listSessions({ agentId, readOnly: true })) ?? []
  const updated = (r) => Number(r.entry?.updatedAt ?? 0)
  return rows
    .filter((r) => typeof r?.sessionKey === 'string' && r.sessionKey.toLowerCase().startsWith(prefix) && updated(r) < since)
    .sort((a, b) => updated(a) - updated(b))
    .map((r) => r.sessionKey)
}

export function createSessionPruner({
  agentId,
  keep = 0,
  log,
  deleteSession = hostDeleteSessionEntry,
  busy = () => false,
  maxBacklog = 64,
  idleMs = 250,
}) {
  const finished = []
  let timer = null
  let pumping = null
  let deleted = 0
  const due = () => finished.length - keep
  const deleteOne = async (key) => {
    try {
      await deleteSession({ agentId, sessionKey: key, archiveTranscript: true })
      deleted++
    } catch (error) {
      log?.warn?.(`could not delete job session ${key}: ${error?.message ?? error}`)
    }
  }
  /** Deletes the oldest due sessions one by one; `all` ignores jobs in flight (drain). */
  const pump = (all = false) =>
    (pumping ??= (async () => {
      while (due() > 0 && (all || due() > maxBacklog || !busy())) await deleteOne(finished.shift())
    })().finally(() => {
      pumping = null
    }))
  const arm = () => {
    clearTimeout(timer)
    timer = setTimeout(() => {
      timer = null
      if (!busy()) pump()
    }, idleMs)
    timer.unref?.()
  }
  const schedule = () => {
    if (due() > maxBacklog) return pump()
    if (due() > 0) arm()
    return pumping ?? Promise.resolve()
  }
  return {
    /** A job's turn has settled: its session goes in the next gap, or now if too many wait. */
    finished(sessionKey) {
      finished.push(sessionKey)
      return schedule()
    },
    /** Sessions an earlier process left (oldest first): older than any job of this one. */
    adopt(sessionKeys) {
      finished.unshift(...sessionKeys)
      return schedule()
    },
    /** Deletes everything due, jobs in flight or not, and resolves when done (drain). */
    async idle() {
      clearTimeout(timer)
      timer = null
      while (pumping) await pumping
      await pump(true)
    },
    get kept() {
      return [...finished]
    },
    get deleted() {
      return deleted
    },
  }
}
