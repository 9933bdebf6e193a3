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

/**
 * Host tools that move into OpenClaw's sandbox (docs/gateway/sandboxing/). Whether a sandbox
 * really confines them is OpenClaw's call (jobToolPolicy asks it): `ls` moves into the sandbox
 * but is no tool OpenClaw counts as confined to the workspace, so an account listing it is refused.
 */
const SANDBOXED_TOOLS = new Set(['exec', 'process', 'read', 'write', 'edit', 'apply_patch', 'ls'])
const SANDBOXED_GROUPS = new Map([['group:fs', ['ls', 'read', 'write', 'edit', 'apply_patch']]])
/** group:runtime in 2026.9.6 also holds code_execution and secrets, which no sandbox confines. */
const HOST_GROUPS = new Map([['group:runtime', ['exec', 'process', 'code_execution', 'secrets']]])

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
    for (const n of SAFE_GROUPS.get(name) ?? SANDBOXED_GROUPS.get(name) ?? HOST_GROUPS.get(name) ?? [name]) out.add(n)
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
const probeSessionKey = (agentId) => `agent:${agentId}:pier:policy-check`.toLowerCase()

/**
 * The runEmbeddedAgent options that keep a job turn offered tools to exactly toolsAllow.
 * OpenClaw 2026.9.6 widens a run's toolsAllow: Tool Search (on unless tools.toolSearch is
 * false) adds tool_search, tool_describe and tool_call, Code Mode its own controls, and an
 * allowed `write` brings `apply_patch` along. A run's own `config` cannot change that (the
 * gateway's published config replaces it), so the turn turns Tool Search and Code Mode off,
 * and its conversation policy denies apply_patch unless toolsAllow lists it.
 */
export function jobToolSurface(offered) {
  if (!offered.length) return {}
  const deny = expandTools(offered).has('apply_patch') ? [] : ['apply_patch']
  return { disableToolSearch: true, codeModeOverride: false, ...(deny.length ? { conversationToolPolicy: { deny } } : {}) }
}

/**
 * The config OpenClaw's confinement check (resolve/prepareWorkspaceAuthority) judges a job turn
 * by. OpenClaw judges a session by every tool its agent's policies allow, and the sandbox's
 * default tool list holds tools it does not count as confined (ls, sessions_send,
 * sessions_spawn, subagents), so the documented setup failed on tools no job is offered. A job
 * turn gets only toolsAllow (runEmbeddedAgent's toolsAllow narrows, never widens): the check
 * runs as if the agent's sandbox allowed exactly those. Every other rule still applies: the
 * agent's own tool policy and the sandbox's denies, backend, scope, docker overrides, elevated
 * exec, exec host, host browser control, session visibility.
 */
function confinementConfig(cfg, agentId, offered) {
  const entries = cfg?.agents?.entries ?? {}
  const agent = entries[agentId] ?? {}
  const sandbox = agent.tools?.sandbox ?? {}
  const tools = { ...agent.tools, sandbox: { ...sandbox, tools: { ...sandbox.tools, allow: [...offered], alsoAllow: [] } } }
  return { ...cfg, agents: { ...cfg?.agents, entries: { ...entries, [agentId]: { ...agent, tools } } } }
}

/**
 * What OpenClaw's confinement check is asked about a job turn: its config, its session, and the
 * host tools it must have (a tool the agent's own policy blocks is named, not silently missing).
 */
export function confinementQuery(cfg, agentId, offered, sessionKey = probeSessionKey(agentId)) {
  const required = [...expandTools(offered)].filter((name) => SANDBOXED_TOOLS.has(name))
  return { config: confinementConfig(cfg ?? {}, agentId, offered), agentId, sessionKey, requiredToolNames: required }
}

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
  const given = `toolsAllow gives job turns host tools (${hostTools.join(', ')})`
  const override = 'or set unsafeHostTools: true'
  if (tools.host.length) {
    throw hostToolsError(`${given}, and ${tools.host.join(', ')} cannot be confined by OpenClaw's sandbox: a stranger's job would run them on this host. Fix: remove ${tools.host.join(', ')} from toolsAllow (group:web is the safe opt-in), ${override}`)
  }
  const authority = sandboxAuthority(sandbox, cfg, agentId, tools.offered)
  if (authority.sandboxed && !authority.confinementError) {
    const own = ownWorkspaceError(authority, agentId) ?? sandboxLimitsError(cfg, agentId)
    if (own) throw hostToolsError(`${given}, and ${own}`)
    return { tools, sandboxed: true, unsafe: false }
  }
  if (!authority.sandboxed) {
    throw hostToolsError(
      `${given}, and agent ${agentId} has no sandbox: a stranger's job would run them on this host. ` +
        `Fix: remove them from toolsAllow (group:web is the safe opt-in), or run agent ${agentId} in OpenClaw's sandbox (agents.entries.${agentId}.sandbox: { mode: "all", scope: "session", backend: "docker", workspaceAccess: "rw", docker: { memory: "1g", memorySwap: "1g", pidsLimit: 256, cpus: 1 } }), ${override}`,
    )
  }
  throw hostToolsError(`${given}, and agent ${agentId}'s sandbox does not confine a job: ${authority.confinementError} Fix: ${confinementFix(authority.confinementError, agentId)}, ${override}`)
}

