// The worker against a real nats-server: protocol behaviour, every error code, deadlines,
// backpressure, drain and restart.
import { describe, it, after } from 'node:test'
import assert from 'node:assert/strict'
import { PierWorker, useNats, request, waitFor, sleep, gatedHandler, memoryLogger } from './helpers/addon.mjs'

const workers = []
after(async () => {
  // A failed assertion must not leave a running worker holding the process open.
  await Promise.all(workers.map((w) => w.stop()))
})
const nats = useNats({ websocket: true, maxPayload: 4 * 1024 * 1024 })
let subjectSeq = 0

/** Each test gets its own subject so workers of different tests never share jobs. */
async function startWorker(config = {}, handler = async (job) => `echo:${job.task}`, options = {}) {
  const subject = `jobs.test${++subjectSeq}`
  const logger = memoryLogger()
  const worker = new PierWorker(
    { natsUrl: nats.server.url, subject, workerId: 'agent-001', walletAddress: '0xABC123', ...config },
    handler,
    { logger, ...options },
  )
  workers.push(worker)
  await worker.start()
  return { worker, subject, logger }
}

describe('task_request v1', () => {
  it('answers a task_result with the handler text, latency and worker identity', async () => {
    const seen = []
    const { worker, subject } = await startWorker({}, async (job) => {
      seen.push(job)
      return `echo:${job.task}`
    })
    const reply = await request(nats.nc, subject, {
      version: '1.0', id: 'job-1', type: 'task_request', task: 'hello',
      systemPrompt: 'be brief', timeoutMs: 3000, meta: { sender: 'user123', price: 50 },
    })
    assert.deepEqual(Object.keys(reply).sort(), ['id', 'latencyMs', 'ok', 'result', 'type', 'version', 'worker'])
    assert.equal(reply.version, '1.0')
    assert.equal(reply.id, 'job-1')
    assert.equal(reply.type, 'task_result')
    assert.equal(reply.ok, true)
    assert.equal(reply.result, 'echo:hello')
    assert.equal(typeof reply.latencyMs, 'number')
    assert.deepEqual(reply.worker, { id: 'agent-001', wallet: '0xABC123' })
    assert.equal(seen[0].systemPrompt, 'be brief')
    assert.equal(seen[0].sender, 'user123')
    assert.deepEqual(seen[0].meta, { sender: 'user123', price: 50 })
    assert.ok(seen[0].timeoutMs > 2500 && seen[0].timeoutMs <= 3000, `timeoutMs ${seen[0].timeoutMs}`)
    await worker.stop()
  })

  it('hands the job over with unset fields absent and meta keys as plain data', async () => {
    const seen = []
    const { worker, subject } = await startWorker({}, (job) => {
      seen.push(job)
      return 'ok'
    })
    const payload = '{"id":"j2","task":"t \\u2028 \\ud83d\\ude00","meta":{"__proto__":{"polluted":true},"n":[1,{"k":null}]}}'
    assert.equal((await request(nats.nc, subject, payload)).result, 'ok')
    const [job] = seen
    assert.deepEqual(Object.keys(job).sort(), ['id', 'meta', 'runKey', 'task', 'timeoutMs'])
    assert.match(job.runKey, /^[A-Za-z0-9_-]{22,}$/, "the worker's own name for the run")
    assert.equal(job.task, 't \u2028 \u{1F600}')
    assert.equal(Object.getPrototypeOf(job.meta), Object.prototype)
    assert.equal(job.meta.polluted, undefined)
    assert.deepEqual(Object.getOwnPropertyDescriptor(job.meta, '__proto__').value, { polluted: true })
    assert.deepEqual(job.meta.n, [1, { k: null }])
    assert.equal({}.polluted, undefined)
    await worker.stop()
  })

  it('defaults worker id and wallet like the original plugin', async () => {
    const { worker, subject } = await startWorker({ workerId: '', walletAddress: '' })
    const reply = await request(nats.nc, subject, { type: 'task_request', id: 'x', task: 't' })
    assert.deepEqual(reply.worker, { id: 'anonymous-worker', wallet: null })
    await worker.stop()
  })

  it('accepts a handler that returns a string synchronously', async () => {
    const { worker, subject } = await startWorker({}, (job) => job.task.toUpperCase())
    const reply = await request(nats.nc, subject, { task: 'abc' })
    assert.equal(reply.result, 'ABC')
    await worker.stop()
  })
})

