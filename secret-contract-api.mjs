// OpenClaw's channel secret contract for `channels.pier` (see plugin/secrets.mjs). OpenClaw
// looks for this file by name at the plugin root.
import { createSimpleChannelSecretContract } from 'openclaw/plugin-sdk/channel-secret-basic-runtime'
import { pierSecretContract } from './plugin/secrets.mjs'

const contract = pierSecretContract(createSimpleChannelSecretContract)

export const secretTargetRegistryEntries = contract.secretTargetRegistryEntries
export const collectRuntimeConfigAssignments = contract.collectRuntimeConfigAssignments
