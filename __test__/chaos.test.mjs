// A 3-node JetStream cluster and 3 worker processes under load, while `kill -9` takes out the
// job stream's leader, a worker and another node, each restarted: with an R3 stream no job is
// lost, every job is answered at least once (read from the requester's own results stream,
// where the job id as Nats-Msg-Id folds a rerun's second answer), and the restarted worker
// serves again. The same cluster in core mode shows what a worker killed mid-job costs: the
// jobs it held, and nothing else. The requester is nats.js, not our publisher.
import { it, after } from 'node:test'
import assert from 'node:assert/strict'
import { connect } from '@nats-io/transport-node'
import { startJetStreamCluster } from './helpers/nats-server.mjs'
import { jetStreamOf, publishConfirmed, retrying, streamLeader } from './helpers/jetstream.mjs'
import { startWorkerProcess } from './helpers/worker-process.mjs'
import { waitFor, sleep } from './helpers/wait.mjs'

const cleanups = []
after(async () => {
  for (const c of cleanups.reverse()) await c()
})

const encoder = new TextEncoder()
const decoder = new TextDecoder()

/** Messages the cluster's servers delivered to the (closed) connection named `name`. */
async function deliveredTo(cluster, name) {
  let delivered = 0
  for (const node of cluster.nodes) {
    const connz = await (await fetch(`${node.monitorUrl}/connz?state=closed&limit=10000`)).json()
    for (const c of connz.connections ?? []) if (c.name === name) delivered += c.out_msgs
  }
  return delivered
}

function startWorker(config, delayMs) {
  const worker = startWorkerProcess(config, delayMs)
  cleanups.push(() => worker.kill())
  return worker
}