describe('legacy payloads', () => {
  it('takes the first non-empty string of task, prompt, content and makes a UUID id', async () => {
    const { worker, subject } = await startWorker()
    for (const [payload, task] of [
      [{ prompt: 'from prompt' }, 'from prompt'],
      [{ content: 'from content' }, 'from content'],
      [{ task: '', prompt: 42, content: 'third' }, 'third'],
    ]) {
      const reply = await request(nats.nc, subject, payload)
      assert.equal(reply.type, 'task_result')
      assert.equal(reply.result, `echo:${task}`)
      assert.match(reply.id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
    }
    const reply = await request(nats.nc, subject, { id: 'legacy-1', task: 'kept id' })
    assert.equal(reply.id, 'legacy-1')
    await worker.stop()
  })
})

describe('malformed input never stops the worker', () => {
  it('answers each bad payload with the right task_error and then serves a valid job', async () => {
    const { worker, subject, logger } = await startWorker()
    const cases = [
      ['null', null, 'PARSE_ERROR'],
      ['[]', null, 'PARSE_ERROR'],
      ['"x"', null, 'PARSE_ERROR'],
      ['42', null, 'PARSE_ERROR'],
      ['not json', null, 'PARSE_ERROR'],
      [new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]), null, 'PARSE_ERROR'],
      ['{}', null, 'INVALID_REQUEST'],
      [JSON.stringify({ id: 'w1', type: 'task_request', task: 5 }), 'w1', 'INVALID_REQUEST'],
      [JSON.stringify({ id: 'w2', task: 't', timeoutMs: 'soon' }), 'w2', 'INVALID_REQUEST'],
      [JSON.stringify({ id: 'w3', task: 't', meta: 'x' }), 'w3', 'INVALID_REQUEST'],
      [JSON.stringify({ id: 'w4', task: 't', systemPrompt: [] }), 'w4', 'INVALID_REQUEST'],
      [JSON.stringify({ id: 7, task: 't' }), null, 'INVALID_REQUEST'],
      [JSON.stringify({ id: 'big', task: 'x'.repeat(2 * 1024 * 1024) }), null, 'PAYLOAD_TOO_LARGE'],
    ]
    for (const [payload, id, code] of cases) {
      const reply = await request(nats.nc, subject, payload)
      const label = typeof payload === 'string' ? payload.slice(0, 40) : 'bytes'
      assert.equal(reply.type, 'task_error', label)
      assert.equal(reply.ok, false, label)
      assert.equal(reply.id, id, label)
      assert.equal(reply.error.code, code, label)
      assert.equal(typeof reply.error.message, 'string')
      assert.ok(!reply.error.message.includes('\n'), 'one-line message')
      assert.deepEqual(reply.worker, { id: 'agent-001', wallet: '0xABC123' })
    }
    const ok = await request(nats.nc, subject, { type: 'task_request', id: 'after', task: 'still alive' })
    assert.equal(ok.result, 'echo:still alive')
    const { stats } = worker.status()
    assert.equal(stats.received, cases.length + 1)
    assert.equal(stats.completed, 1)
    assert.equal(stats.failed, cases.length)
    assert.equal(stats.errorsByCode.PAYLOAD_TOO_LARGE, 1)
    assert.ok(!logger.text().includes('x'.repeat(100)), 'no task body in logs')
    await worker.stop()
  })

  it('counts and logs a message without a reply subject, never running it', async () => {
    let ran = 0
    const { worker, subject, logger } = await startWorker({}, async () => {
      ran++
      return 'x'
    })
    nats.nc.publish(subject, JSON.stringify({ task: 'nobody listens' }))
    await waitFor(() => worker.status().stats.noReply === 1)
    assert.equal(ran, 0)
    assert.match(logger.text(), /no reply subject/)
    await worker.stop()
  })
})

