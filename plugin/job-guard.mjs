// A before_tool_call hook that keeps job turns to what they were offered, and the pier channel
// to job turns. The turn's toolsAllow already decides what the model sees, and a job's reply
// handle decides who can answer it (jobs.mjs); this checks every call again (register.mjs
// registers the hook in every registration mode, so OpenClaw runs it for chat turns too, as
// e2e/economics.test.mjs shows, not only for /tools/invoke):
// - a job turn may call only the tools it was offered, never pier_publish (it spends the
//   operator's money), and `message` only to send on channel pier to its own job;
// - no other session (another job's turn, the operator's chat) may send on channel pier.
import { jobTurnOf } from './jobs.mjs'
import { CHANNEL_ID } from './config.mjs'
import { MESSAGE_TOOL, NEVER_FOR_JOBS, normalizeToolName } from './job-policy.mjs'

const block = (blockReason) => ({ block: true, blockReason })

/** The channel and target of a message tool call, as its parameters name them. */
function messageRoute(params = {}) {
  const channel = typeof params.channel === 'string' ? params.channel.trim().toLowerCase() : undefined
  const raw = params.target ?? params.to ?? params.channelId
  const target = typeof raw === 'string' ? raw.trim().replace(/^pier:/, '') : undefined
  const action = typeof params.action === 'string' ? params.action : 'send'
  return { channel, target, action }
}

export function createJobToolGuard() {
  return (event, ctx) => {
    const tool = normalizeToolName(event?.toolName)
    const turn = jobTurnOf({ runId: event?.runId ?? ctx?.runId, sessionKey: ctx?.sessionKey })
    if (turn) {
      if (NEVER_FOR_JOBS.has(tool)) return block(`${tool} is never available to a Pier job`)
      if (!turn.allowed.has(tool)) return block(`${tool} was not offered to this Pier job (channels.pier.toolsAllow)`)
      if (tool !== MESSAGE_TOOL) return undefined
      const { channel, target, action } = messageRoute(event.params)
      if (action !== 'send' || (channel && channel !== CHANNEL_ID) || target !== turn.handle) {
        return block(`a Pier job's turn may only send its answer on channel ${CHANNEL_ID} to its own job (target ${turn.handle})`)
      }
      return undefined
    }
    if (tool === MESSAGE_TOOL && messageRoute(event?.params).channel === CHANNEL_ID) {
      return block(`channel ${CHANNEL_ID} carries only a Pier job's answer, sent by that job's own turn`)
    }
    return undefined
  }
}
