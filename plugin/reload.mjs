// A config change of a busy account. OpenClaw applies a channels.pier change by restarting the
// changed accounts, but only once no agent turn runs anywhere in the gateway ("config change
// requires channel reload (pier) — deferring until … embedded run(s) complete"): a worker that
// keeps taking jobs would defer it for ever. So each account watches the config file, and when
// its own config there changes it stops taking jobs and finishes the ones in flight (a drain,
// up to drainTimeoutMs); the gateway is then idle, applies the change, and the account starts
// again with the new config. If no restart follows (a change OpenClaw rejected, or
// gateway.reload.mode "off"), the account stays stopped and its status says what to do
// (openclaw config validate, then openclaw gateway restart): restarting it with the old config
// would hold the plugin's retirement, and the next change would drain it again.
import { watch, readFileSync } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import { homedir } from 'node:os'
import { resolveAccount } from './config.mjs'

/** OpenClaw's config file (OPENCLAW_CONFIG_PATH, else <state dir>/openclaw.json). */
export function configFilePath(env = process.env) {
  return env.OPENCLAW_CONFIG_PATH || join(env.OPENCLAW_STATE_DIR || join(homedir(), '.openclaw'), 'openclaw.json')
}

/** An account's own config as the file has it now (undefined when the file cannot be read). */
export function accountConfigKey(accountId, path = configFilePath()) {
  let cfg
  try {
    cfg = JSON.parse(readFileSync(path, 'utf8'))
  } catch {
    return undefined
  }
  const { addonConfig, enabled, agentId, toolsAllow, unsafeHostTools, keepSessions, maxPublishPrice } = resolveAccount(cfg, accountId, {})
  return JSON.stringify({ addonConfig, enabled, agentId, toolsAllow, unsafeHostTools, keepSessions, maxPublishPrice })
}

const WATCH = Symbol.for('pier-connector.config-watch')

/**
 * Calls `listener()` (debounced) whenever the config file changes; one directory watcher per
 * process while anyone listens (editors and OpenClaw replace the file, so the file itself
 * cannot be watched). Returns the unsubscribe.
 */
export function onConfigFileChange(listener, path = configFilePath()) {
  const state = (globalThis[WATCH] ??= { listeners: new Set(), watcher: null, timer: null })
  state.listeners.add(listener)
  if (!state.watcher) {
    try {
      state.watcher = watch(dirname(path), { persistent: false }, (_event, name) => {
        if (name && name !== basename(path)) return
        clearTimeout(state.timer)
        state.timer = setTimeout(() => state.listeners.forEach((l) => l()), 100)
        state.timer.unref?.()
      })
      state.watcher.on('error', () => {})
    } catch {
      state.watcher = null
    }
  }
  return () => {
    state.listeners.delete(listener)
    if (state.listeners.size === 0) {
      clearTimeout(state.timer)
      state.watcher?.close()
      state.watcher = null
    }
  }
}