describe('handler outcomes', () => {
  it('EXECUTION_FAILED from a rejected promise, with one line and no stack', async () => {
    const { worker, subject } = await startWorker({}, async () => {
      throw new Error('model exploded\n    at secretFunction (/home/x/app.js:1:1)')
    })
    const reply = await request(nats.nc, subject, { id: 'f1', task: 't' })
    assert.equal(reply.error.code, 'EXECUTION_FAILED')
    assert.equal(reply.id, 'f1')
    assert.match(reply.error.message, /model exploded/)
    assert.doesNotMatch(reply.error.message, /secretFunction|app\.js/)
    await worker.stop()
  })

  it('EXECUTION_FAILED from a synchronous throw and from a non-string result', async () => {
    const { worker, subject } = await startWorker({}, (job) => {
      if (job.task === 'throw') throw new Error('sync boom')
      return Promise.resolve(42)
    })
    assert.equal((await request(nats.nc, subject, { task: 'throw' })).error.code, 'EXECUTION_FAILED')
    assert.equal((await request(nats.nc, subject, { task: 'number' })).error.code, 'EXECUTION_FAILED')
    assert.equal((await request(nats.nc, subject, { task: 'ok?' })).type, 'task_error')
    await worker.stop()
  })

  it('reads any value a handler returns or throws, without spoiling the other jobs of its batch', async () => {
    const cyclic = { code: 'RUNTIME_UNAVAILABLE' }
    cyclic.self = cyclic
    const cases = {
      'rejects a string': [() => Promise.reject('plain words\nsecond line'), 'EXECUTION_FAILED', 'plain words'],
      'rejects null': [() => Promise.reject(null), 'EXECUTION_FAILED', 'the agent turn failed'],
      'throws a trap': [() => { throw { get message() { throw new Error('trap') } } }, 'EXECUTION_FAILED', 'the agent turn failed'],
      'error getter throws': [() => ({ get error() { throw new Error('trap') } }), 'EXECUTION_FAILED', /must return a string/],
      'cyclic error': [async () => ({ error: cyclic }), 'RUNTIME_UNAVAILABLE', 'the agent turn failed'],
      'bigint': [() => 10n, 'EXECUTION_FAILED', /must return a string/],
      'array error': [() => ({ error: ['x'] }), 'EXECUTION_FAILED', /must return a string/],
      'ok': [() => 'fine'],
    }
    const { worker, subject } = await startWorker({ maxConcurrentJobs: 16 }, (job) => cases[job.task][0]())
    const replies = await Promise.all(Object.keys(cases).map((task) => request(nats.nc, subject, { id: task, task })))
    for (const reply of replies) {
      const [, code, message] = cases[reply.id]
      if (!code) {
        assert.equal(reply.result, 'fine')
        continue
      }
      assert.equal(reply.error.code, code, reply.id)
      if (message instanceof RegExp) assert.match(reply.error.message, message, reply.id)
      else assert.equal(reply.error.message, message, reply.id)
    }
    await worker.stop()
  })

  it('RUNTIME_UNAVAILABLE when the handler says so', async () => {
    const { worker, subject } = await startWorker({}, async () => ({
      error: { code: 'RUNTIME_UNAVAILABLE', message: 'no agent runtime' },
    }))
    const reply = await request(nats.nc, subject, { id: 'r1', task: 't' })
    assert.deepEqual(reply.error, { code: 'RUNTIME_UNAVAILABLE', message: 'no agent runtime' })
    await worker.stop()
  })

  it('TIMEOUT when the handler reports its host cut the turn off', async () => {
    const { worker, subject } = await startWorker({}, async () => ({ error: { code: 'TIMEOUT', message: 'turn cut off' } }))
    assert.equal((await request(nats.nc, subject, { task: 't' })).error.code, 'TIMEOUT')
    assert.equal(worker.status().stats.timedOut, 1)
    await worker.stop()
  })

  it('a handler cannot claim a worker-owned code such as OVERLOADED', async () => {
    const { worker, subject } = await startWorker({}, async () => ({ error: { code: 'OVERLOADED', message: 'x' } }))
    assert.equal((await request(nats.nc, subject, { task: 't' })).error.code, 'EXECUTION_FAILED')
    await worker.stop()
  })

  it('UNAUTHORIZED for senders outside allowedSenders', async () => {
    const { worker, subject } = await startWorker({ allowedSenders: ['alice'] })
    const denied = await request(nats.nc, subject, { id: 'u1', task: 't', meta: { sender: 'mallory' } })
    assert.equal(denied.error.code, 'UNAUTHORIZED')
    assert.equal(denied.id, 'u1')
    assert.equal((await request(nats.nc, subject, { task: 't' })).error.code, 'UNAUTHORIZED')
    assert.equal((await request(nats.nc, subject, { task: 't', meta: { sender: 'alice' } })).result, 'echo:t')
    await worker.stop()
  })
})