it('JetStream on a 3-node cluster: leader, worker and node killed under load, no job lost', async () => {
  const cluster = await startJetStreamCluster(3)
  cleanups.push(() => cluster.stop())
  const nc = await connect({ servers: cluster.urls, reconnectTimeWait: 100, maxReconnectAttempts: -1 })
  cleanups.push(() => nc.close())
  const { jsm, js } = await jetStreamOf(nc)

  // The requester keeps results in a stream of its own (R3).
  await retrying(() => jsm.streams.add({ name: 'RESULTS', subjects: ['results.>'], num_replicas: 3, duplicate_window: 120e9 }))
  // A job stream made by hand with one replica: the workers raise it to streamReplicas.
  await retrying(() => jsm.streams.add({ name: 'CHAOS_JOBS', subjects: ['jobs.chaos'], retention: 'workqueue', num_replicas: 1 }))

  const config = (workerId) => ({
    servers: cluster.urls,
    workerId,
    subject: 'jobs.chaos',
    delivery: 'jetstream',
    streamName: 'CHAOS_JOBS',
    consumerName: 'chaos-workers',
    streamReplicas: 3,
    resultSubject: 'results',
    ackWaitMs: 15000,
    maxConcurrentJobs: 8,
    discovery: false,
  })
  const workers = ['w1', 'w2', 'w3'].map((id) => startWorker(config(id), 50))
  await Promise.all(workers.map((w) => w.ready))

  const jobs = await streamLeader(jsm, 'CHAOS_JOBS')
  assert.equal(jobs.config.num_replicas, 3, 'the hand-made R1 stream was raised to streamReplicas 3')
  const consumer = await jsm.consumers.info('CHAOS_JOBS', 'chaos-workers')
  assert.equal(consumer.cluster.replicas?.length, 2, 'the consumer follows the stream: a leader and 2 replicas')

  // Every answer the requester sees (reruns included), besides what its stream keeps.
  const seen = new Map()
  const sub = nc.subscribe('results.>', {
    callback: (_e, m) => {
      const r = JSON.parse(decoder.decode(m.data))
      seen.set(r.id, (seen.get(r.id) ?? 0) + 1)
    },
  })
  cleanups.push(() => sub.unsubscribe())

  const total = 800
  const ids = Array.from({ length: total }, (_, i) => `c${i}`)
  const started = Date.now()
  const publishing = (async () => {
    for (const [i, id] of ids.entries()) {
      const due = started + i * 25 // 40 jobs/s for 20 s
      if (due > Date.now()) await sleep(due - Date.now())
      const job = { version: '1.0', id, type: 'task_request', task: `t${i}` }
      await publishConfirmed(js, 'jobs.chaos', encoder.encode(JSON.stringify(job)), id)
    }
  })()

  const events = []
  const at = (ms) => sleep(Math.max(0, started + ms - Date.now()))
  await at(3000)
  const leader = (await streamLeader(jsm, 'CHAOS_JOBS')).cluster.leader
  await cluster.node(leader).kill()
  events.push(`killed stream leader ${leader}`)
  await sleep(3000)
  await cluster.node(leader).restart()
  await at(8000)
  await workers[0].kill()
  events.push('killed worker w1')
  await sleep(2000)
  const restarted = startWorker(config('w1b'), 50)
  await restarted.ready
  await at(13000)
  const other = cluster.nodes.find((n) => n.name !== leader).name
  await cluster.node(other).kill()
  events.push(`killed node ${other}`)
  await sleep(3000)
  await cluster.node(other).restart()
  await publishing

  // Every answer, read from the requester's own results stream: what a requester that was
  // itself cut off by a node kill still gets (its core subscription misses what came meanwhile).
  await waitFor(async () => (await streamLeader(jsm, 'RESULTS')).state.messages >= total, { timeout: 60_000, interval: 250 }).catch(() => {})
  const kept = new Map()
  const reader = await retrying(() => js.consumers.get('RESULTS'))
  const messages = await retrying(() => reader.consume())
  const giveUp = setTimeout(() => messages.stop(), 20_000)
  for await (const m of messages) {
    const r = m.json()
    kept.set(r.id, (kept.get(r.id) ?? 0) + 1)
    if (m.info.pending === 0 && (await streamLeader(jsm, 'RESULTS')).state.last_seq <= m.seq) break
  }
  clearTimeout(giveUp)
  const missing = ids.filter((id) => !kept.has(id))
  assert.deepEqual(missing, [], `every job answered, in the results stream (${events.join(', ')})`)
  const keptTwice = [...kept.values()].filter((n) => n > 1).length
  // Two different things a requester may see twice:
  // - a job run twice (its handler started twice, by one worker or two): what costs the operator.
  //   It is redelivered when its worker was killed holding it, or when its ack never reached the
  //   stream (the worker retries the ack through an election for up to 15 s). A tenth of the jobs
  //   is far above what a run shows (2 to 9, with the killed worker's);
  // - one answer published more than once: the worker publishes into the requester's results
  //   stream until a PubAck confirms it, and while that stream has no leader (the node killed led
  //   it too, one run in three) every attempt reaches the core subscribers and none is
  //   confirmed. The stream keeps one (Nats-Msg-Id); a core subscriber sees each attempt. A run
  //   where the killed node led both streams saw 382 such copies and 1 job run twice.
  const runs = new Map()
  for (const w of [...workers, restarted]) for (const id of w.got()) runs.set(id, (runs.get(id) ?? 0) + 1)
  const ranTwice = [...runs.values()].reduce((a, n) => a + n - 1, 0)
  const copies = [...seen.values()].reduce((a, n) => a + n - 1, 0)
  // When the jobs answered more than once were published (second of the run: count), beside
  // the kills at 3, 8 and 13 s.
  const bySecond = {}
  for (const [id, n] of seen) if (n > 1 && /^c\d+$/.test(id)) bySecond[Math.floor(Number(id.slice(1)) / 40)] = (bySecond[Math.floor(Number(id.slice(1)) / 40)] ?? 0) + n - 1
  const why = `${ranTwice} jobs run twice, ${copies} answers seen again; by second published: ${JSON.stringify(bySecond)}; ${events.join(', ')}`
  console.log(`# ${why}`)
  assert.ok(ranTwice <= total / 10, `jobs run twice bounded: ${why}`)
  assert.equal(keptTwice, 0, `the stream kept each job's answer once (${why})`)
  const left = await waitFor(async () => {
    const info = await streamLeader(jsm, 'CHAOS_JOBS')
    return info.state.messages === 0 ? info : null
  }, { timeout: 20_000, interval: 250 }).catch(() => null)
  assert.ok(left, 'every job was acked and left the work queue')
  // The restarted worker serves: with the two others gone, it answers new jobs alone.
  await Promise.all([workers[1].kill(), workers[2].kill()])
  const more = ['after-1', 'after-2', 'after-3']
  for (const id of more) {
    await publishConfirmed(js, 'jobs.chaos', encoder.encode(JSON.stringify({ version: '1.0', id, type: 'task_request', task: id })), id)
  }
  await waitFor(() => more.every((id) => seen.has(id)), { timeout: 30_000, interval: 100 }).catch(() => {})
  assert.deepEqual(more.filter((id) => !restarted.got().includes(id)), [], `the restarted worker serves again:\n${restarted.err()}`)
  console.log(`chaos: ${total} jobs, ${ranTwice} run twice, ${copies} answers seen again, ${keptTwice} kept twice; ${events.join(', ')}; ${Date.now() - started} ms`)
})

