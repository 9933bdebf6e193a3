// Stored job sessions, bounded. Job turns are detached by default (agent-turn.mjs) and store
// nothing; with keepSessions > 0 each job runs in a stored session of its own, deleted once its
// turn has ended, keeping the newest `keep` for debugging. Sessions an earlier gateway run left
// behind go the same way.
//
// A job session is keyed by a fresh random token, never by the job's id: ids are the
// requester's choice, and a later job (anyone's) must never resume an earlier one's transcript.
// Tokens all have one length, so no other session's key starts with `pier:<token>`, and one
// cleanupSessionLifecycleArtifacts call with that prefix removes exactly that session, its row
// and its transcript, in ~10 ms (bench/RESULTS.md, "Ways to run a job turn and clean up"),
// without keeping a stranger's task in an archive. OpenClaw's deleteSessionEntry with
// archiveTranscript costs 0.3-0.9 s of CPU a call in 2026.9.6 (an archive Worker thread each):
// deferred to gaps between jobs, those calls piled up behind busy workers. It is kept for keys of
// another shape (earlier versions keyed sessions by job id, which may be a prefix of another's)
// and for a store whose bulk cleanup refuses some row.

import { randomBytes } from 'node:crypto'

let storeRuntime
/** OpenClaw's session store API, from the host (`openclaw/plugin-sdk/session-store-runtime`). */
const hostStore = () => (storeRuntime ??= import('openclaw/plugin-sdk/session-store-runtime'))
const hostDeleteSessionEntry = async (params) => (await hostStore()).deleteSessionEntry(params)
const hostCleanupSession = async (params) => (await hostStore()).cleanupSessionLifecycleArtifacts(params)
const hostListSessionEntries = async (params) => (await hostStore()).listSessionEntries(params)

/** Every job session's key starts with this. */
const jobSessionPrefix = (agentId) => `agent:${agentId}:pier:`

const TOKEN_BYTES = 12
const TOKEN = new RegExp(`:pier:([0-9a-f]{${TOKEN_BYTES * 2}})$`)
const AGENT = /^agent:([^:]+):/

/**
 * A new job session's id and key: a random token, the key lower case as OpenClaw keeps keys
 * (a key as written would make the sandbox prepared for it another than the turn's).
 */
export function newJobSession(agentId) {
  const token = randomBytes(TOKEN_BYTES).toString('hex')
  return { sessionId: `pier-${token}`, sessionKey: `${jobSessionPrefix(agentId)}${token}`.toLowerCase() }
}

// A gateway that stopped without draining (a crash, a kill) leaves up to keep + in-flight job
// sessions behind. Those are this agent's pier sessions last updated before this process
// started, so none of them can be a job in flight here. Once per agent and process: accounts
// that share an agent share its sessions.
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

/**
 * Keeps the newest `keep` finished job sessions and deletes the others, one at a time in the
 * order they finished, as soon as they are due.
 */
export function createSessionPruner({ agentId: pruneAgentId, keep = 0, log, deleteSession = hostDeleteSessionEntry, cleanupSession = hostCleanupSession }) {
  const finished = []
  let queue = Promise.resolve()
  let deleted = 0
  const removeOne = async (sessionKey) => {
    // The session's own agent: the account's job agent may have changed since it ran.
    const agentId = AGENT.exec(sessionKey)?.[1] ?? pruneAgentId
    const token = TOKEN.exec(sessionKey)?.[1]
    if (token) {
      try {
        await cleanupSession({
          agentId,
          sessionKeySegmentPrefix: `pier:${token}`,
          transcriptContentMarker: `pier-${token}`,
          orphanTranscriptMinAgeMs: 0,
          archiveRemovedEntryTranscripts: false,
        })
        deleted++
        return
      } catch (error) {
        log?.warn?.(`job session ${sessionKey}: the store's cleanup refused it (${error?.message ?? error}); deleting it on its own`)
      }
    }
    try {
      await deleteSession({ agentId, sessionKey, archiveTranscript: true })
      deleted++
    } catch (error) {
      log?.warn?.(`could not delete job session ${sessionKey}: ${error?.message ?? error}`)
    }
  }
  const schedule = () => {
    while (finished.length > keep) {
      const key = finished.shift()
      queue = queue.then(() => removeOne(key))
    }
    return queue
  }
  return {
    /** A job's turn has ended: the oldest session past `keep` is deleted now. */
    finished(sessionKey) {
      finished.push(sessionKey)
      return schedule()
    },
    /** Sessions an earlier process left (oldest first): older than any job of this one. */
    adopt(sessionKeys) {
      finished.unshift(...sessionKeys)
      return schedule()
    },
    /** Resolves once every deletion due has run (drain). */
    idle: schedule,
    get kept() {
      return [...finished]
    },
    get deleted() {
      return deleted
    },
  }
}
