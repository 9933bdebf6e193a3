// OpenClaw's setup entry: the `pier` channel without the runtime registrations (service, tool,
// command). OpenClaw loads it where it needs the channel but not a running gateway: setup
// flows, and read-only commands such as `openclaw security audit`, which asks the channel's
// security adapter (security.mjs) what a stranger's job can reach.
import { defineSetupPluginEntry, createChatChannelPlugin, createChannelPluginBase } from 'openclaw/plugin-sdk/channel-core'
import { createSimpleChannelSecretContract } from 'openclaw/plugin-sdk/channel-secret-basic-runtime'
import { createPierChannel } from './channel.mjs'

export default defineSetupPluginEntry(createPierChannel({ createChatChannelPlugin, createChannelPluginBase, createSimpleChannelSecretContract }))
