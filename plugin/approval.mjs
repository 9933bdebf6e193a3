// A paid pier_publish waits for a person: OpenClaw's plugin approval flow
// (docs/plugins/plugin-permission-requests.md) through a before_tool_call hook. Unpaid tasks
// need none; a price above maxPublishPrice is refused by the tool itself, with its code.
import { PUBLISH_TOOL, priceOf, publishAccount } from './tool.mjs'

export function createPublishApprovalHook(api) {
  return (event) => {
    if (event?.toolName !== PUBLISH_TOOL) return undefined
    const price = priceOf(event.params)
    if (!(price > 0) || price > publishAccount(api).maxPublishPrice) return undefined
    return {
      requireApproval: {
        title: `Publish a paid Pier task (price ${price})`,
        description: `The agent wants to publish a task on the Pier marketplace that pays ${price}. Approve only if you expect this spend.`,
        severity: 'warning',
        // Each paid task is its own spend: never "allow always".
        allowedDecisions: ['allow-once', 'deny'],
        scope: { kind: 'payment', amount: String(price), currency: 'PIER', target: 'Pier marketplace' },
      },
    }
  }
}
