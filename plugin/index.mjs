// OpenClaw entry for pier-connector: registers the `pier` channel (whose accounts run the
// workers), the service, the pier_publish tool, the /pier command and `openclaw pier`. All Pier logic lives in
// the native addon.
import {
  defineChannelPluginEntry,
  createChatChannelPlugin,
  createChannelPluginBase,
} from 'openclaw/plugin-sdk/channel-core'
import { createSimpleChannelSecretContract } from 'openclaw/plugin-sdk/channel-secret-basic-runtime'
import { createSubsystemLogger } from 'openclaw/plugin-sdk/logging-core'
import { createPierChannel } from './channel.mjs'
import { registerPier, registerPierCommand, registerPierHooks, createPierRuntime } from './register.mjs'
import { PLUGIN_ID } from './config.mjs'
import { registerPierCli } from './cli.mjs'

const runtime = createPierRuntime()

export default defineChannelPluginEntry({
  id: PLUGIN_ID,
  name: 'Pier Connector',
  description: 'Take and publish paid jobs on the Pier marketplace (NATS), run by a native Rust worker',
  plugin: createPierChannel({ createChatChannelPlugin, createChannelPluginBase, createSimpleChannelSecretContract }, runtime),
  // `openclaw pier …`: the pier-connector CLI's commands with the gateway's channels.pier config.
  registerCliMetadata: (api) => registerPierCli(api),
  // Pier's lines go to the subsystem `openclaw channels logs --channel pier` reads (the
  // account context's own logger files them under channels/pier, which it does not match).
  registerFull: (api) => registerPier(api, runtime, { logger: createSubsystemLogger('gateway/channels/pier') }),
  // What must be in every registry an agent turn may match commands or take hooks from
  // (discovery, full, tool-discovery; register.mjs): /pier, the job guard and the paid-publish
  // approval. registerFull runs in full and tool-discovery mode only.
  registerCapabilities: (api) => {
    registerPierCommand(api)
    registerPierHooks(api)
  },
})
