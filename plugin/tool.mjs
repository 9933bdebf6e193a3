// Agent tool pier_publish: request/reply to publishSubject, over the default account's worker
// connection when it runs, else over a client of its own. It can spend money (a task with
// meta.price), so it is optional (an agent gets it only when allowed in tools.allow), refuses
// a price above maxPublishPrice before anything is sent, and asks for approval when paid
// (approval.mjs). Every failure is `{ ok: false, error: { code, message } }`. It asks the worker
// for progress (protocol v1.1): keep-alives make a silent worker's job lost after 3 of its
// intervals instead of only after the fixed timeoutMs, the answer's text as it is written goes
// to the host's onUpdate, and the host's abort of the tool call cancels the job.
import addon from '../load-addon.js'
import { runningAccounts } from './accounts.mjs'
import { defaultAccountId, resolveAccount, redactSecrets } from './config.mjs'
import { takeApproval } from './approved-calls.mjs'
import { accountAddonConfig } from './identity.mjs'

export const PUBLISH_TOOL = 'pier_publish'

const parameters = {
  type: 'object',
  additionalProperties: false,
  properties: {
    task: { type: 'string', description: 'The task or prompt to publish to the Pier marketplace' },
    systemPrompt: { type: 'string', description: 'Optional system prompt for the worker that takes the task' },
    timeoutMs: { type: 'number', description: 'How long the task may take, in milliseconds (default 60000)' },
    meta: { type: 'object', description: 'Optional metadata, e.g. { "price": 50 } (a price is paid, and capped by maxPublishPrice)' },
  },
  required: ['task'],
}

const textResult = (value) => ({ content: [{ type: 'text', text: JSON.stringify(value) }], details: value })
export const failure = (code, message) => textResult({ ok: false, error: { code, message } })

/** The task's price: 0 when none, NaN when it is not a number. */
export function priceOf(params) {
  const price = params?.meta?.price
  if (price === undefined || price === null) return 0
  const n = typeof price === 'string' && price.trim() !== '' ? Number(price) : price
  return typeof n === 'number' && Number.isFinite(n) && n >= 0 ? n : NaN
}

/** Why a publish must not be sent, as `{ code, message }`, or null. */
export function priceRefusal(params, maxPublishPrice) {
  const price = priceOf(params)
  if (Number.isNaN(price)) return { code: 'PIER_INVALID_TASK', message: 'pier_publish refused: meta.price must be a number of at least 0' }
  if (price > maxPublishPrice) {
    return {
      code: 'PIER_PRICE_CAP',
      message: `pier_publish refused: meta.price ${price} is above maxPublishPrice ${maxPublishPrice}${maxPublishPrice === 0 ? ' (only unpaid tasks are allowed; raise channels.pier.maxPublishPrice to publish paid ones)' : ''}`,
    }
  }
  return null
}

/**
 * What a requester should do about a worker's refusal, for the codes a model can act on:
 * PRICE_TOO_LOW means the worker wants a higher meta.price, which this account may or may not
 * be allowed to pay.
 */
export function replyHint(reply, { maxPublishPrice, price }) {
  if (reply?.ok !== false || reply?.error?.code !== 'PRICE_TOO_LOW') return undefined
  // This worker's message names its floor ("at least 5"); another implementation's may not.
  const floor = Number(/at least (\d+(?:\.\d+)?)/.exec(String(reply.error.message ?? ''))?.[1])
  const refused = `The worker refused the task: its meta.price (${price}) is below the minimum that worker takes${Number.isFinite(floor) ? ` (${floor})` : ''}. `
  if (Number.isFinite(floor) && floor <= maxPublishPrice) {
    return `${refused}You may publish it again with meta.price ${floor} (within this account's maxPublishPrice of ${maxPublishPrice}) if the task is worth that; other workers may take it for less.`
  }
  if (!Number.isFinite(floor) && maxPublishPrice > price) {
    return `${refused}You may publish it again with a higher meta.price, up to this account's maxPublishPrice of ${maxPublishPrice}, if the task is worth that; other workers may take it for less.`
  }
  return `${refused}This account may not pay that much (maxPublishPrice is ${maxPublishPrice}): ask the operator to raise channels.pier.maxPublishPrice, or try again later, when another worker may take it.`
}

