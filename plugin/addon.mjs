// The native addon, loaded once through load-addon.js. When it cannot load on this platform the
// plugin still loads: PierWorker and PierClient become stand-ins that throw the loader's one-line
// error, so the service reports it through its health (and the tool returns it) instead of the
// gateway failing to load the plugin with napi's stack trace.
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)

/** Why the addon did not load (an Error with a one-line message), or null. */
export let addonLoadError = null
let addon
try {
  addon = require('../load-addon.js')
} catch (error) {
  addonLoadError = error
}

/** A class that cannot be constructed here: every use throws `addonLoadError`. */
function unavailable() {
  return class Unavailable {
    constructor() {
      throw addonLoadError
    }
    static echo() {
      throw addonLoadError
    }
  }
}

/** @type {typeof import('../index.js').PierWorker} */
export const PierWorker = addon?.PierWorker ?? unavailable()
/** @type {typeof import('../index.js').PierClient} */
export const PierClient = addon?.PierClient ?? unavailable()
/** Per-day sums of a ledger file (see index.d.ts); throws `addonLoadError` when it did not load. */
export const ledgerDays =
  addon?.ledgerDays ??
  (() => {
    throw addonLoadError
  })
