// Scale-out on a 3-node JetStream cluster: jobs/s with 1, 2 and 4 worker processes (16 slots
// each, a 200 ms handler, so the work is bound by concurrency and the ideal is linear), the
// time from publish to the start of a job at half the ideal rate, and how long the workers
// take to resume after the job stream's leader is killed. Prints a markdown section for
// bench/RESULTS.md.
//
//   node bench/scale.mjs            (about 2 minutes; needs the release addon: scripts/build.sh)
import { connect } from '@nats-io/transport-node'
import { jetstreamManager } from '@nats-io/jetstream'
import { startJetStreamCluster } from '../__test__/helpers/nats-server.mjs'
import { jetStreamOf, publishConfirmed, streamLeader } from '../__test__/helpers/jetstream.mjs'
import { startWorkerProcess } from '../__test__/helpers/worker-process.mjs'
import { sleep, waitFor } from '../__test__/helpers/wait.mjs'

const SLOTS = 16
const HANDLER_MS = 200
const IDEAL_PER_WORKER = (SLOTS * 1000) / HANDLER_MS // 80 jobs/s
const SECONDS = Number(process.env.PIER_SCALE_SECONDS ?? 8)
const encoder = new TextEncoder()

const cluster = await startJetStreamCluster(3)
const nc = await connect({ servers: cluster.urls, reconnectTimeWait: 100, maxReconnectAttempts: -1 })
const { jsm, js } = await jetStreamOf(nc)
// Asks often during an election, where a request to the dead leader is never answered.
const probe = await jetstreamManager(nc, { timeout: 300 })
let round = 0

function percentile(values, p) {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]
}

/** `count` workers on a fresh R3 job stream of their own; `run(ctx)` measures; then stop. */
async function withWorkers(count, run) {
  round += 1
  const subject = `jobs.scale${round}`
  const config = (i) => ({
    servers: cluster.urls,
    workerId: `s${round}-${i}`,
    subject,
    delivery: 'jetstream',
    streamName: `SCALE${round}`,
    consumerName: 'scale',
    streamReplicas: 3,
    resultSubject: `results.scale${round}`,
    maxConcurrentJobs: SLOTS,
    ackWaitMs: 5000,
    discovery: false,
  })
  const workers = Array.from({ length: count }, (_, i) => startWorkerProcess(config(i), HANDLER_MS))
  await Promise.all(workers.map((w) => w.ready))
  const answered = new Map()
  const sub = nc.subscribe(`results.scale${round}.>`, {
    callback: (_e, m) => {
      const id = m.subject.split('.').pop()
      if (!answered.has(id)) answered.set(id, Date.now())
    },
  })
  try {
    return await run({ subject, workers, answered, stream: `SCALE${round}` })
  } finally {
    sub.unsubscribe()
    await Promise.all(workers.map((w) => w.kill()))
    await jsm.streams.delete(`SCALE${round}`).catch(() => {})
  }
}

async function publish(subject, id) {
  const job = { version: '1.0', id, type: 'task_request', task: 'x' }
  await publishConfirmed(js, subject, encoder.encode(JSON.stringify(job)), id)
}

/** Jobs/s with the stream kept full: every job published first, then drained. */
async function throughput(count) {
  const total = Math.round(IDEAL_PER_WORKER * count * SECONDS)
  return withWorkers(count, async ({ subject, workers, answered }) => {
    const ids = Array.from({ length: total }, (_, i) => `t${i}`)
    for (const id of ids) await publish(subject, id)
    await waitFor(() => answered.size === total, { timeout: SECONDS * 1000 * 4 + 30_000, interval: 50 })
    const starts = workers.flatMap((w) => w.starts())
    const first = Math.min(...starts.map((s) => s.at))
    const last = Math.max(...answered.values())
    const jobsPerSecond = total / ((last - first) / 1000)
    return { total, jobsPerSecond, efficiency: jobsPerSecond / (IDEAL_PER_WORKER * count) }
  })
}

