// Registers the service, tool and command on an OpenClaw plugin API object.
import { resolvePierConfig, pierLogger } from './config.mjs'
import { createPierRuntime } from './service.mjs'
import { createPublishTool } from './tool.mjs'
import { createStatusCommand } from './command.mjs'

export function registerPier(api) {
  const log = pierLogger(api.logger)
  const config = resolvePierConfig(api.pluginConfig)
  const runtime = createPierRuntime(api, config, log)
  api.registerService(runtime.service)
  api.registerTool(createPublishTool(runtime, config, log))
  api.registerCommand(createStatusCommand(runtime))
  return runtime
}
