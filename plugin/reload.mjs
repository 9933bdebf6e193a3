// A config change of a busy account. OpenClaw applies a channels.pier change by restarting the
// changed accounts, but only once no agent turn runs anywhere in the gateway ("config change
// requires channel reload (pier) — deferring until … embedded run(s) complete"): a worker that
// keeps taking jobs would defer it for ever. So each account watches the config file, read as
// OpenClaw reads it, and when its own config there changes it stops taking jobs and finishes the
// ones in flight (a drain, up to drainTimeoutMs); the gateway is then idle, applies the change,
// and the account starts again with the new config. A change the gateway will not apply by
// itself drains nothing: an invalid file (OpenClaw keeps running the config it has), and any
// change under gateway.reload.mode "off" (the status says a restart applies it). A change of
// the job agent (`openclaw agents add pier-jobs`, its sandbox) needs no restart of the channel
// and gets none from OpenClaw: the running worker follows it (account.mjs).
import { watch, readFileSync } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import { homedir } from 'node:os'
import { resolveAccount } from './config.mjs'

/** OpenClaw's config file (OPENCLAW_CONFIG_PATH, else <state dir>/openclaw.json). */
export function configFilePath(env = process.env) {
  return env.OPENCLAW_CONFIG_PATH || join(env.OPENCLAW_STATE_DIR || join(homedir(), '.openclaw'), 'openclaw.json')
}

/**
 * The config file as OpenClaw reads it: JSON5 (comments, trailing commas), `$include`, `${VAR}`,
 * with OpenClaw's own reader (the snapshot its config writers start from), so a change is seen
 * exactly as the gateway will see it. Undefined when the file is missing or invalid: the gateway
 * applies no such change either. Outside a gateway (the host SDK cannot be imported) the file
 * is read as plain JSON.
 */
export async function readConfigFile(path = configFilePath()) {
  let host
  try {
    host = await import('openclaw/plugin-sdk/config-mutation')
  } catch {
    host = null
  }
  if (host?.readConfigFileSnapshotForWrite) {
    try {
      const { snapshot } = await host.readConfigFileSnapshotForWrite()
      return snapshot?.exists && snapshot.valid ? snapshot.config : undefined
    } catch {
      return undefined
    }
  }
  try {
    return JSON.parse(readFileSync(path, 'utf8'))
  } catch {
    return undefined
  }
}

/**
 * What a config means for one account, in two parts. `own`: the account's own settings, which
 * OpenClaw applies by restarting the channel's account. `agent`: the agent its jobs run as and
 * that agent's entry (its sandbox decides which tools a job may have); OpenClaw applies a change
 * there (`openclaw agents add pier-jobs`) without restarting the channel, so the account follows
 * it itself. `applies`: false when the gateway applies no change by itself
 * (gateway.reload.mode "off").
 */
export function accountConfigKeys(cfg, accountId) {
  const { addonConfig, enabled, agentId, toolsAllow, unsafeHostTools, keepSessions, maxPublishPrice } = resolveAccount(cfg, accountId, {})
  const agents = cfg?.agents ?? {}
  return {
    own: JSON.stringify({ addonConfig, enabled, toolsAllow, unsafeHostTools, keepSessions, maxPublishPrice }),
    agent: JSON.stringify({ agentId, entry: agents.entries?.[agentId] ?? null, sandbox: agents.defaults?.sandbox ?? null }),
    applies: cfg?.gateway?.reload?.mode !== 'off',
  }
}

/** accountConfigKeys of the file as it is now (undefined when it cannot be read or is invalid). */
export async function accountConfigKeysOfFile(accountId, path = configFilePath(), read = readConfigFile) {
  const cfg = await read(path)
  return cfg === undefined ? undefined : accountConfigKeys(cfg, accountId)
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
