// Malformed header blocks from the outside: a publisher that writes raw NATS protocol frames with
// malformed header blocks (HPUB), interleaved with valid requests, to a CLI worker. The worker
// must stay connected, answer every valid job, and answer each bad one INVALID_REQUEST.
import { it, after } from 'node:test'
import assert from 'node:assert/strict'
import { startNatsServer } from './helpers/nats-server.mjs'
import { rawNats, startCliWorker, waitFor, sleep } from './conformance/harness.mjs'

const cleanups = []
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup()
})

// Four kinds of malformed header block; nats-server forwards a header block as it is.
const MALFORMED = [
  ['a header line without a colon', 'NATS/1.0\r\nno colon on this line\r\n\r\n'],
  ['a version line other than NATS/1.0', 'NATS/2.0\r\nA: b\r\n\r\n'],
  ['an empty header block', '\r\n\r\n'],
  ['a non-UTF-8 value', Buffer.concat([Buffer.from('NATS/1.0\r\nA: '), Buffer.from([0xff, 0xfe]), Buffer.from('\r\n\r\n')])],
]

async function setUp() {
  const server = await startNatsServer()
  cleanups.push(() => server.stop())
  const worker = await startCliWorker(server.url, ['--echo', '--worker-id', 'hdr', '--max-concurrent-jobs', '64'], cleanups)
  const raw = await rawNats(server.port)
  cleanups.push(() => raw.close())
  return { server, worker, raw }
}

it('100 malformed-header messages among 100 valid requests: 100/100 answered, 0 reconnects, bad ones INVALID_REQUEST', async (t) => {
  const { worker, raw } = await setUp()
  const replies = new Map()
  // An empty 503 status message is the server's "no responders": the worker was away.
  raw.subscribe('_FLOOD.>', (m) => replies.set(m.subject, m.payload.length ? JSON.parse(m.payload.toString('utf8')) : { noResponders: true }))
  await raw.flush()

  // Alternating, one message every 2 ms (a busy requester, not one burst): a worker that drops
  // its connection on a bad message loses what arrives before it is back.
  for (let i = 0; i < 100; i++) {
    const [, header] = MALFORMED[i % MALFORMED.length]
    const bad = JSON.stringify({ version: '1.0', id: `bad${i}`, type: 'task_request', task: 'x' })
    await raw.write(raw.hpubFrame('jobs.worker', `_FLOOD.bad.${i}`, header, bad))
    await sleep(2)
    const valid = JSON.stringify({ version: '1.0', id: `ok${i}`, type: 'task_request', task: `valid ${i}` })
    await raw.write(raw.pubFrame('jobs.worker', `_FLOOD.ok.${i}`, valid))
    await sleep(2)
  }
  await raw.flush()
  // Every answer, or 3 s without a new one.
  let seen = -1
  let quietSince = Date.now()
  await waitFor(
    () => {
      if (replies.size !== seen) [seen, quietSince] = [replies.size, Date.now()]
      return replies.size === 200 || Date.now() - quietSince > 3000
    },
    { timeout: 30_000, interval: 50 },
  )
  // A worker that dropped its connection may still be reconnecting: let it settle before reading.
  await waitFor(async () => (await worker.status()).state === 'connected', { timeout: 10_000, interval: 200 }).catch(() => {})
  const { stats } = await worker.status()

  const validAnswered = [...Array(100).keys()].filter((i) => replies.get(`_FLOOD.ok.${i}`)?.result === `valid ${i}`).length
  const badRefused = [...Array(100).keys()].filter((i) => replies.get(`_FLOOD.bad.${i}`)?.error?.code === 'INVALID_REQUEST')
  const refusedByKind = MALFORMED.map(([kind], k) => `${kind}: ${badRefused.filter((i) => i % MALFORMED.length === k).length}/25`)
  const noResponders = [...replies.values()].filter((r) => r.noResponders).length
  t.diagnostic(
    `valid answered ${validAnswered}/100 (no responders: ${noResponders} requests); bad answered INVALID_REQUEST ${badRefused.length}/100 ` +
      `(${refusedByKind.join(', ')}); worker disconnects ${stats.disconnects}, reconnects ${stats.reconnects}`,
  )
  assert.equal(validAnswered, 100, 'every valid request is answered')
  assert.equal(stats.reconnects, 0, 'the worker never reconnects')
  assert.equal(stats.disconnects, 0, 'the worker never disconnects')
  assert.equal(badRefused.length, 100, 'each bad-header message with a reply subject is answered INVALID_REQUEST')
  for (const i of badRefused) {
    const reply = replies.get(`_FLOOD.bad.${i}`)
    assert.equal(reply.type, 'task_error')
    assert.equal(reply.id, `bad${i}`, 'the id is echoed (the payload is readable)')
    assert.doesNotMatch(reply.error.message, /\n/)
  }
  assert.equal((await worker.stop()).code, 0)
})

