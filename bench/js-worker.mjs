// Benchmark contenders written in plain JS on @nats-io/transport-node:
//  --mode seed: the original plugin's loop (for await, parse, validate, await the handler,
//               build the reply) — one job at a time;
//  --mode best: the same work, but each message handled concurrently.
import { connect } from '@nats-io/transport-node'
import { randomUUID } from 'node:crypto'
import { workerOptions, blockEventLoop, onTerminate } from './worker-options.mjs'

const options = workerOptions()
const nc = await connect({ servers: options.url })
const counters = { disconnects: 0, slowConsumerEvents: 0 }
;(async () => {
  for await (const s of nc.status()) {
    if (s.type === 'disconnect') counters.disconnects++
    if (s.type === 'slowConsumer') counters.slowConsumerEvents++
  }
})()

const worker = { id: `js-${options.mode}`, wallet: null }
const errorReply = (id, code, message) =>
  JSON.stringify({ version: '1.0', id, type: 'task_error', ok: false, error: { code, message }, worker })

function parse(msg) {
  let payload
  try {
    payload = JSON.parse(msg.string())
  } catch (e) {
    return { error: errorReply(null, 'PARSE_ERROR', e.message) }
  }
  if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) {
    return { error: errorReply(null, 'PARSE_ERROR', 'payload must be a JSON object') }
  }
  const task = payload.type === 'task_request' ? payload.task : (payload.task ?? payload.prompt ?? payload.content)
  if (typeof task !== 'string' || !task) return { error: errorReply(payload.id ?? null, 'INVALID_REQUEST', 'no task') }
  return { job: { id: payload.id || randomUUID(), task, meta: payload.meta || {} } }
}

async function handle(msg) {
  const start = performance.now()
  const { job, error } = parse(msg)
  if (error) return msg.respond(error)
  const result = await options.handler(job.task)
  msg.respond(
    JSON.stringify({
      version: '1.0', id: job.id, type: 'task_result', ok: true, result,
      latencyMs: Math.round(performance.now() - start), worker,
    }),
  )
}

const sub = nc.subscribe(options.subject, { queue: 'openclaw-workers' })
await nc.flush()
if (options.blockEventLoop) blockEventLoop()
onTerminate(async () => {
  await nc.drain()
  return counters
})
console.log('ready')
for await (const msg of sub) {
  if (options.mode === 'seed') await handle(msg)
  else handle(msg)
}