/**
 * A job's sandbox must mount the job's own workspace (workspaceAccess "rw"), which the plugin
 * makes empty for the job, gives an unprivileged owner and removes after it (job-sandbox.mjs).
 * With "none" or "ro" OpenClaw keeps a copy per session that outlives the job and belongs to
 * the gateway's user: root, on a gateway run as root, and the job root in its container.
 */
export function ownWorkspaceError(authority, agentId) {
  if (authority.workspaceAccess === 'rw') return null
  return `agent ${agentId}'s sandbox gives a job OpenClaw's own workspace copy (workspaceAccess "${authority.workspaceAccess ?? 'none'}"), which outlives the job and belongs to the gateway's user. Fix: set agents.entries.${agentId}.sandbox.workspaceAccess to "rw" (each job's sandbox then mounts an empty workspace of its own, removed when the job ends)`
}

/**
 * The limits a job's container must have, as OpenClaw's `sandbox.docker` keys (docker's
 * --memory, --memory-swap, --pids-limit, --cpus), and the values the fix proposes. OpenClaw sets
 * none by default, and a run cannot set them (its sandbox comes from the gateway's config), so
 * an account whose job agent lacks one takes no jobs: a stranger's memory hog would take the
 * host's memory, a fork bomb its process table, a busy loop every core. memorySwap equal to
 * memory means no swap on top; without it docker allows as much swap again.
 */
const SANDBOX_LIMITS = [
  ['memory', '1g'],
  ['memorySwap', '1g'],
  ['pidsLimit', 256],
  ['cpus', 1],
]

const positive = (key, value) => {
  if (key === 'memory' || key === 'memorySwap') {
    // docker's sizes ("512m", "1g", bytes); -1 (unlimited swap) is no limit.
    if (typeof value === 'number') return Number.isFinite(value) && value > 0
    return typeof value === 'string' && /^\s*\d+(\.\d+)?\s*[bkmgt]?b?\s*$/i.test(value) && parseFloat(value) > 0
  }
  const n = typeof value === 'string' ? Number(value) : value
  return typeof n === 'number' && Number.isFinite(n) && n > 0
}

/**
 * The job agent's docker limits as OpenClaw resolves them (resolveSandboxDockerConfig in
 * 2026.9.6: the agent's `sandbox.docker` key, else `agents.defaults.sandbox.docker`'s; a
 * scope "shared" sandbox ignores the agent's, and is refused before this anyway).
 */
export function sandboxLimits(cfg, agentId) {
  const agentDocker = cfg?.agents?.entries?.[agentId]?.sandbox?.docker ?? {}
  const globalDocker = cfg?.agents?.defaults?.sandbox?.docker ?? {}
  return Object.fromEntries(SANDBOX_LIMITS.map(([key]) => [key, agentDocker[key] ?? globalDocker[key]]))
}

/** The image OpenClaw runs a docker sandbox from unless sandbox.docker.image names another. */
export const DEFAULT_SANDBOX_IMAGE = 'openclaw-sandbox:bookworm-slim'

/**
 * The job agent's sandbox settings as OpenClaw resolves them (resolveSandboxConfigForAgent in
 * 2026.9.6: the agent's `sandbox` key, else `agents.defaults.sandbox`'s, else OpenClaw's
 * default; a scope "shared" sandbox ignores the agent's docker keys), and `imageKey`, the config
 * key that names its image (null: OpenClaw's default image).
 */
export function sandboxSettings(cfg, agentId) {
  const own = cfg?.agents?.entries?.[agentId]?.sandbox ?? {}
  const all = cfg?.agents?.defaults?.sandbox ?? {}
  const perSession = own.perSession ?? all.perSession
  const scope = own.scope ?? all.scope ?? (typeof perSession === 'boolean' ? (perSession ? 'session' : 'shared') : 'agent')
  const ownImage = scope === 'shared' ? undefined : own.docker?.image
  const imageKey = ownImage ? `agents.entries.${agentId}.sandbox.docker.image` : all.docker?.image ? 'agents.defaults.sandbox.docker.image' : null
  return {
    agentId,
    mode: own.mode ?? all.mode ?? 'off',
    backend: String(own.backend ?? '').trim() || String(all.backend ?? '').trim() || 'docker',
    scope,
    workspaceAccess: own.workspaceAccess ?? all.workspaceAccess ?? 'none',
    image: ownImage ?? all.docker?.image ?? DEFAULT_SANDBOX_IMAGE,
    imageKey,
  }
}

