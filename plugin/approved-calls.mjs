// Paid publishes a person allowed, between the approval hook (approval.mjs), which records an
// approval, and the tool (tool.mjs), which uses it up: a module of its own so neither imports
// the other.
const APPROVED = Symbol.for('pier-connector.approved-publishes')
/** How long an approval waits for its call: one that never reaches the tool leaves nothing. */
const APPROVAL_TTL_MS = 60_000
/**
 * Paid publishes a person allowed: tool call id -> the parameters shown to them and until when
 * the approval holds. Each is used once, by the call with those very parameters: a call id a
 * model reuses later (some backends number them `call_0`, `call_1`, …) finds none.
 */
export const approvedCalls = (globalThis[APPROVED] ??= new Map())

/** The parameters as one string, keys sorted at every level (the host may rebuild the object). */
const fingerprint = (params) =>
  JSON.stringify(params ?? {}, (_key, value) =>
    value && typeof value === 'object' && !Array.isArray(value)
      ? Object.fromEntries(Object.keys(value).sort().map((k) => [k, value[k]]))
      : value,
  )

export function recordApproval(id, params, now = Date.now()) {
  for (const [key, approval] of approvedCalls) if (approval.expires <= now) approvedCalls.delete(key)
  approvedCalls.set(id, { params: fingerprint(params), expires: now + APPROVAL_TTL_MS })
}

/** Whether a person allowed this call with these parameters; the approval is used up. */
export function takeApproval(id, params, now = Date.now()) {
  const approval = id ? approvedCalls.get(id) : undefined
  if (!approval) return false
  approvedCalls.delete(id)
  return approval.expires > now && approval.params === fingerprint(params)
}
