// Benchmark contender: this project's native worker with a JS handler.
import { createRequire } from 'node:module'
import { workerOptions, blockEventLoop, onTerminate } from './worker-options.mjs'

const options = workerOptions()
const { PierWorker } = createRequire(import.meta.url)(options.addon ?? '../index.js')
const config = {
  natsUrl: options.url,
  subject: options.subject,
  workerId: 'addon',
  maxConcurrentJobs: options.maxConcurrent,
  jobTimeoutMs: 60_000,
  ...(options.signingSeed ? { signingSeed: options.signingSeed } : {}),
  // Checked for every job, never reached (the handlers report no usage; 4e9 a minute).
  ...(options.admissionChecks ? { maxDailySpend: 1e9, maxDailyTokens: 4e9, senderJobsPerMinute: 4e9, unsignedJobsPerMinute: 4e9 } : {}),
}
// --native: the worker's own Rust echo handler, to separate the worker's cost from the JS call.
const worker = options.native
  ? PierWorker.echo(config, { logger: () => {}, logLevel: 'warn' })
  : new PierWorker(config, (job) => options.handler(job.task), { logger: () => {}, logLevel: 'warn' })
await worker.start()
if (options.blockEventLoop) blockEventLoop()
onTerminate(async () => {
  const { stats } = worker.status()
  await worker.stop()
  return { disconnects: stats.disconnects, slowConsumerEvents: stats.slowConsumerEvents }
})
console.log('ready')