describe('deadlines', () => {
  it('answers TIMEOUT at the request deadline and tells the handler to cancel', async () => {
    const cancelled = []
    const runKeys = []
    const { worker, subject } = await startWorker({}, (job) => {
      runKeys.push(job.runKey)
      return new Promise(() => {})
    }, {
      onCancel: (runKey, reason, id) => cancelled.push([runKey, reason, id]),
    })
    const start = Date.now()
    const reply = await request(nats.nc, subject, { id: 't1', type: 'task_request', task: 'slow', timeoutMs: 300 })
    const elapsed = Date.now() - start
    assert.equal(reply.error.code, 'TIMEOUT')
    assert.equal(reply.id, 't1')
    assert.ok(elapsed >= 290 && elapsed < 2000, `elapsed ${elapsed}`)
    await waitFor(() => cancelled.length === 1)
    assert.deepEqual(cancelled[0], [runKeys[0], 'TIMEOUT', 't1'])
    assert.equal(worker.status().stats.timedOut, 1)
    await worker.stop()
  })

  it('caps the request timeout at maxJobTimeoutMs and uses jobTimeoutMs when absent', async () => {
    const budgets = []
    const { worker, subject } = await startWorker({ jobTimeoutMs: 200, maxJobTimeoutMs: 400 }, (job) => {
      budgets.push(job.timeoutMs)
      return new Promise(() => {})
    })
    let start = Date.now()
    assert.equal((await request(nats.nc, subject, { task: 'a' })).error.code, 'TIMEOUT')
    assert.ok(Date.now() - start < 1500)
    start = Date.now()
    assert.equal((await request(nats.nc, subject, { task: 'b', timeoutMs: 60_000 })).error.code, 'TIMEOUT')
    const capped = Date.now() - start
    assert.ok(capped >= 390 && capped < 2000, `capped ${capped}`)
    assert.ok(budgets[0] <= 200 && budgets[1] <= 400, `${budgets}`)
    await worker.stop()
  })
})

describe('concurrency', () => {
  it('runs up to maxConcurrentJobs at once and answers OVERLOADED beyond that', async () => {
    const handler = gatedHandler()
    const { worker, subject } = await startWorker({ maxConcurrentJobs: 3 }, handler)
    const running = [1, 2, 3].map((i) => request(nats.nc, subject, { id: `c${i}`, task: `t${i}` }))
    await waitFor(() => handler.waiting.length === 3)
    const start = Date.now()
    const overloaded = await request(nats.nc, subject, { id: 'c4', task: 't4' })
    assert.equal(overloaded.error.code, 'OVERLOADED')
    assert.equal(overloaded.id, 'c4')
    assert.ok(Date.now() - start < 1000, 'refused at once')
    assert.equal(worker.status().stats.inFlight, 3)
    handler.releaseAll()
    const results = await Promise.all(running)
    assert.deepEqual(results.map((r) => r.result), ['done:t1', 'done:t2', 'done:t3'])
    // A job leaves inFlight once its handler call has returned, which may be just after its
    // answer has left.
    await waitFor(() => worker.status().stats.inFlight === 0)
    await worker.stop()
  })
})

