// Each account's own signing key (protocol.md, "Keys are for Pier signatures only"): unless
// channels.pier names a signingSeed (best as a SecretRef), the addon makes a key on the
// account's first start and keeps it in a plugin-owned file under the state dir, mode 0600,
// never in openclaw.json. The file outlives reinstalls of the plugin; `openclaw pier identity`
// shows it and `--rotate` replaces it.
import { join } from 'node:path'
import { withLedger, stateDirOf } from './ledger.mjs'

/** The account's identity file: its identityFile, else `<stateDir>/pier/identity/<account>.seed`. */
function identityFileOf(api, account) {
  const named = account?.addonConfig?.identityFile
  if (typeof named === 'string' && named) return named
  const stateDir = stateDirOf(api)
  if (!stateDir) return null
  return join(stateDir, 'pier', 'identity', `${String(account.accountId).replace(/[^A-Za-z0-9_-]/g, '_')}.seed`)
}

/**
 * The addon config an account's worker and publisher run with: its keys, its ledger file and
 * its identity file (unused when it has a signingSeed).
 */
export function accountAddonConfig(api, account) {
  const config = withLedger(api, account)
  const identityFile = identityFileOf(api, account)
  return identityFile ? { ...config, identityFile } : config
}
