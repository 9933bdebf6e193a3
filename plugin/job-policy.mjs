// What a stranger's job turn may reach. A job's task is anybody's words (prompt injection is
// the normal case), so a job turn runs as its own agent in an empty workspace of its own, with
// OpenClaw's untrusted-input options, and with no tools unless the account lists them in
// toolsAllow. Host tools (anything that reaches this machine, the operator's sessions or other
// channels) fail closed: an account that lists one takes no jobs unless the job agent runs in
// OpenClaw's sandbox, or the operator sets the loudly named unsafeHostTools.
import { join } from 'node:path'
import { mkdirSync } from 'node:fs'

/** Tools a job may be given without a sandbox: they reach the web, not this host. */
const SAFE_TOOLS = new Set(['web_search', 'web_fetch', 'x_search'])
const SAFE_GROUPS = new Map([['group:web', ['web_search', 'web_fetch', 'x_search']]])

/**
 * `message` is a host tool: it can send on every channel the gateway has. job-guard.mjs keeps a
 * job turn's calls to `send` on channel pier to its own job where OpenClaw runs plugin hooks,
 * but OpenClaw 2026.9.6 was not seen to run them for the message tool inside an embedded turn,
 * so it needs unsafeHostTools like the others (no sandbox confines it).
 */
export const MESSAGE_TOOL = 'message'

/** Host tools OpenClaw's sandbox confines (docs/gateway/sandboxing/): only these move into it. */
const SANDBOXED_TOOLS = new Set(['exec', 'process', 'read', 'write', 'edit', 'apply_patch', 'ls'])
const SANDBOXED_GROUPS = new Map([
  ['group:fs', ['ls', 'read', 'write', 'edit', 'apply_patch']],
  ['group:runtime', ['exec', 'process']],
])

/** Entries that would offer every tool, pier_publish included: never accepted (and any glob). */
const WILDCARDS = new Set(['group:plugins', 'group:openclaw', 'pier-connector'])

/** Never offered to a job turn: it publishes paid tasks with the operator's money. */
export const NEVER_FOR_JOBS = new Set(['pier_publish'])

/** OpenClaw's tool aliases (its tool-policy-shared TOOL_NAME_ALIASES in 2026.9.6). */
const TOOL_NAME_ALIASES = new Map([
  ['bash', 'exec'],
  ['apply-patch', 'apply_patch'],
  ['cron', 'automations'],
])

/**
 * A toolsAllow entry as OpenClaw's policy reads it (normalizeToolPolicyName: trimmed, lower
 * case, aliases resolved): `PIER_PUBLISH` is pier_publish to OpenClaw, and so it must be here.
 */
export function normalizeToolName(raw) {
  const name = String(raw ?? '').trim().toLowerCase()
  return TOOL_NAME_ALIASES.get(name) ?? name
}

/**
 * Sorts an account's toolsAllow: `safe` (web), `sandboxed` (host tools the sandbox can
 * confine), `host` (host tools it cannot: message, sessions, memory, automation, gateway,
 * nodes, browser, other plugins' tools, anything unknown), `reachesHost` (both of those),
 * `wildcards`, and `offered`: the list passed to the turn (pier_publish removed).
 */
export function classifyTools(toolsAllow = []) {
  const out = { safe: [], sandboxed: [], host: [], wildcards: [], offered: [] }
  for (const raw of toolsAllow) {
    const name = normalizeToolName(raw)
    if (!name || out.offered.includes(name) || out.wildcards.includes(name)) continue
    if (NEVER_FOR_JOBS.has(name)) continue
    if (WILDCARDS.has(name) || name.includes('*')) out.wildcards.push(name)
    else if (SAFE_TOOLS.has(name) || SAFE_GROUPS.has(name)) out.safe.push(name)
    else if (SANDBOXED_TOOLS.has(name) || SANDBOXED_GROUPS.has(name)) out.sandboxed.push(name)
    else out.host.push(name)
    out.offered.push(name)
  }
  out.reachesHost = [...out.sandboxed, ...out.host]
  return out
}

