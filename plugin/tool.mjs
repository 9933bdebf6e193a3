// Agent tool pier_publish: request/reply to publishSubject, over the worker's connection when
// it runs, else over a client of its own.
import { PierClient } from './addon.mjs'

export const PUBLISH_TOOL = 'pier_publish'

const parameters = {
  type: 'object',
  additionalProperties: false,
  properties: {
    task: { type: 'string', description: 'The task or prompt to publish to the Pier marketplace' },
    systemPrompt: { type: 'string', description: 'Optional system prompt for the worker that takes the task' },
    timeoutMs: { type: 'number', description: 'How long the task may take, in milliseconds (default 60000)' },
    meta: { type: 'object', description: 'Optional metadata, e.g. { "price": 50 }' },
  },
  required: ['task'],
}

const textResult = (value) => ({ content: [{ type: 'text', text: JSON.stringify(value) }], details: value })

export function createPublishTool(runtime, { addonConfig }, log) {
  let client = null
  const publisher = () =>
    runtime.isRunning() ? runtime.getWorker() : (client ??= new PierClient(addonConfig, { logger: log.addon }))
  return {
    name: PUBLISH_TOOL,
    label: 'Publish to Pier',
    description:
      'Publish a task to the Pier job marketplace and wait for a worker to answer it. ' +
      'Returns the worker reply: { ok: true, result } or { ok: false, error: { code, message } }.',
    parameters,
    async execute(_toolCallId, params) {
      const { task, systemPrompt, timeoutMs, meta } = params ?? {}
      try {
        const reply = await publisher().publish(String(task ?? ''), { systemPrompt, timeoutMs, meta })
        return textResult(reply)
      } catch (error) {
        log.warn(`pier_publish failed: ${error.message}`)
        // The addon's errors carry their stable code as a property (PIER_TIMEOUT, ...).
        const code = typeof error?.code === 'string' && error.code.startsWith('PIER_') ? error.code : 'PIER_REQUEST'
        return textResult({ ok: false, error: { code, message: `pier_publish failed: ${error.message}` } })
      }
    },
    async close() {
      await client?.close()
      client = null
    },
  }
}