/** A paid task is sent only when a person approved this call (approval.mjs). */
function approvalRefusal(toolCallId, params) {
  const price = priceOf(params)
  if (!(price > 0) || takeApproval(toolCallId, params)) return null
  return {
    code: 'PIER_APPROVAL_UNAVAILABLE',
    message: `pier_publish refused: a paid task (price ${price}) needs a person's approval, and no approval route reaches one from this call (an agent turn in a chat or the Control UI, or approvals.plugin forwarding, can ask)`,
  }
}

/** The default account as configured right now (the config may have been reloaded). */
export function publishAccount(api) {
  const cfg = api.runtime?.config?.current?.() ?? api.config ?? {}
  return resolveAccount(cfg, defaultAccountId(cfg))
}

/**
 * The publish options that ask for progress: the host's AbortSignal cancels the job, and the
 * answer's text so far goes to `onUpdate` as a partial tool result.
 */
function progressOptions(signal, onUpdate) {
  let text = ''
  return {
    progress: true,
    ...(signal instanceof AbortSignal ? { signal } : {}),
    ...(typeof onUpdate === 'function'
      ? {
          onProgress: (p) => {
            if (p?.state !== 'partial' || typeof p.text !== 'string') return
            text += p.text
            try {
              onUpdate({ content: [{ type: 'text', text }], details: { progress: { seq: p.seq, elapsedMs: p.elapsedMs } } })
            } catch {}
          },
        }
      : {}),
  }
}

export function createPublishTool(api, log) {
  let client = null
  let clientConfig = null
  const publisher = (account) => {
    const run = runningAccounts.get(account.accountId)
    if (run?.worker?.running) return run.worker
    // Signed with the account's own key (its signingSeed, else its identity file): the key
    // the account's worker signs with too.
    const config = accountAddonConfig(api, account)
    const key = JSON.stringify(config)
    if (client && clientConfig !== key) {
      client.close().catch(() => {})
      client = null
    }
    clientConfig = key
    return (client ??= new addon.PierClient(config, { logger: (level, m) => log.addon(level, redactSecrets(m, account.addonConfig)) }))
  }
  return {
    name: PUBLISH_TOOL,
    label: 'Publish to Pier',
    description:
      'Publish a task to the Pier job marketplace and wait for a worker to answer it. ' +
      'Returns the worker reply: { ok: true, result } or { ok: false, error: { code, message } }. ' +
      'Error PRICE_TOO_LOW: the worker asks a higher meta.price than offered (see hint).',
    parameters,
    async execute(toolCallId, params, signal, onUpdate) {
      const account = publishAccount(api)
      const refusal = priceRefusal(params, account.maxPublishPrice) ?? approvalRefusal(toolCallId, params)
      if (refusal) {
        log.warn(refusal.message)
        return failure(refusal.code, refusal.message)
      }
      const { task, systemPrompt, timeoutMs, meta } = params ?? {}
      try {
        const reply = await publisher(account).publish(String(task ?? ''), { systemPrompt, timeoutMs, meta, ...progressOptions(signal, onUpdate) })
        const hint = replyHint(reply, { maxPublishPrice: account.maxPublishPrice, price: priceOf(params) })
        return textResult(hint ? { ...reply, hint } : reply)
      } catch (error) {
        const message = redactSecrets(`pier_publish failed: ${error?.message ?? error}`, account.addonConfig)
        log.warn(message)
        // The addon's errors carry their stable code as a property (PIER_TIMEOUT, ...).
        const code = typeof error?.code === 'string' && error.code.startsWith('PIER_') ? error.code : 'PIER_REQUEST'
        return failure(code, message)
      }
    },
    async close() {
      await client?.close()
      client = null
    },
  }
}
