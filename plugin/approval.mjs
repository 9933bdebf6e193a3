// A paid pier_publish waits for a person: OpenClaw's plugin approval flow
// (docs/plugins/plugin-permission-requests.md) through a before_tool_call hook. Unpaid tasks
// need none; a price above maxPublishPrice is refused by the tool itself, with its code.
//
// A call no person can be asked about (POST /tools/invoke or a non-interactive run, with no
// approvals.plugin forwarding) is not sent to OpenClaw's approval flow, which would block it
// with its own `{ type: "tool_call_blocked" }`: it goes on to the tool, which answers with its
// own `{ code: "PIER_APPROVAL_UNAVAILABLE", message }`. The tool sends a paid task only when
// this hook saw that very call approved (allow-once), so a paid task is never sent unapproved.
import { PUBLISH_TOOL, priceOf, publishAccount } from './tool.mjs'
import { recordApproval } from './approved-calls.mjs'

/**
 * Whether a person can be asked about this call, by OpenClaw's rules: an interactive run
 * (trigger "user") with a surface that shows approvals, or plugin approvals forwarded to chat
 * targets (approvals.plugin). Runs of other triggers (cron, heartbeat) have none.
 *
 * The context a plugin's before_tool_call hook gets in 2026.9.6 carries neither the run's
 * trigger nor its turnSourceChannel (agent-tools.before-tool-call: buildToolContext passes
 * toolName, agentId, sessionKey, sessionId, runId, trace, toolCallId, channelId, requester):
 * the run's requester says where it came from (`requester.channel`, the turn's source channel:
 * `webchat` for a chat in the Control UI or the terminal UI). A call with none of these (POST
 * /tools/invoke) has no route. OpenClaw decides the rest (a connected approval surface, a
 * cron run): a request it cannot route is blocked with its own reason, never sent.
 */
export function approvalRoute(ctx, cfg) {
  if (cfg?.approvals?.plugin?.enabled === true) return true
  const trigger = ctx?.trigger?.trim?.()
  if (trigger) return trigger === 'user'
  return Boolean(ctx?.turnSourceChannel?.trim?.() || ctx?.approvalReviewerDeviceId?.trim?.() || ctx?.requester?.channel?.trim?.())
}

export function createPublishApprovalHook(api) {
  return (event, ctx) => {
    if (event?.toolName !== PUBLISH_TOOL) return undefined
    const price = priceOf(event.params)
    if (!(price > 0) || price > publishAccount(api).maxPublishPrice) return undefined
    const cfg = ctx?.config ?? api.runtime?.config?.current?.() ?? api.config
    if (!approvalRoute(ctx, cfg)) return undefined
    const id = event.toolCallId
    return {
      requireApproval: {
        title: `Publish a paid Pier task (price ${price})`,
        description: `The agent wants to publish a task on the Pier marketplace that pays ${price}. Approve only if you expect this spend.`,
        severity: 'warning',
        // Each paid task is its own spend: never "allow always".
        allowedDecisions: ['allow-once', 'deny'],
        scope: { kind: 'payment', amount: String(price), currency: 'PIER', target: 'Pier marketplace' },
        onResolution: (decision) => {
          if (decision === 'allow-once' && id) recordApproval(id, event.params)
        },
      },
    }
  }
}
