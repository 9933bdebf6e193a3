// The native addon, loaded through load-addon.js on first use: OpenClaw evaluates this plugin
// again for every plugin instance (each config or plugin reload makes several) and keeps every
// copy of the addon it loaded mapped, so only an instance that runs a worker or a client loads
// one. When it cannot load on this platform the plugin still loads: PierWorker and PierClient
// throw the loader's one-line error, so the service reports it through its health (and the tool
// returns it) instead of the gateway failing to load the plugin with napi's stack trace.
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)

let addon = null
let loadError = null

function load() {
  if (!addon && !loadError) {
    try {
      addon = require('../load-addon.js')
      // napi starts an async runtime (threads) for every copy it loads: a copy runs threads only
      // while one of its workers runs or clients is open (the first use starts them again).
      addon.releaseRuntime?.()
    } catch (error) {
      loadError = error
    }
  }
  if (loadError) throw loadError
  return addon
}

/** Why the addon cannot load here (an Error with a one-line message), or null; loads it. */
export function addonLoadError() {
  try {
    load()
    return null
  } catch (error) {
    return error
  }
}

/** @type {typeof import('../index.js').PierWorker} */
export const PierWorker = Object.assign(
  function PierWorker(...args) {
    return new (load().PierWorker)(...args)
  },
  { echo: (...args) => load().PierWorker.echo(...args) },
)

/** @type {typeof import('../index.js').PierClient} */
export const PierClient = function PierClient(...args) {
  return new (load().PierClient)(...args)
}

/** Ends this addon copy's runtime threads once none of its workers or clients runs (index.d.ts). */
export const releaseRuntime = () => (addon ? addon.releaseRuntime() : true)

/** Per-day sums of a ledger file, read off the event loop (a Promise, see index.d.ts); rejects with the load error where the addon cannot load. */
export const ledgerDays = async (...args) => load().ledgerDays(...args)
