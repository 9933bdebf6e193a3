// OpenClaw entry for pier-connector: registers the `pier` channel (whose accounts run the
// workers), the service, the pier_publish tool and the /pier command. All Pier logic lives in
// the native addon.
import {
  defineChannelPluginEntry,
  createChatChannelPlugin,
  createChannelPluginBase,
} from 'openclaw/plugin-sdk/channel-core'
import { createSimpleChannelSecretContract } from 'openclaw/plugin-sdk/channel-secret-basic-runtime'
import { createPierChannel } from './channel.mjs'
import { registerPier, createPierRuntime } from './register.mjs'
import { PLUGIN_ID } from './config.mjs'

const runtime = createPierRuntime()

export default defineChannelPluginEntry({
  id: PLUGIN_ID,
  name: 'Pier Connector',
  description: 'Take and publish paid jobs on the Pier marketplace (NATS), run by a native Rust worker',
  plugin: createPierChannel({ createChatChannelPlugin, createChannelPluginBase, createSimpleChannelSecretContract }, runtime),
  registerFull: (api) => registerPier(api, runtime),
})
