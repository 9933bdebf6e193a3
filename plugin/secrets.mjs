// Which Pier config keys are secrets, in OpenClaw's channel secret contract: SecretRefs there
// (env, file, exec) are resolved before an account starts, and `openclaw secrets audit` /
// `openclaw doctor` flag plaintext values. OpenClaw reads the contract from
// secret-contract-api.mjs at the package root without loading the plugin.
import { CHANNEL_ID, SECRET_KEYS } from './config.mjs'

/** @param {Function} createSimpleChannelSecretContract from openclaw/plugin-sdk/channel-secret-basic-runtime */
export function pierSecretContract(createSimpleChannelSecretContract) {
  return createSimpleChannelSecretContract({
    channelKey: CHANNEL_ID,
    label: 'Pier',
    accountFields: SECRET_KEYS,
    channelFields: SECRET_KEYS,
    mode: 'account-inheritance',
  })
}