/**
 * What a job turn is offered and where it runs, in one line, for status and the audit:
 * `none`, `group:web`, `exec, read, write in a docker sandbox (agent pier-jobs, image …)`,
 * `exec ON THE HOST (unsafeHostTools)`. `policy` is jobToolPolicy's answer (null: the account
 * is blocked), `sandbox` sandboxSettings' for the job agent.
 */
export function describeJobTools(policy, sandbox) {
  if (!policy) return 'none: the account is blocked (host tools)'
  const offered = policy.tools.offered
  if (!offered.length) return 'none'
  if (policy.unsafe) return `${offered.join(', ')} ON THE HOST (unsafeHostTools)`
  if (policy.sandboxed) return `${offered.join(', ')} in a ${sandbox?.backend ?? 'docker'} sandbox (agent ${sandbox?.agentId ?? '?'}, image ${sandbox?.image ?? DEFAULT_SANDBOX_IMAGE})`
  return offered.join(', ')
}

/**
 * Why the job agent's sandbox does not bound a stranger's job (memory, swap, processes, CPU), with
 * the one `openclaw config set` that fixes it, or null when it does.
 */
export function sandboxLimitsError(cfg, agentId) {
  const limits = sandboxLimits(cfg, agentId)
  const missing = SANDBOX_LIMITS.filter(([key]) => !positive(key, limits[key]))
  if (!missing.length) return null
  const fix = JSON.stringify(Object.fromEntries(missing))
  return (
    `agent ${agentId}'s sandbox sets no ${missing.map(([key]) => key).join(', ')} limit: a stranger's job could take this host's memory, processes or every core. ` +
    `Fix: openclaw config set agents.entries.${agentId}.sandbox.docker '${fix}' --strict-json --merge`
  )
}

/**
 * The one change that answers each of OpenClaw's confinement errors (2026.9.6's wording), so
 * the operator reads what is missing rather than the setup they already have.
 */
const CONFINEMENT_FIXES = [
  [/unclassified tool surface (\S+?)\.?$/, (a, m) => `remove ${m[1]} from toolsAllow (OpenClaw's sandbox does not count it as confined to the job's workspace)`],
  [/blocks required tool (\S+?)\.?$/, (a, m) => `let agent ${a}'s tool policy allow ${m[1]} (agents.entries.${a}.tools and tools.sandbox.tools), or remove it from toolsAllow`],
  [/backend does not provide local workspace confinement/, (a) => `set agents.entries.${a}.sandbox.backend to "docker"`],
  [/not exclusive to this worker session/, (a) => `set agents.entries.${a}.sandbox.scope to "session" (one sandbox per job)`],
  [/dangerous Docker isolation overrides/, (a) => `remove the dangerouslyAllow… settings from agents.entries.${a}.sandbox.docker and agents.defaults.sandbox.docker`],
  [/host-level elevated execution/, (a) => `set agents.entries.${a}.tools.elevated.enabled to false`],
  [/routes shell execution outside the sandbox|invalid shell execution override/, (a) => `remove tools.exec.host (or set it to "sandbox") in agents.entries.${a} and the global tools`],
  [/host browser control/, (a) => `set agents.entries.${a}.sandbox.browser.allowHostControl to false`],
  [/host-wide sessions/, () => 'set agents.defaults.sandbox.sessionToolsVisibility to "spawned"'],
]

export function confinementFix(error, agentId) {
  for (const [pattern, fix] of CONFINEMENT_FIXES) {
    const m = pattern.exec(String(error))
    if (m) return fix(agentId, m)
  }
  return `make agent ${agentId}'s sandbox confine it (openclaw sandbox explain --agent ${agentId}), or remove the host tools from toolsAllow`
}

function sandboxAuthority(sandbox, cfg, agentId, offered) {
  if (typeof sandbox?.resolveWorkspaceAuthority !== 'function') return { sandboxed: false }
  try {
    return sandbox.resolveWorkspaceAuthority(confinementQuery(cfg, agentId, offered))
  } catch (error) {
    return { sandboxed: true, confinementError: String(error?.message ?? error) }
  }
}

function hostToolsError(message) {
  return Object.assign(new Error(`PIER_HOST_TOOLS: ${message}`), { code: 'PIER_HOST_TOOLS' })
}