/** Time from publish to the start of the job, at half the ideal rate. */
async function latency(count) {
  const rate = (IDEAL_PER_WORKER * count) / 2
  const total = Math.round(rate * SECONDS)
  return withWorkers(count, async ({ subject, workers, answered }) => {
    const published = new Map()
    const begin = Date.now()
    for (let i = 0; i < total; i++) {
      const due = begin + (i * 1000) / rate
      if (due > Date.now()) await sleep(due - Date.now())
      const id = `l${i}`
      published.set(id, Date.now())
      await publish(subject, id)
    }
    await waitFor(() => answered.size === total, { timeout: 60_000, interval: 50 })
    const waits = workers.flatMap((w) => w.starts()).map((s) => s.at - published.get(s.id))
    return { rate, p50: percentile(waits, 50), p99: percentile(waits, 99) }
  })
}

/** Kills the job stream's leader under a steady flow; the longest pause in job starts. */
async function leaderKill() {
  return withWorkers(2, async ({ subject, workers, answered, stream }) => {
    const rate = IDEAL_PER_WORKER // half of two workers' ideal
    const total = Math.round(rate * 10)
    const begin = Date.now()
    let killedAt = 0
    const flow = (async () => {
      for (let i = 0; i < total; i++) {
        const due = begin + (i * 1000) / rate
        if (due > Date.now()) await sleep(due - Date.now())
        await publish(subject, `k${i}`)
      }
    })()
    await sleep(3000)
    const leader = (await streamLeader(jsm, stream)).cluster.leader
    killedAt = Date.now()
    await cluster.node(leader).kill()
    // When the cluster names a new leader: the part of the pause that is the election itself.
    let electedMs = null
    while (electedMs === null) {
      const info = await probe.streams.info(stream).catch(() => null)
      if (info?.cluster?.leader && info.cluster.leader !== leader) electedMs = Date.now() - killedAt
      else await sleep(50)
    }
    await flow
    await cluster.node(leader).restart()
    await waitFor(() => answered.size === total, { timeout: 60_000, interval: 50 })
    const after = workers
      .flatMap((w) => w.starts())
      .map((s) => s.at)
      .filter((at) => at >= killedAt)
      .sort((a, b) => a - b)
    let pause = after[0] - killedAt
    for (let i = 1; i < after.length; i++) pause = Math.max(pause, after[i] - after[i - 1])
    return { leader, pauseMs: pause, electedMs }
  })
}

const rows = []
for (const count of process.env.PIER_SCALE_ONLY === 'kill' ? [] : [1, 2, 4]) {
  const t = await throughput(count)
  console.error(`${count} worker(s): ${t.jobsPerSecond.toFixed(1)} jobs/s, efficiency ${t.efficiency.toFixed(3)}`)
  const l = await latency(count)
  console.error(`${count} worker(s): publish -> start p50 ${l.p50} ms, p99 ${l.p99} ms at ${l.rate} jobs/s`)
  rows.push({ count, ...t, ...l })
}
const kills = []
for (let i = 0; i < 3; i++) {
  const k = await leaderKill()
  console.error(`stream leader ${k.leader} killed: new leader after ${k.electedMs} ms, longest pause in job starts ${k.pauseMs} ms`)
  kills.push(k)
}
await nc.close()
await cluster.stop()

const lines = [
  '| workers (16 slots each) | jobs | jobs/s | ideal jobs/s | efficiency | publish → start p50 ms | p99 ms (at half the ideal rate) |',
  '| ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ...rows.map(
    (r) =>
      `| ${r.count} | ${r.total} | ${r.jobsPerSecond.toFixed(1)} | ${IDEAL_PER_WORKER * r.count} | ${r.efficiency.toFixed(3)} | ${r.p50} | ${r.p99} |`,
  ),
  '',
  `Stream leader killed under a steady flow (2 workers, ${IDEAL_PER_WORKER} jobs/s), 3 times: the cluster named a new leader after ${kills.map((k) => k.electedMs).join(' / ')} ms, and the longest pause in job starts was ${kills.map((k) => k.pauseMs).join(' / ')} ms.`,
]
console.log(lines.join('\n'))
