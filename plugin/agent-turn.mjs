// Runs one Pier job as one real OpenClaw agent turn, in a session of its own.
import { randomUUID } from 'node:crypto'
import { openJobs } from './jobs.mjs'

/** Text of a turn's final reply: visible payload text, else the final assistant text. */
export function replyText(result) {
  const parts = (result?.payloads ?? [])
    .filter((p) => p && typeof p.text === 'string' && !p.isError && !p.isReasoning && !p.isCommentary)
    .map((p) => p.text)
  const text = parts.join('\n').trim()
  return text || String(result?.meta?.finalAssistantVisibleText ?? '').trim()
}

/** Every job session's key starts with this (one session per job, see sessions.mjs). */
export const jobSessionPrefix = (agentId) => `agent:${agentId}:pier:`

export function sessionIdsFor(agentId, jobId) {
  return { sessionId: `pier-${jobId}`, sessionKey: `${jobSessionPrefix(agentId)}${jobId}` }
}

const fail = (code, message) => ({ error: { code, message } })

/**
 * The addon's job handler. `running` maps job ids to AbortControllers so the worker's
 * cancel notice (TIMEOUT, SHUTTING_DOWN) aborts the turn.
 *
 * Without `onTurnSettled` the turn is detached (OpenClaw's `sessionPersistence: 'detached'`,
 * as its own one-shot turns run): the session is in memory only, so no row, transcript or
 * archive is written and nothing is left to delete; a stranger's task never reaches the agent's
 * stored history, and other plugins' agent_end hooks (memory, reviews) do not see it. With
 * `onTurnSettled(sessionKey)` the session is stored (keepSessions, for debugging) and the
 * callback runs once the turn has really ended (also after an abort), when it may be removed.
 * `toolsAllow` (the account's) caps the tools the turn offers the model, as OpenClaw's per-run
 * allowlist: a job is a stranger's task.
 */
export function createAgentTurnHandler(api, agentId, running, { onTurnSettled, toolsAllow } = {}) {
  return async (job) => {
    const agent = api.runtime?.agent
    if (typeof agent?.runEmbeddedAgent !== 'function') {
      return fail('RUNTIME_UNAVAILABLE', 'the OpenClaw agent runtime is not available')
    }
    const cfg = api.runtime.config?.current?.() ?? api.config
    const abort = new AbortController()
    running.set(job.id, abort)
    // A message sent on the `pier` channel to this job id answers it before the turn ends.
    const channelAnswer = new Promise((resolve) => openJobs.set(job.id, { id: job.id, answer: resolve }))
    const started = Date.now()
    const ids = sessionIdsFor(agentId, job.id)
    try {
      const turn = agent.runEmbeddedAgent({
        agentId,
        ...ids,
        runId: randomUUID(),
        workspaceDir: agent.resolveAgentWorkspaceDir(cfg, agentId),
        prompt: job.task,
        ...(job.systemPrompt ? { extraSystemPrompt: job.systemPrompt } : {}),
        timeoutMs: job.timeoutMs,
        abortSignal: abort.signal,
        terminalReplyExpectation: 'required',
        sessionPersistence: onTurnSettled ? 'durable' : 'detached',
        ...(toolsAllow ? { toolsAllow } : {}),
      })
      if (onTurnSettled) {
        const settled = () => onTurnSettled(ids.sessionKey)
        Promise.resolve(turn).then(settled, settled)
      }
      // The turn's rejection is handled here even when the channel answered first, so an
      // aborted turn can never surface as an unhandled rejection in the gateway.
      const answered = await Promise.race([
        turn.then((result) => ({ result }), (error) => ({ error })),
        channelAnswer.then((text) => ({ text })),
      ])
      if (answered.text !== undefined) {
        abort.abort(new Error('answered on the pier channel'))
        return answered.text
      }
      if (answered.error) throw answered.error
      const { result } = answered
      const text = replyText(result)
      if (text) return text
      // A turn cut off by its timeout resolves with no text: that is a TIMEOUT, never an
      // empty result somebody would pay for.
      if (abort.signal.aborted || result?.meta?.aborted || Date.now() - started >= job.timeoutMs - 50) {
        return fail('TIMEOUT', `the agent turn did not finish within ${job.timeoutMs} ms`)
      }
      return fail('EXECUTION_FAILED', 'the agent turn produced no reply')
    } catch (error) {
      return fail('EXECUTION_FAILED', `the agent turn failed: ${error?.message ?? error}`)
    } finally {
      running.delete(job.id)
      openJobs.delete(job.id)
    }
  }
}
