// Job turns in progress: what the job guard (job-guard.mjs) checks a tool call against, and
// the answer slot a `pier` channel message fills. Only a job's own turn can answer it through
// the channel: the message target is the job's reply handle, a random token that only its own
// turn is told (sendText is not told which session sends, so the target itself must be the
// proof); another job's turn or the operator's chat knows at most the job id.
//
// Kept on globalThis, as the running accounts are (accounts.mjs): OpenClaw may evaluate the
// plugin's modules again (a reload) while turns started by the earlier copy still run, and the
// guard and the channel of the new copy must still know them as job turns.
import { randomBytes } from 'node:crypto'

const KEY = Symbol.for('pier-connector.jobTurns')
/** Open turns by their reply handle. */
const byHandle = (globalThis[KEY] ??= new Map())

/**
 * Opens a job turn: `answer(text)` settles the job with that text. `allowed` is the set of
 * tool names the turn was offered. Returns the turn record with its `handle`. Turns are told
 * apart by their run id and session key, both the worker's own: a job's id is the requester's
 * choice, and two requesters may pick the same one.
 */
export function openJobTurn({ jobId, runId, sessionKey, allowed, answer }) {
  const handle = `pier-reply-${randomBytes(12).toString('base64url')}`
  const turn = { jobId, runId, sessionKey, allowed, answer, handle }
  byHandle.set(handle, turn)
  return turn
}

export function closeJobTurn(turn) {
  byHandle.delete(turn.handle)
}

/** The job turn a tool call comes from (by its run id, else its session key), or undefined. */
export function jobTurnOf(ctx) {
  if (!ctx) return undefined
  for (const turn of byHandle.values()) {
    if ((ctx.runId && ctx.runId === turn.runId) || (ctx.sessionKey && ctx.sessionKey === turn.sessionKey)) return turn
  }
  return undefined
}

/** The open job turn a channel target (`<handle>` or `pier:<handle>`) names, or undefined. */
export function jobTurnForTarget(target) {
  return byHandle.get(String(target ?? '').trim().replace(/^pier:/, ''))
}