/** The tool names a list stands for, normalized, groups expanded (for the job guard's call-time check). */
export function expandTools(names) {
  const out = new Set()
  for (const raw of names) {
    const name = normalizeToolName(raw)
    for (const n of SAFE_GROUPS.get(name) ?? SANDBOXED_GROUPS.get(name) ?? [name]) out.add(n)
  }
  return out
}

/** The job agent's empty workspace under the state dir, created on first use. */
export function jobWorkspaceDir(api, env = process.env) {
  const stateDir = api.runtime?.state?.resolveStateDir?.(env) ?? env.OPENCLAW_STATE_DIR
  if (!stateDir) throw new Error('pier: OpenClaw did not say where its state dir is')
  const dir = join(stateDir, 'pier', 'job-workspace')
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  return dir
}

/** A session key of the job agent's own, as the sandbox resolves policy for a job turn. */
const probeSessionKey = (agentId) => `agent:${agentId}:pier:policy-check`

/**
 * Decides whether an account may take jobs with its toolsAllow. Returns `{ tools, sandboxed,
 * unsafe }` when it may, and throws a PIER_HOST_TOOLS error naming the tools and the fix when
 * it may not (PIER_CONFIG when its agent is not in the config's agent roster). `sandbox` is
 * api.runtime.sandbox (absent on hosts without it: not sandboxed).
 */
export function jobToolPolicy(account, { cfg, sandbox } = {}) {
  const tools = classifyTools(account.toolsAllow)
  const agentId = account.agentId
  const roster = cfg?.agents?.entries
  if (roster && typeof roster === 'object' && !Object.hasOwn(roster, agentId)) {
    // OpenClaw runs turns only for agents in its roster: say so once, at start, instead of
    // failing every job.
    throw Object.assign(
      new Error(`PIER_CONFIG: agent ${agentId} (channels.pier agentId) is not configured, and OpenClaw runs turns only for configured agents; add it (openclaw agents add ${agentId}), or remove agentId`),
      { code: 'PIER_CONFIG' },
    )
  }
  if (tools.wildcards.length) {
    throw hostToolsError(`toolsAllow lists ${tools.wildcards.join(', ')}, which would offer a stranger's job every tool (pier_publish included); name the tools instead (for example group:web)`)
  }
  const hostTools = tools.reachesHost
  if (!hostTools.length) return { tools, sandboxed: false, unsafe: false }
  if (account.unsafeHostTools) return { tools, sandboxed: false, unsafe: true }
  const authority = sandboxAuthority(sandbox, cfg, agentId)
  if (!tools.host.length && authority.sandboxed && !authority.confinementError) return { tools, sandboxed: true, unsafe: false }
  const why = tools.host.length
    ? `${tools.host.join(', ')} cannot be confined by OpenClaw's sandbox`
    : authority.sandboxed
      ? `agent ${agentId}'s sandbox does not confine a job: ${authority.confinementError}`
      : `agent ${agentId} has no sandbox`
  throw hostToolsError(
    `toolsAllow gives job turns host tools (${hostTools.join(', ')}), and ${why}: a stranger's job would run them on this host. ` +
      `Fix: remove them from toolsAllow (group:web is the safe opt-in)${tools.host.length ? '' : `, or run agent ${agentId} in OpenClaw's sandbox (agents.entries.${agentId}.sandbox: mode "all", scope "session")`}, or set unsafeHostTools: true`,
  )
}

function sandboxAuthority(sandbox, cfg, agentId) {
  if (typeof sandbox?.resolveWorkspaceAuthority !== 'function') return { sandboxed: false }
  try {
    return sandbox.resolveWorkspaceAuthority({ config: cfg ?? {}, agentId, sessionKey: probeSessionKey(agentId) })
  } catch (error) {
    return { sandboxed: false, confinementError: String(error?.message ?? error) }
  }
}

function hostToolsError(message) {
  return Object.assign(new Error(`PIER_HOST_TOOLS: ${message}`), { code: 'PIER_HOST_TOOLS' })
}
