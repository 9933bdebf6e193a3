// Splits plugins.entries["pier-connector"].config into the addon's config (validated in Rust)
// and the keys only this shim uses.
export const PLUGIN_ID = 'pier-connector'
export const CHANNEL_ID = 'pier'

const SHIM_KEYS = ['agentId']

export function resolvePierConfig(pluginConfig) {
  const raw = pluginConfig && typeof pluginConfig === 'object' ? pluginConfig : {}
  const addonConfig = {}
  for (const [key, value] of Object.entries(raw)) {
    if (!SHIM_KEYS.includes(key) && value !== undefined) addonConfig[key] = value
  }
  return {
    addonConfig,
    agentId: typeof raw.agentId === 'string' && raw.agentId ? raw.agentId : 'main',
  }
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
