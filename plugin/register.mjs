// Registers the service and tool on an OpenClaw plugin API object (registerPier, the channel
// entry's registerFull), the /pier command and the tool-call hook (registerPierCommand,
// registerPierHooks: its registerCapabilities), and hands the channel lifecycle what it needs to
// run accounts.
import { pierLogger, legacySection, channelSection } from './config.mjs'
import { createPierService } from './service.mjs'
import { createPublishTool } from './tool.mjs'
import { createPublishApprovalHook } from './approval.mjs'
import { createJobToolGuard } from './job-guard.mjs'
import { createStatusCommand } from './command.mjs'
import addon from '../load-addon.js'

/** What the channel's startAccount needs from registerFull: `{ api, log }`. */
export function createPierRuntime() {
  let deps = null
  return { getDeps: () => deps, setDeps: (d) => (deps = d) }
}

const WARNED = Symbol.for('pier-connector.legacy-config-warned')

/**
 * @param {object} [options] `logger`: where pier's lines go (the channel's log subsystem);
 *   api.logger when absent
 */
export function registerPier(api, runtime = createPierRuntime(), { logger } = {}) {
  const log = pierLogger(logger ?? api.logger)
  // Tool discovery also runs registerFull, with an API that cannot run agent turns.
  if (!api.registrationMode || api.registrationMode === 'full') runtime.setDeps({ api, log })
  const cfg = api.config ?? api.runtime?.config?.current?.() ?? {}
  // One warning per process, however often OpenClaw registers the plugin.
  if (legacySection(cfg) && !globalThis[WARNED]) {
    globalThis[WARNED] = true
    log.warn(
      channelSection(cfg)
        ? 'plugins.entries["pier-connector"].config is ignored because channels.pier is set; remove it'
        : 'config in plugins.entries["pier-connector"].config still works but has moved: put it under channels.pier (openclaw channels add --channel pier)',
    )
  }
  // Optional: an agent sees pier_publish only when the user allows it (tools.allow).
  const tool = createPublishTool(api, log)
  api.registerService(createPierService(log, () => tool.close()))
  api.registerTool(tool, { optional: true })
  // A retired instance (a config reload or plugin reload loads the plugin again, with a new copy
  // of the addon) closes its connection and ends its copy's runtime threads; a copy that still
  // runs a worker keeps them (releaseRuntime refuses).
  api.lifecycle?.onDispose?.(async () => {
    await tool.close().catch(() => {})
    addon.releaseRuntime()
  })
  return runtime
}

/**
 * The /pier command, registered from the entry's registerCapabilities: in every registry
 * OpenClaw builds, its "discovery" ones included. A chat turn matches commands against the
 * registry of its agent's prepared runtime, and once the config differs from the one the
 * gateway's plugins were loaded with (`openclaw agents add`: a hot reload that reloads no
 * plugin) that registry is loaded apart, in discovery mode, where registerFull does not run.
 * With the command in registerFull only, /pier went to the model. The handler reads the
 * workers from runningAccounts (globalThis), so any registry's copy shows the running ones.
 */
export function registerPierCommand(api) {
  api.registerCommand(createStatusCommand(api))
}

/**
 * The before_tool_call hook: the job guard first (a job turn never gets pier_publish, approved or
 * not), then the approval a paid pier_publish needs, which takes the call's context (whether a
 * person can be asked depends on the run: an interactive chat, a cron job, /tools/invoke).
 *
 * Registered from the channel entry's registerCapabilities, which runs in every registration
 * mode that builds a registry an agent turn may take its hooks from ("discovery", "full",
 * "tool-discovery"), not from registerFull ("full" and "tool-discovery" only): OpenClaw
 * 2026.9.6 runs a chat turn's tool calls against a registry it loaded in "discovery" mode, and
 * a hook registered only in registerFull was never called there (measured: a paid pier_publish
 * from a chat then never asked anyone).
 */
export function registerPierHooks(api) {
  const guard = createJobToolGuard()
  const approval = createPublishApprovalHook(api)
  api.on?.('before_tool_call', (event, ctx) => guard(event, ctx) ?? approval(event, ctx))
}
