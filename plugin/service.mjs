// The plugin service. Workers run through the channel account lifecycle (account.mjs); this
// service reports a binary that cannot load here to the gateway's service health at start, and
// when the gateway stops or retires this copy of the plugin (a reload or an in-process restart
// loads a new copy and keeps the old one mapped), it waits for every account's stop (the
// channel stop gives an account a few seconds; finishing its jobs may need drainTimeoutMs), closes
// pier_publish's connection, and ends the addon's runtime threads: an old copy leaves nothing
// running.
import addon from '../load-addon.js'
import { stopAll } from './accounts.mjs'

/**
 * @param {object} log pierLogger
 * @param {() => Promise<void>} [closeClients] closes the connections of this copy's tools
 */
export function createPierService(log, closeClients = async () => {}) {
  return {
    id: 'pier-connector',
    async start(ctx) {
      const error = addon.addonLoadError()
      if (error) {
        log.error(`worker failed to start: ${error.message}`)
        ctx?.serviceHealth?.reportFailure?.(error)
        throw error
      }
      ctx?.serviceHealth?.clearFailure?.()
    },
    async stop() {
      await stopAll()
      await closeClients().catch((error) => log.warn(`closing the publish connection failed: ${error?.message ?? error}`))
      if (!addon.releaseRuntime()) log.warn('the addon runtime stays up: a worker or client of this copy is still open')
    },
  }
}