it('bad-header messages without a reply subject are counted (noReply), never run, and cost no reconnect', async (t) => {
  const { worker, raw } = await setUp()
  const frames = MALFORMED.map(([, header], k) => raw.hpubFrame('jobs.worker', undefined, header, JSON.stringify({ id: `nr${k}`, task: 'x' })))
  await raw.write(Buffer.concat(frames))
  await raw.flush()
  const valid = await raw.request('jobs.worker', JSON.stringify({ id: 'after', task: 'answered' }), { timeout: 3000 }).catch((error) => ({ lost: error.message }))
  await waitFor(async () => (await worker.status()).stats.noReply === MALFORMED.length, { timeout: 3000, interval: 100 }).catch(() => {})
  const { stats } = await worker.status()
  t.diagnostic(`noReply ${stats.noReply}, completed ${stats.completed}, reconnects ${stats.reconnects}; valid: ${JSON.stringify(valid.result ?? valid)}`)
  assert.equal(valid.result, 'answered')
  assert.equal(stats.noReply, MALFORMED.length)
  assert.equal(stats.completed, 1, 'only the valid job ran')
  assert.equal(stats.reconnects, 0)
  assert.equal((await worker.stop()).code, 0)
})

it('JetStream: stored jobs with malformed headers are answered INVALID_REQUEST once, not redelivered, no reconnect', async (t) => {
  const server = await startNatsServer({ jetstream: true })
  cleanups.push(() => server.stop())
  const worker = await startCliWorker(
    server.url,
    ['--echo', '--delivery', 'jetstream', '--subject', 'jobs.hdrjs', '--result-subject', 'results', '--ack-wait-ms', '1000'],
    cleanups,
  )
  const raw = await rawNats(server.port)
  cleanups.push(() => raw.close())
  const answers = []
  raw.subscribe('results.>', (m) => answers.push({ subject: m.subject, body: JSON.parse(m.payload.toString('utf8')) }))
  await raw.flush()
  // nats-server stores the header block as it is; the worker meets it when it pulls the job.
  for (const [k, [, header]] of MALFORMED.entries()) {
    await raw.write(raw.hpubFrame('jobs.hdrjs', undefined, header, JSON.stringify({ id: `js${k}`, task: 'x' })))
  }
  await raw.write(raw.pubFrame('jobs.hdrjs', undefined, JSON.stringify({ id: 'jsok', task: 'fine' })))
  await raw.flush()
  await waitFor(() => answers.length >= MALFORMED.length + 1, { timeout: 5000 }).catch(() => {})
  await sleep(1500) // past an ack wait: a job left unacked would come again
  const { stats } = await worker.status()
  t.diagnostic(`answers ${answers.length} (${answers.map((a) => a.body.error?.code ?? a.body.result).join(', ')}); reconnects ${stats.reconnects}`)
  assert.equal(answers.length, MALFORMED.length + 1, 'one answer per job')
  assert.deepEqual(answers.find((a) => a.body.id === 'jsok')?.body.result, 'fine')
  for (const k of MALFORMED.keys()) {
    const answer = answers.find((a) => a.body.id === `js${k}`)
    assert.equal(answer?.subject, `results.js${k}`)
    assert.equal(answer.body.error.code, 'INVALID_REQUEST')
  }
  assert.deepEqual([stats.disconnects, stats.reconnects], [0, 0])
  assert.equal((await worker.stop()).code, 0)
})

it('a header value with a lone CR (async-nats 0.51 panics on it) neither stops nor disconnects the worker', async (t) => {
  const { worker, raw } = await setUp()
  const bad = await raw
    .request('jobs.worker', JSON.stringify({ id: 'cr', task: 'x' }), { headers: 'NATS/1.0\r\nA: x\ry\r\n\r\n', timeout: 2000 })
    .catch((error) => ({ lost: error.message }))
  const valid = await raw.request('jobs.worker', JSON.stringify({ id: 'after', task: 'still here' }), { timeout: 3000 }).catch((error) => ({ lost: error.message }))
  const { stats, state } = await worker.status()
  t.diagnostic(`bad: ${JSON.stringify(bad.error ?? bad)}; valid: ${JSON.stringify(valid.result ?? valid)}; state ${state}, reconnects ${stats.reconnects}`)
  assert.equal(valid.result, 'still here')
  assert.equal(bad.error?.code, 'INVALID_REQUEST')
  assert.equal(stats.reconnects, 0)
  assert.equal((await worker.stop()).code, 0)
})
