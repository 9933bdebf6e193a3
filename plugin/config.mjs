// Where a Pier account's config comes from: `channels.pier` (shared keys) merged with
// `channels.pier.accounts.<id>`, else the old `plugins.entries["pier-connector"].config`; the
// channel-only keys are removed before the config reaches the addon (the Rust Config rejects
// unknown keys and validates the rest).
import pierEnv from '../lib/env.js'

const { hasLogin, withEnvironment } = pierEnv

export const PLUGIN_ID = 'pier-connector'
export const CHANNEL_ID = 'pier'
export const DEFAULT_ACCOUNT_ID = 'default'
/** The job agent: once the operator adds it, jobs share no agent with the operator's chats. */
export const JOB_AGENT_ID = 'pier-jobs'

/** Keys OpenClaw's channel config adds around the worker keys. */
const CHANNEL_ONLY_KEYS = ['enabled', 'name', 'defaultAccount', 'accounts']
/** Secrets: SecretRef-capable, masked in every line (the connection's credentials also come from the environment, below). */
export const SECRET_KEYS = ['token', 'password', 'nkeySeed', 'signingSeed']

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v)

export function channelSection(cfg) {
  const section = cfg?.channels?.[CHANNEL_ID]
  return isObject(section) ? section : undefined
}

/** The pre-channel config location, still honoured when `channels.pier` is absent. */
export function legacySection(cfg) {
  const entry = cfg?.plugins?.entries?.[PLUGIN_ID]
  return isObject(entry?.config) && Object.keys(entry.config).length ? entry.config : undefined
}

export function listAccountIds(cfg) {
  const accounts = channelSection(cfg)?.accounts
  const ids = isObject(accounts) ? Object.keys(accounts) : []
  return ids.length ? ids : [DEFAULT_ACCOUNT_ID]
}

export function defaultAccountId(cfg) {
  const ids = listAccountIds(cfg)
  const wanted = channelSection(cfg)?.defaultAccount
  return ids.includes(wanted) ? wanted : ids.includes(DEFAULT_ACCOUNT_ID) ? DEFAULT_ACCOUNT_ID : ids[0]
}

/**
 * The agent jobs run as when `agentId` is unset: `pier-jobs` once the operator has made it
 * (`openclaw agents add pier-jobs`), else OpenClaw's default agent. OpenClaw runs turns only
 * for configured agents, and the plugin does not add one itself: a second agent makes the
 * config a multi-agent one, whose unscoped gateway calls must then name their agent.
 */
function jobAgentOf(cfg) {
  const entries = isObject(cfg?.agents?.entries) ? cfg.agents.entries : {}
  if (Object.hasOwn(entries, JOB_AGENT_ID)) return JOB_AGENT_ID
  const ids = Object.keys(entries)
  const marked = ids.filter((id) => entries[id]?.default === true)
  if (marked.length === 1) return marked[0]
  if (ids.length === 1) return ids[0]
  const system = cfg?.agents?.defaults?.systemAgent?.agentId
  return typeof system === 'string' && system ? system : 'main'
}

/** A SecretRef object that OpenClaw did not resolve (e.g. read-only CLI paths). */
export const isSecretRef = (v) => isObject(v) && typeof v.source === 'string' && typeof v.id === 'string'

function withoutChannelKeys(raw) {
  const out = {}
  for (const [key, value] of Object.entries(raw ?? {})) {
    if (!CHANNEL_ONLY_KEYS.includes(key) && value !== undefined && value !== null) out[key] = value
  }
  return out
}

/**
 * One account, resolved: its addon config, the host-only settings, and where it came from.
 * `source` is 'channel', 'legacy' or 'none' (nothing configured: the account stays stopped
 * instead of joining the public marketplace by surprise).
 */
export function resolveAccount(cfg, accountId, env = process.env) {
  const id = accountId || defaultAccountId(cfg)
  const section = channelSection(cfg)
  const legacy = section ? undefined : legacySection(cfg)
  const accountRaw = isObject(section?.accounts?.[id]) ? section.accounts[id] : {}
  const configured = { ...withoutChannelKeys(legacy ?? section), ...withoutChannelKeys(accountRaw) }
  // The gateway's environment speaks for its default account only.
  const { config: merged, used: envKeys } =
    id === defaultAccountId(cfg) ? withEnvironment(configured, env) : { config: configured, used: [] }
  const unresolved = SECRET_KEYS.filter((k) => isSecretRef(merged[k]))
  return {
    accountId: id,
    name: typeof accountRaw.name === 'string' ? accountRaw.name : typeof section?.name === 'string' ? section.name : undefined,
    enabled: section?.enabled !== false && accountRaw.enabled !== false && cfg?.plugins?.entries?.[PLUGIN_ID]?.enabled !== false,
    source: section ? 'channel' : legacy ? 'legacy' : 'none',
    configured: Boolean(section || legacy),
    addonConfig: merged,
    // Jobs run as the operator's choice, else the job agent when it is configured, else the
    // default agent; isolated the same way in every case (job-policy.mjs, agent-turn.mjs).
    agentId: typeof merged.agentId === 'string' && merged.agentId ? merged.agentId : jobAgentOf(cfg),
    maxPublishPrice: typeof merged.maxPublishPrice === 'number' ? merged.maxPublishPrice : 0,
    keepSessions: Number.isInteger(merged.keepSessions) && merged.keepSessions > 0 ? merged.keepSessions : 0,
    // Validated by the manifest's schema (an array of strings) before the plugin sees it;
    // none by default: a job is a stranger's task.
    toolsAllow: Array.isArray(merged.toolsAllow) ? merged.toolsAllow : [],
    unsafeHostTools: merged.unsafeHostTools === true,
    // What a job turn may spend (agent-turn.mjs): a cap per model request, and another model.
    limits: {
      maxOutputTokens: Number.isInteger(merged.maxOutputTokens) && merged.maxOutputTokens > 0 ? merged.maxOutputTokens : 0,
      jobModel: typeof merged.jobModel === 'string' ? merged.jobModel : '',
      // What a sandboxed job's workspace may hold (job-sandbox.mjs).
      jobDiskMb: Number.isInteger(merged.jobDiskMb) && merged.jobDiskMb > 0 ? merged.jobDiskMb : 1024,
    },
    credentialSource: envKeys.length ? `env:${envKeys.join(',')}` : unresolved.length ? 'secretref (unresolved)' : hasLogin(configured) ? 'config' : 'none',
    unresolvedSecrets: unresolved,
  }
}

/** Removes user-info from server URLs so a status line never carries a credential. */
function redactUrls(text) {
  return String(text ?? '').replace(/([a-z][a-z0-9+.-]*:\/\/)[^/@\s,]+@/gi, '$1[redacted]@')
}

/** Masks every configured secret value (and URL user-info) inside a message. */
export function redactSecrets(text, addonConfig = {}) {
  let out = redactUrls(text)
  for (const key of [...SECRET_KEYS, 'user']) {
    const value = addonConfig[key]
    if (typeof value === 'string' && value.length >= 4) out = out.split(value).join('[redacted]')
  }
  return out
}

/** A logger that prefixes shim lines and routes the addon's `(level, message)` lines. */
export function pierLogger(logger) {
  const write = (level, message) => {
    const line = message.startsWith('[pier-connector]') ? message : `[pier-connector] ${message}`
    const sink = logger?.[level] ?? logger?.info
    sink?.call(logger, line)
  }
  return {
    debug: (m) => write('debug', m),
    info: (m) => write('info', m),
    warn: (m) => write('warn', m),
    error: (m) => write('error', m),
    addon: (level, message) => write(level, message),
  }
}