describe('lifecycle', () => {
  it('stop() lets in-flight jobs finish within drainTimeoutMs', async () => {
    const { worker, subject } = await startWorker({ drainTimeoutMs: 5000 }, async (job) => {
      await sleep(300)
      return `slow:${job.task}`
    })
    const pending = [1, 2].map((i) => request(nats.nc, subject, { task: `d${i}` }))
    await waitFor(() => worker.status().stats.inFlight === 2)
    await worker.stop()
    const results = await Promise.all(pending)
    assert.deepEqual(results.map((r) => r.result), ['slow:d1', 'slow:d2'])
    assert.equal(worker.status().state, 'stopped')
  })

  it('stop() answers SHUTTING_DOWN to jobs still running after drainTimeoutMs, and resolves', async () => {
    const cancelled = []
    const { worker, subject } = await startWorker({ drainTimeoutMs: 200 }, () => new Promise(() => {}), {
      onCancel: (id, reason) => cancelled.push(reason),
    })
    const pending = request(nats.nc, subject, { id: 's1', task: 'forever', timeoutMs: 60_000 })
    await waitFor(() => worker.status().stats.inFlight === 1)
    const start = Date.now()
    await worker.stop()
    assert.ok(Date.now() - start < 3000, 'bounded stop')
    const reply = await pending
    assert.equal(reply.error.code, 'SHUTTING_DOWN')
    assert.equal(reply.id, 's1')
    assert.deepEqual(cancelled, ['SHUTTING_DOWN'])
    const { stats } = worker.status()
    assert.equal(stats.rejected, 1)
    assert.equal(stats.inFlight, 0)
  })

  it('start() after stop() serves jobs again, and start() twice is an error', async () => {
    const { worker, subject } = await startWorker()
    await assert.rejects(worker.start(), /PIER_ALREADY_RUNNING/)
    await worker.stop()
    await worker.stop() // idempotent
    await worker.start()
    assert.equal((await request(nats.nc, subject, { task: 'again' })).result, 'echo:again')
    assert.equal(worker.status().state, 'connected')
    await worker.stop()
  })

  it('a stop() called right after start() ends that start every time, even when the addon runs the stop first', async () => {
    // Nothing listens there: a start not ended by the stop would retry until stopped again.
    const natsUrl = 'nats://127.0.0.1:9'
    const ended = []
    // Which of the two the addon runs first is up to its threads, and the stop came first in
    // about one pair in a few hundred: 1,000 pairs (~1 s).
    for (let i = 0; i < 1000; i++) {
      const worker = new PierWorker({ natsUrl, connectTimeoutMs: 200 }, () => 'x')
      const started = worker.start().then(() => 'started', (error) => error.code)
      await worker.stop()
      const outcome = await Promise.race([started, sleep(5000).then(() => 'still starting after 5 s')])
      ended.push(outcome)
      if (outcome !== 'PIER_STOPPED') await worker.stop()
    }
    assert.deepEqual([...new Set(ended)], ['PIER_STOPPED'])
  })

  it('status() reports connection, server, subjects and uptime', async () => {
    const { worker, subject } = await startWorker({ natsUrl: nats.server.wsUrl })
    const status = worker.status()
    assert.equal(status.state, 'connected')
    assert.equal(status.servers, nats.server.wsUrl)
    assert.equal(status.serverName, 'pier-test')
    assert.equal(status.subject, subject)
    assert.equal(status.queueGroup, 'openclaw-workers')
    assert.equal(status.publishSubject, 'jobs.submit')
    assert.equal(status.workerId, 'agent-001')
    assert.ok(status.uptimeMs >= 0)
    assert.equal((await request(nats.nc, subject, { task: 'over ws' })).result, 'echo:over ws')
    await worker.stop()
    assert.equal(worker.status().state, 'stopped')
    assert.equal(worker.status().uptimeMs, undefined)
  })

  it('queue group spreads jobs over two workers', async () => {
    const a = await startWorker({ workerId: 'a' })
    const b = new PierWorker({ natsUrl: nats.server.url, subject: a.subject, workerId: 'b' }, async (job) => `echo:${job.task}`, {
      logger: () => {},
    })
    workers.push(b)
    await b.start()
    const replies = await Promise.all(Array.from({ length: 40 }, (_, i) => request(nats.nc, a.subject, { task: `q${i}` })))
    const byWorker = new Set(replies.map((r) => r.worker.id))
    assert.deepEqual([...byWorker].sort(), ['a', 'b'])
    await Promise.all([a.worker.stop(), b.stop()])
  })
})

describe('config errors', () => {
  it('names an unknown or ill-typed field', () => {
    assert.throws(() => new PierWorker({ natsURL: 'x' }, async () => ''), /PIER_CONFIG.*natsURL/)
    assert.throws(() => new PierWorker({ maxConcurrentJobs: 'lots' }, async () => ''), /PIER_CONFIG.*maxConcurrentJobs/)
  })
})
