// Job turns in progress: what the job guard (job-guard.mjs) checks a tool call against, and
// the answer slot a `pier` channel message fills. Only a job's own turn can answer it through
// the channel: the message target is the job's reply handle, a random token that only its own
// turn is told (sendText is not told which session sends, so the target itself must be the
// proof); another job's turn or the operator's chat knows at most the job id.
import { randomBytes } from 'node:crypto'

const byJob = new Map()
const byHandle = new Map()

/**
 * Opens a job turn: `answer(text)` settles the job with that text. `allowed` is the set of
 * tool names the turn was offered. Returns the turn record (with its `handle`), or null when a
 * turn with this id is still open (the worker refuses a second job with an id in flight; this
 * is the second lock, across the gateway's accounts).
 */
export function openJobTurn({ jobId, runId, sessionKey, allowed, answer }) {
  if (byJob.has(jobId)) return null
  const handle = `pier-reply-${randomBytes(12).toString('base64url')}`
  const turn = { jobId, runId, sessionKey, allowed, answer, handle }
  byJob.set(jobId, turn)
  byHandle.set(handle, turn)
  return turn
}

export function closeJobTurn(turn) {
  if (byJob.get(turn.jobId) === turn) byJob.delete(turn.jobId)
  byHandle.delete(turn.handle)
}

/** The job turn a tool call comes from (by its run id, else its session key), or undefined. */
export function jobTurnOf(ctx) {
  if (!ctx) return undefined
  for (const turn of byJob.values()) {
    if ((ctx.runId && ctx.runId === turn.runId) || (ctx.sessionKey && ctx.sessionKey === turn.sessionKey)) return turn
  }
  return undefined
}

/** The open job turn a channel target (`<handle>` or `pier:<handle>`) names, or undefined. */
export function jobTurnForTarget(target) {
  return byHandle.get(String(target ?? '').trim().replace(/^pier:/, ''))
}