it('core mode on the same kind of cluster: a worker killed mid-job loses only the jobs it held', async () => {
  const cluster = await startJetStreamCluster(3)
  cleanups.push(() => cluster.stop())
  const config = (workerId) => ({
    servers: cluster.urls,
    workerId,
    subject: 'jobs.chaoscore',
    maxConcurrentJobs: 16,
    discovery: false,
  })
  const workers = ['k1', 'k2', 'k3'].map((id) => startWorker(config(id), 400))
  await Promise.all(workers.map((w) => w.ready))
  const nc = await connect({ servers: cluster.urls })
  cleanups.push(() => nc.close())

  const total = 240
  const outcome = new Map()
  const answeredBy = new Map()
  const started = Date.now()
  const requests = []
  for (let i = 0; i < total; i++) {
    const id = `k${i}`
    const due = started + i * 25
    if (due > Date.now()) await sleep(due - Date.now())
    const job = { version: '1.0', id, type: 'task_request', task: `t${i}` }
    requests.push(
      nc.request('jobs.chaoscore', encoder.encode(JSON.stringify(job)), { timeout: 4000 }).then(
        (m) => {
          const reply = JSON.parse(decoder.decode(m.data))
          outcome.set(id, reply.ok ? 'answered' : reply.error.code)
          answeredBy.set(id, reply.worker?.id)
        },
        () => outcome.set(id, 'lost'),
      ),
    )
    if (i === 120) {
      // Nothing in flight to it but the jobs it runs: those are what a crash costs.
      await sleep(200)
      await workers[0].kill()
    }
  }
  await Promise.all(requests)
  const lost = [...outcome].filter(([, o]) => o === 'lost').map(([id]) => id)
  assert.ok(workers[0].got().length > 0, 'the killed worker held jobs')
  // What the killed worker held is what the servers delivered to it, by their own count of its
  // closed connection: the jobs it started, and those still in its socket or queue when it died
  // (which it never logged). Lost are exactly those it held and never answered.
  // One of the messages it got is not a job: the round trip to its own inbox that checks its
  // subscription once connected (src/delivery/subscription.rs).
  const delivered = (await deliveredTo(cluster, 'pier-worker k1')) - 1
  const answeredByKilled = [...answeredBy.values()].filter((w) => w === 'k1').length
  assert.equal(lost.length, delivered - answeredByKilled, `only jobs the killed worker held are lost: ${delivered} jobs delivered to it, ${answeredByKilled} answered by it, lost ${lost}`)
  // Every other request is answered: a result, or OVERLOADED from a worker whose slots were
  // all taken (the requester retries elsewhere).
  const others = [...outcome.values()].filter((o) => o !== 'lost')
  assert.deepEqual(others.filter((o) => o !== 'answered' && o !== 'OVERLOADED'), [])
  assert.equal(others.length, total - lost.length)
  console.log(`core: ${total} requests, ${lost.length} lost with the killed worker (${delivered} delivered to it in all)`)
})
