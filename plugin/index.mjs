// OpenClaw entry for pier-connector: registers the `pier` channel, the worker service, the
// pier_publish tool and the /pier command. All Pier logic lives in the native addon.
import {
  defineChannelPluginEntry,
  createChatChannelPlugin,
  createChannelPluginBase,
} from 'openclaw/plugin-sdk/channel-core'
import { createPierChannel } from './channel.mjs'
import { registerPier } from './register.mjs'
import { PLUGIN_ID } from './config.mjs'

export default defineChannelPluginEntry({
  id: PLUGIN_ID,
  name: 'Pier Connector',
  description: 'Take and publish paid jobs on the Pier marketplace (NATS), run by a native Rust worker',
  plugin: createPierChannel({ createChatChannelPlugin, createChannelPluginBase }),
  registerFull: registerPier,
})
