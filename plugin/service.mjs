// The background service: starts the addon worker from config, drains it on stop. One worker
// object lives for the plugin's lifetime, so counters survive a stop and a start.
import { PierWorker } from './addon.mjs'
import { createAgentTurnHandler } from './agent-turn.mjs'

export function createPierRuntime(api, { addonConfig, agentId }, log) {
  const running = new Map()
  const handler = createAgentTurnHandler(api, agentId, running)
  let worker = null
  const state = { lastError: null }

  /** The worker, built on first use so a config error surfaces at start, not at load. */
  const getWorker = () =>
    (worker ??= new PierWorker(addonConfig, handler, {
      logger: log.addon,
      onCancel: (jobId, reason) => running.get(jobId)?.abort(new Error(reason)),
    }))

  const service = {
    id: 'pier-connector',
    async start(ctx) {
      try {
        const w = getWorker()
        if (w.running) return
        await w.start()
        state.lastError = null
        ctx?.serviceHealth?.clearFailure?.()
        const s = w.status()
        log.info(`worker ${s.workerId} taking jobs on ${s.subject} (queue ${s.queueGroup}) via ${s.servers}`)
      } catch (error) {
        state.lastError = error.message
        log.error(`worker failed to start: ${error.message}`)
        ctx?.serviceHealth?.reportFailure?.(error)
        throw error
      }
    },
    async stop() {
      if (!worker?.running) return
      log.info('stopping: draining in-flight jobs')
      await worker.stop()
      const { stats } = worker.status()
      log.info(`stopped; ${stats.received} jobs received, ${stats.completed} completed, ${stats.failed} failed`)
    },
  }
  return { service, state, getWorker, isRunning: () => Boolean(worker?.running) }
}
