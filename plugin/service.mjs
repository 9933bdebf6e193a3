// The plugin service. Workers run through the channel account lifecycle (account.mjs); this
// service only reports a binary that cannot load here to the gateway's service health at
// start, and on gateway stop waits for every account's drain (the channel stop gives an
// account a few seconds; a drain may need drainTimeoutMs).
import { addonLoadError } from './addon.mjs'
import { drainAll } from './accounts.mjs'

export function createPierService(log) {
  return {
    id: 'pier-connector',
    async start(ctx) {
      if (addonLoadError) {
        log.error(`worker failed to start: ${addonLoadError.message}`)
        ctx?.serviceHealth?.reportFailure?.(addonLoadError)
        throw addonLoadError
      }
      ctx?.serviceHealth?.clearFailure?.()
    },
    async stop() {
      await drainAll()
    },
  }
}
