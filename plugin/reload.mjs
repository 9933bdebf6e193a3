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
import { dirname, join, resolve } from 'node:path'
import { homedir } from 'node:os'
import { resolveAccount } from './config.mjs'

/** OpenClaw's config file (OPENCLAW_CONFIG_PATH, else <state dir>/openclaw.json). */
export function configFilePath(env = process.env) {
  return env.OPENCLAW_CONFIG_PATH || join(env.OPENCLAW_STATE_DIR || join(homedir(), '.openclaw'), 'openclaw.json')
}

/**
 * The config file as OpenClaw reads it: JSON5 (comments, trailing commas), `$include`, `${VAR}`,
 * with OpenClaw's own reader (the snapshot its config writers start from, of the gateway's own
 * config file: `path` is that file), so a change is seen exactly as the gateway will see it.
 * `{ config, files, reader }`: `files` are the ones it was read from, the main file and every
 * included one (the set OpenClaw's own watcher watches); `reader` is "openclaw", or "json" where
 * the host SDK cannot be imported (outside a gateway), which reads the file as plain JSON.
 * Undefined when the file is missing or invalid: the gateway applies no such change either.
 */
async function readConfigFile(path = configFilePath()) {
  let host
  try {
    host = await import('openclaw/plugin-sdk/config-mutation')
  } catch {
    host = null
  }
  if (host?.readConfigFileSnapshotForWrite) {
    try {
      const { snapshot } = await host.readConfigFileSnapshotForWrite()
      if (!snapshot?.exists || !snapshot.valid) return undefined
      return { config: snapshot.config, files: [path, ...(snapshot.includedPaths ?? []).map((p) => resolve(dirname(path), p))], reader: 'openclaw' }
    } catch {
      return undefined
    }
  }
  try {
    return { config: JSON.parse(readFileSync(path, 'utf8')), files: [path], reader: 'json' }
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

/**
 * accountConfigKeys of the file as it is now, with readConfigFile's `reader` (undefined when it
 * cannot be read or is invalid). Each read also says which files the config comes from, the
 * included ones too: those are what the watcher watches from then on.
 */
export async function accountConfigKeysOfFile(accountId, path = configFilePath(), read = readConfigFile) {
  const got = await read(path)
  if (got === undefined) return undefined
  watchConfigFiles(got.files)
  return { ...accountConfigKeys(got.config, accountId), reader: got.reader }
}

const WATCH = Symbol.for('pier-connector.config-watch')

/**
 * Calls `listener()` (debounced) whenever the config file, or a file it includes, changes: one
 * watcher per directory of those files, per process, while anyone listens (editors and OpenClaw
 * replace a file, so the file itself cannot be watched). The included files are learnt from
 * each read (accountConfigKeysOfFile). Returns the unsubscribe.
 */
export function onConfigFileChange(listener, path = configFilePath()) {
  const state = (globalThis[WATCH] ??= { listeners: new Set(), files: new Set(), watchers: new Map(), timer: null })
  state.listeners.add(listener)
  if (state.files.size === 0) state.files.add(resolve(path))
  syncWatchers(state)
  return () => {
    state.listeners.delete(listener)
    if (state.listeners.size === 0) {
      clearTimeout(state.timer)
      state.files.clear()
      syncWatchers(state)
    }
  }
}

/** The files the config was last read from (readConfigFile's `files`): what is watched now. */
function watchConfigFiles(files) {
  const state = globalThis[WATCH]
  if (!state || state.listeners.size === 0) return
  state.files = new Set(files.map((f) => resolve(f)))
  syncWatchers(state)
}

/** One directory watcher for each directory of a watched file, none for any other. */
function syncWatchers(state) {
  const dirs = new Set([...state.files].map((f) => dirname(f)))
  for (const [dir, watcher] of state.watchers) {
    if (dirs.has(dir)) continue
    watcher.close()
    state.watchers.delete(dir)
  }
  for (const dir of dirs) {
    if (state.watchers.has(dir)) continue
    try {
      const watcher = watch(dir, { persistent: false }, (_event, name) => {
        if (name && !state.files.has(join(dir, name))) return
        clearTimeout(state.timer)
        state.timer = setTimeout(() => state.listeners.forEach((l) => l()), 100)
        state.timer.unref?.()
      })
      watcher.on('error', () => {})
      state.watchers.set(dir, watcher)
    } catch {
      // A directory that cannot be watched (gone): the others still are.
    }
  }
}
