// The worker (the CLI worker process, or PierWorker) as other people's clients see it: driven by
// clients nobody on this project wrote (nats.js, @nats-io/services' client, nats-py) and by raw
// NATS protocol frames. Malformed header blocks are in conformance-headers.test.mjs. Some cases
// repeat tests/nats/admission.rs on purpose: there the Rust worker meets async-nats, here the CLI
// worker process meets other people's clients.
import { describe, it, after } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { connect, createInbox, headers as natsHeaders, nanos } from '@nats-io/transport-node'
import { jetstream, jetstreamManager, AckPolicy, RetentionPolicy } from '@nats-io/jetstream'
import { Svcm } from '@nats-io/services'
import { startNatsServer, freePort } from './helpers/nats-server.mjs'
import {
  natsPy,
  processesRunning,
  rawNats,
  runCli,
  sleep,
  spawnCliWorker,
  startCliWorker,
  waitFor,
} from './conformance/harness.mjs'

const { PierWorker, PierClient } = createRequire(import.meta.url)('../index.js')

const cleanups = []
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup()
})

async function server(options) {
  const s = await startNatsServer(options)
  cleanups.push(() => s.stop())
  return s
}

/** nats.js (@nats-io/transport-node) connected to `url`. */
async function natsJs(url, options = {}) {
  const nc = await connect({ servers: url, ...options })
  cleanups.push(() => nc.close())
  return nc
}

async function ask(nc, subject, job, timeout = 5000) {
  return (await nc.request(subject, JSON.stringify(job), { timeout })).json()
}

/** Publishes a job into a JetStream stream with nats.js, replying to a fresh inbox; resolves to the answer. */
async function askStream(nc, subject, job, { timeout = 5000, payload } = {}) {
  const inbox = createInbox()
  const sub = nc.subscribe(inbox, { max: 1 })
  await nc.flush()
  const headers = natsHeaders()
  headers.set('Pier-Reply-To', inbox)
  await jetstream(nc).publish(subject, payload ?? JSON.stringify(job), { headers })
  const timer = setTimeout(() => sub.unsubscribe(), timeout)
  for await (const m of sub) {
    clearTimeout(timer)
    return m.json()
  }
  throw new Error(`no answer on ${inbox} within ${timeout} ms`)
}

const oneLine = (text) => assert.doesNotMatch(text, /[\r\n]/)

describe('a result larger than the server accepts', () => {
  it('is answered RESULT_TOO_LARGE in core and JetStream mode, never silence', async () => {
    const s = await server({ maxPayload: 4096, jetstream: true })
    const core = await startCliWorker(s.url, ['--echo', '--subject', 'jobs.big', '--worker-id', 'big'], cleanups)
    const js = await startCliWorker(
      s.url,
      ['--echo', '--subject', 'jobs.bigjs', '--delivery', 'jetstream', '--stream-name', 'BIG', '--consumer-name', 'big'],
      cleanups,
    )
    const nc = await natsJs(s.url)
    // The request fits under max_payload (4096); its echo, with the reply envelope, does not.
    const task = 'x'.repeat(3500)
    for (const reply of [
      await ask(nc, 'jobs.big', { id: 'big-core', task }),
      await askStream(nc, 'jobs.bigjs', { id: 'big-js', task }),
    ]) {
      assert.equal(reply.type, 'task_error')
      assert.equal(reply.error.code, 'RESULT_TOO_LARGE')
      assert.match(reply.id, /^big-(core|js)$/)
      oneLine(reply.error.message)
    }
    assert.equal((await ask(nc, 'jobs.big', { id: 's', task: 'fits' })).result, 'fits')
    assert.equal((await askStream(nc, 'jobs.bigjs', { id: 's2', task: 'fits' })).result, 'fits')
    for (const worker of [core, js]) assert.equal((await worker.status()).stats.replyFailures, 0)
  })

  it('a task over the limit is PIER_INVALID_TASK at the publisher (PierClient and the CLI)', async () => {
    const s = await server({ maxPayload: 4096 })
    await startCliWorker(s.url, ['--echo', '--subject', 'jobs.big'], cleanups)
    const client = new PierClient({ natsUrl: s.url, publishSubject: 'jobs.big' })
    cleanups.push(() => client.close())
    await assert.rejects(client.publish('x'.repeat(5000)), (error) => {
      assert.equal(error.code, 'PIER_INVALID_TASK')
      assert.match(error.message, /4096/)
      oneLine(error.message)
      return true
    })
    assert.equal((await client.publish('small')).result, 'small')
    const cli = await runCli(['publish', 'y'.repeat(5000), '--nats-url', s.url, '--publish-subject', 'jobs.big'])
    assert.equal(cli.code, 2)
    assert.match(cli.stderr, /PIER_INVALID_TASK/)
  })
})

describe('valid JSON is read as JSON, in raw frames', () => {
  it('nesting to 512 levels, out-of-range numbers, lone surrogates; the id echoed whenever readable', async () => {
    const s = await server()
    await startCliWorker(s.url, ['--echo', '--subject', 'jobs.parse'], cleanups)
    const raw = await rawNats(s.port)
    cleanups.push(() => raw.close())
    const send = (text) => raw.request('jobs.parse', Buffer.from(text, 'utf8'))
    // `levels` is the payload's depth: the job object is 1, meta 2, ...
    const nested = (id, levels) => `{"id":"${id}","task":"deep","meta":${'{"a":'.repeat(levels - 2)}{}${'}'.repeat(levels - 2)}}`

    const meta129 = await send(`{"id":"m129","task":"deep","meta":${'{"a":'.repeat(128)}{}${'}'.repeat(128)}}`)
    assert.deepEqual([meta129.id, meta129.result], ['m129', 'deep'], JSON.stringify(meta129))
    const at512 = await send(nested('d512', 512))
    assert.deepEqual([at512.id, at512.result], ['d512', 'deep'], JSON.stringify(at512))
    const over = await send(nested('d513', 513))
    assert.deepEqual([over.id, over.error?.code], ['d513', 'PARSE_ERROR'])
    assert.match(over.error.message, /512/)

    const huge = await send('{"id":"t1","task":"x","timeoutMs":1e309}')
    assert.deepEqual([huge.id, huge.error?.code], ['t1', 'INVALID_REQUEST'])
    assert.match(huge.error.message, /timeoutMs/)
    const hugeMeta = await send('{"id":"t2","task":"x","meta":{"price":-1e400}}')
    assert.deepEqual([hugeMeta.id, hugeMeta.error?.code], ['t2', 'INVALID_REQUEST'])
    assert.match(hugeMeta.error.message, /meta/)

    // Escapes as JavaScript's JSON.stringify writes them for lone surrogates: replaced by U+FFFD.
    const lone = await send('{"id":"u1","task":"a\\ud800b\\udc00c"}')
    assert.deepEqual([lone.id, lone.result], ['u1', 'a\ufffdb\ufffdc'])
    const pair = await send('{"id":"u2","task":"\\ud83d\\ude00"}')
    assert.equal(pair.result, '\u{1F600}')

    const truncated = await send('{"id":"cut","task":')
    assert.deepEqual([truncated.id, truncated.error?.code], ['cut', 'PARSE_ERROR'])
    oneLine(truncated.error.message)
  })

  it('a task with a lone surrogate from nats.js (JSON.stringify) is run', async () => {
    const s = await server()
    await startCliWorker(s.url, ['--echo', '--subject', 'jobs.parse'], cleanups)
    const nc = await natsJs(s.url)
    const reply = await ask(nc, 'jobs.parse', { id: 'js1', task: 'x\ud800y', systemPrompt: '\udfff' })
    assert.deepEqual([reply.id, reply.result], ['js1', 'x\ufffdy'])
  })
})

describe('--exec: no job process outlives its job', () => {
  it('three TIMEOUTs of `sleep 31; cat` leave no sleep; shutdown kills a running job; a NUL byte is a clean error', async () => {
    const s = await server()
    const marker = `sleep 31.${String(process.pid % 10000).padStart(4, '0')}${String(Date.now() % 1000).padStart(3, '0')}`
    const worker = await startCliWorker(s.url, ['--exec', `${marker}; cat`, '--subject', 'jobs.exec', '--drain-timeout-ms', '200'], cleanups)
    const nc = await natsJs(s.url)
    const timeouts = ['t1', 't2', 't3'].map((id) => ask(nc, 'jobs.exec', { id, task: 'x', timeoutMs: 600 }))
    await waitFor(() => processesRunning(marker).length === 3, { timeout: 3000 })
    for (const reply of await Promise.all(timeouts)) assert.equal(reply.error.code, 'TIMEOUT')
    await waitFor(() => processesRunning(marker).length === 0, { timeout: 3000 })

    const raw = await rawNats(s.port)
    cleanups.push(() => raw.close())
    const nul = await raw.request('jobs.exec', '{"id":"n1","task":"x","systemPrompt":"my secret prompt\\u0000"}')
    assert.deepEqual(nul.error, {
      code: 'INVALID_REQUEST',
      message: 'systemPrompt contains a NUL byte, which a command environment cannot carry',
    })

    const running = ask(nc, 'jobs.exec', { id: 'sd', task: 'x', timeoutMs: 60_000 })
    await waitFor(() => processesRunning(marker).length === 1, { timeout: 3000 })
    const { code } = await worker.stop()
    assert.equal(code, 0)
    assert.equal((await running).error.code, 'SHUTTING_DOWN')
    await waitFor(() => processesRunning(marker).length === 0, { timeout: 3000 })
    assert.doesNotMatch(worker.stderr(), /my secret prompt|node:internal|ERR_INVALID_ARG/)
  })
})

describe('service discovery (ADR-32) as nats-py, @nats-io/services and nats.js read it', () => {
  it('PING/INFO/STATS parse in all three clients, and the numbers follow ADR-32', async () => {
    const s = await server({ jetstream: true })
    const core = new PierWorker(
      { natsUrl: s.url, subject: 'jobs.svc', workerId: 'core-1', walletAddress: '0xC0' },
      async (job) => {
        if (job.task === 'fail') throw new Error('boom')
        if (job.task === 'slow') await sleep(1500)
        return job.task
      },
      { logger: () => {} },
    )
    const pull = PierWorker.echo(
      { natsUrl: s.url, subject: 'jobs.svcjs', workerId: 'js-1', delivery: 'jetstream', streamName: 'SVC', consumerName: 'svc' },
      { logger: () => {} },
    )
    for (const w of [core, pull]) {
      await w.start()
      cleanups.push(() => w.stop())
    }
    const nc = await natsJs(s.url)
    for (const task of ['a', 'b', 'c']) await ask(nc, 'jobs.svc', { task })
    assert.equal((await ask(nc, 'jobs.svc', { task: 'fail' })).error.code, 'EXECUTION_FAILED')
    assert.equal((await ask(nc, 'jobs.svc', { task: 'slow', timeoutMs: 300 })).error.code, 'TIMEOUT')
    const local = core.status().stats
    assert.equal(local.received, 5)

    // nats.js, raw: every verb on all three subject forms.
    const gather = async (subject) => {
      const inbox = createInbox()
      const answers = []
      const sub = nc.subscribe(inbox, { callback: (_e, m) => answers.push(m.json()) })
      nc.publish(subject, '', { reply: inbox })
      await sleep(300)
      sub.unsubscribe()
      return answers
    }
    const pings = await gather('$SRV.PING')
    assert.equal(pings.length, 2)
    const coreId = pings.find((p) => p.metadata.workerId === 'core-1').id
    for (const verb of ['PING', 'INFO', 'STATS']) {
      for (const subject of [`$SRV.${verb}`, `$SRV.${verb}.pier-worker`]) {
        const answers = await gather(subject)
        assert.equal(answers.length, 2, subject)
        for (const a of answers) assert.equal(a.type, `io.nats.micro.v1.${verb.toLowerCase()}_response`)
      }
      assert.equal((await gather(`$SRV.${verb}.pier-worker.${coreId}`)).length, 1)
    }
    const rawStats = (await gather(`$SRV.STATS.pier-worker.${coreId}`))[0]
    assert.match(rawStats.started, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{1,6}Z$/, 'RFC 3339 UTC with fractional seconds')
    const ep = rawStats.endpoints[0]
    assert.equal(ep.num_requests, local.received)
    assert.equal(ep.num_errors, local.failed + local.rejected + local.timedOut)
    assert.equal(ep.num_errors, 2)
    assert.ok(ep.processing_time >= 300e6, `the timed-out job's 300 ms count: ${ep.processing_time} ns`)
    assert.equal(ep.average_processing_time, Math.floor(ep.processing_time / ep.num_requests))
    assert.match(ep.last_error, /TIMEOUT|EXECUTION_FAILED/)

    // @nats-io/services' client.
    const svc = new Svcm(nc).client()
    const collect = async (iterator) => {
      const out = []
      for await (const x of await iterator) out.push(x)
      return out
    }
    const [sPing, sInfo, sStats] = [await collect(svc.ping('pier-worker')), await collect(svc.info('pier-worker')), await collect(svc.stats('pier-worker'))]
    assert.deepEqual(sPing.map((p) => p.metadata.workerId).sort(), ['core-1', 'js-1'])
    for (const info of sInfo) {
      assert.equal(info.name, 'pier-worker')
      assert.equal(typeof info.description, 'string')
      for (const e of info.endpoints) {
        assert.deepEqual(e.metadata, {})
        assert.equal(typeof e.queue_group, 'string')
      }
    }
    const queueGroups = Object.fromEntries(sInfo.map((i) => [i.metadata.workerId, i.endpoints[0].queue_group]))
    assert.deepEqual(queueGroups, { 'core-1': 'openclaw-workers', 'js-1': '' }, 'a pull consumer has no queue group')
    assert.equal(sStats.length, 2)
    for (const st of sStats) assert.ok(!Number.isNaN(Date.parse(st.started)))

    // nats-py: ServicePing/ServiceInfo/ServiceStats.from_dict on every answer (raises on a missing key
    // or a `started` without fractional seconds).
    const py = await natsPy(['discover', s.url, 'pier-worker'])
    assert.equal(py.ping.length, 2)
    assert.equal(py.info.length, 2)
    assert.equal(py.stats.length, 2)
    const pyCore = py.stats.find((x) => x.id === coreId)
    assert.equal(pyCore.endpoints[0].num_requests, 5)
    assert.equal(pyCore.endpoints[0].average_processing_time, Math.floor(pyCore.endpoints[0].processing_time / 5))
    assert.ok(pyCore.endpoints[0].has_data)
    const pyPull = py.stats.find((x) => x.id !== coreId).endpoints[0]
    assert.deepEqual([pyPull.num_requests, pyPull.processing_time, pyPull.average_processing_time], [0, 0, 0])
    assert.equal(pyCore.metadata.workerId, 'core-1')
  })
})

describe('every admission rule in every delivery mode', () => {
  it('allowedSenders, unreadable and oversized jobs, and jobs nobody could be answered on: core and JetStream', async () => {
    const s = await server({ jetstream: true })
    const common = ['--echo', '--allowed-senders', 'alice', '--max-payload-bytes', '300']
    const core = await startCliWorker(s.url, [...common, '--subject', 'jobs.adm'], cleanups)
    const js = await startCliWorker(
      s.url,
      [...common, '--subject', 'jobs.admjs', '--delivery', 'jetstream', '--stream-name', 'ADM', '--consumer-name', 'adm', '--ack-wait-ms', '1000'],
      cleanups,
    )
    const nc = await natsJs(s.url)
    const modes = [
      ['core', (job, payload) => (payload ? nc.request('jobs.adm', payload, { timeout: 5000 }).then((m) => m.json()) : ask(nc, 'jobs.adm', job))],
      ['jetstream', (job, payload) => askStream(nc, 'jobs.admjs', job, { payload })],
    ]
    for (const [mode, send] of modes) {
      const job = (id, sender) => ({ id, task: 'hi', ...(sender ? { meta: { sender } } : {}) })
      assert.equal((await send(job('m', 'mallory'))).error.code, 'UNAUTHORIZED', mode)
      assert.equal((await send(job('anon'))).error.code, 'UNAUTHORIZED', mode)
      assert.equal((await send(job('a', 'alice'))).result, 'hi', mode)
      const unreadable = await send(undefined, '{"id":"p1","task":')
      assert.deepEqual([unreadable.id, unreadable.error.code], ['p1', 'PARSE_ERROR'], mode)
      assert.equal((await send({ id: 'w', task: 5, type: 'task_request', meta: { sender: 'alice' } })).error.code, 'INVALID_REQUEST', mode)
      const big = await send({ id: 'big', task: 'x'.repeat(400), meta: { sender: 'alice' } })
      assert.equal(big.error.code, 'PAYLOAD_TOO_LARGE', mode)
    }
    // No reply subject (core) / no usable Pier-Reply-To and no resultSubject (JetStream): never run.
    nc.publish('jobs.adm', JSON.stringify({ id: 'nr', task: 'hi', meta: { sender: 'alice' } }))
    const raw = await rawNats(s.port)
    cleanups.push(() => raw.close())
    await raw.write(raw.pubFrame('jobs.admjs', undefined, JSON.stringify({ id: 'nr1', task: 'hi', meta: { sender: 'alice' } })))
    await raw.write(
      raw.hpubFrame('jobs.admjs', undefined, 'NATS/1.0\r\nPier-Reply-To: not a subject\r\n\r\n', JSON.stringify({ id: 'nr2', task: 'hi', meta: { sender: 'alice' } })),
    )
    await raw.flush()
    await nc.flush()
    await waitFor(async () => (await core.status()).stats.noReply === 1 && (await js.status()).stats.noReply === 2, { timeout: 5000, interval: 100 })
    for (const worker of [core, js]) {
      const { stats } = await worker.status()
      assert.equal(stats.completed, 1, 'only alice\'s job ran')
      assert.equal(stats.errorsByCode.UNAUTHORIZED, 2)
    }
  })
})

describe('JetStream reply targets are checked before the job runs', () => {
  it('an unusable Pier-Reply-To falls back to <resultSubject>.<safe id>; a wildcard resultSubject is refused', async () => {
    const s = await server({ jetstream: true })
    const worker = await startCliWorker(
      s.url,
      ['--echo', '--subject', 'jobs.rt', '--delivery', 'jetstream', '--stream-name', 'RT', '--consumer-name', 'rt', '--result-subject', 'results'],
      cleanups,
    )
    const raw = await rawNats(s.port)
    cleanups.push(() => raw.close())
    const answers = []
    raw.subscribe('results.>', (m) => answers.push({ subject: m.subject, body: JSON.parse(m.payload.toString('utf8')) }))
    raw.subscribe('ok.x', (m) => answers.push({ subject: m.subject, body: JSON.parse(m.payload.toString('utf8')) }))
    await raw.flush()
    const cases = [
      // [Pier-Reply-To header (undefined: none), job id, where the answer must go]
      ['', 'j1', 'results.j1'],
      ['has space', 'j2', 'results.j2'],
      ['results.*', 'j3', 'results.j3'],
      ['results.>', 'j4', 'results.j4'],
      ['results..x', 'j5', 'results.j5'],
      [undefined, 'a b\r\nc.d*>', 'results.a_b__c_d__'],
      ['ok.x', 'sp ace', 'ok.x'],
    ]
    for (const [header, id] of cases) {
      const body = JSON.stringify({ id, task: `t-${id}` })
      await raw.write(
        header === undefined
          ? raw.pubFrame('jobs.rt', undefined, body)
          : raw.hpubFrame('jobs.rt', undefined, `NATS/1.0\r\nPier-Reply-To: ${header}\r\n\r\n`, body),
      )
    }
    await raw.flush()
    await waitFor(() => answers.length >= cases.length, { timeout: 10_000 })
    await sleep(200)
    assert.equal(answers.length, cases.length, JSON.stringify(answers))
    for (const [, id, subject] of cases) {
      const answer = answers.find((a) => a.body.id === id)
      assert.ok(answer, `an answer for ${JSON.stringify(id)}`)
      assert.equal(answer.subject, subject)
      assert.equal(answer.body.result, `t-${id}`)
    }
    const { stats } = await worker.status()
    assert.deepEqual([stats.replyFailures, stats.noReply], [0, 0])

    const refused = await runCli(['worker', '--echo', '--nats-url', s.url, '--delivery', 'jetstream', '--result-subject', 'results.*'])
    assert.equal(refused.code, 2)
    assert.match(refused.stderr, /PIER_CONFIG/)
    assert.match(refused.stderr, /resultSubject/)
  })
})

describe('changed JetStream consumer settings are applied', () => {
  it('an existing durable consumer is updated to the configured ackWaitMs and maxDeliver', async () => {
    const s = await server({ jetstream: true })
    const nc = await natsJs(s.url)
    const jsm = await jetstreamManager(nc)
    // An operator created the stream and the consumer before, with other settings.
    await jsm.streams.add({ name: 'P8', subjects: ['jobs.p8'], retention: RetentionPolicy.Workqueue })
    await jsm.consumers.add('P8', { durable_name: 'p8', ack_policy: AckPolicy.Explicit, ack_wait: nanos(10_000), max_deliver: 9 })
    const args = ['--echo', '--subject', 'jobs.p8', '--delivery', 'jetstream', '--stream-name', 'P8', '--consumer-name', 'p8']

    const first = await startCliWorker(s.url, [...args, '--ack-wait-ms', '700', '--max-deliver', '3'], cleanups)
    let { config } = await jsm.consumers.info('P8', 'p8')
    assert.deepEqual([config.ack_wait, config.max_deliver], [nanos(700), 3])
    assert.equal((await askStream(nc, 'jobs.p8', { id: 'p8a', task: 'still served' })).result, 'still served')
    assert.equal((await first.stop()).code, 0)

    await startCliWorker(s.url, [...args, '--ack-wait-ms', '1500', '--max-deliver', '4'], cleanups)
    ;({ config } = await jsm.consumers.info('P8', 'p8'))
    assert.deepEqual([config.ack_wait, config.max_deliver], [nanos(1500), 4])
    assert.equal((await askStream(nc, 'jobs.p8', { id: 'p8b', task: 'again' })).result, 'again')
  })
})

describe('credentials in the URL, as nats-py reads them', () => {
  const TOKEN = 's3cret-url-token'
  const PASSWORD = 'pw-s3cret-9'

  it('nats://TOKEN@host works as a token, is redacted everywhere, and a wrong one fails at once', async () => {
    const s = await server({ extra: `authorization { token: "${TOKEN}" }` })
    const url = `nats://${TOKEN}@127.0.0.1:${s.port}`
    const worker = await startCliWorker(url, ['--echo', '--subject', 'jobs.tok', '--worker-id', 'tok'], cleanups)
    // nats-py, given the same kind of URL, reaches the worker through the protected server.
    const { reply } = await natsPy(['request', url, 'jobs.tok', 'via nats-py'])
    assert.equal(reply.result, 'via nats-py')
    assert.equal(reply.worker.id, 'tok')
    const status = await worker.status()
    assert.equal(status.state, 'connected')
    assert.match(status.servers, /\[redacted\]@127\.0\.0\.1/)
    const cliStatus = await runCli(['status', '--nats-url', url])
    assert.equal(cliStatus.code, 0)
    const { code, status: final } = await worker.stop()
    assert.equal(code, 0)
    for (const text of [JSON.stringify(status), JSON.stringify(final), worker.stderr(), worker.stdout(), cliStatus.stdout, cliStatus.stderr]) {
      assert.ok(!text.includes(TOKEN), `the token never shows: ${text}`)
    }

    const wrong = await runCli(['worker', '--echo', '--nats-url', `nats://wrong-token-x@127.0.0.1:${s.port}`], 15_000)
    assert.equal(wrong.code, 2)
    assert.match(wrong.stderr, /PIER_CONNECT/)
    assert.ok(!wrong.stderr.includes('wrong-token-x'), wrong.stderr)
  })

  it('nats://user:password@host works as user and password', async () => {
    const s = await server({ extra: `authorization { user: bob, password: "${PASSWORD}" }` })
    const url = `nats://bob:${PASSWORD}@127.0.0.1:${s.port}`
    const worker = await startCliWorker(url, ['--echo', '--subject', 'jobs.up'], cleanups)
    const { reply } = await natsPy(['request', url, 'jobs.up', 'user and password'])
    assert.equal(reply.result, 'user and password')
    const nc = await natsJs(s.url, { user: 'bob', pass: PASSWORD })
    assert.equal((await ask(nc, 'jobs.up', { task: 'nats.js too' })).result, 'nats.js too')
    const status = await worker.status()
    assert.ok(!JSON.stringify(status).includes(PASSWORD))
    await worker.stop()
    assert.ok(!worker.stderr().includes(PASSWORD) && !worker.stdout().includes(PASSWORD))
  })
})

describe('a worker started before its server', () => {
  it('the CLI worker keeps trying, and answers jobs once the server is up', async () => {
    const port = await freePort()
    const worker = spawnCliWorker(['--echo', '--nats-url', `nats://127.0.0.1:${port}`, '--subject', 'jobs.late', '--connect-timeout-ms', '500'], cleanups)
    await sleep(1500)
    assert.equal(worker.child.exitCode, null, `still running: ${worker.stderr()}`)
    assert.doesNotMatch(worker.stderr(), /subscribed to/)
    const s = await server({ port })
    await worker.subscribed(15_000)
    const nc = await natsJs(s.url)
    assert.equal((await ask(nc, 'jobs.late', { id: 'late', task: 'late' })).result, 'late')
    const { stats } = await worker.status()
    assert.equal(stats.completed, 1)
    assert.equal((await worker.stop()).code, 0)
  })

  it('with maxConnectAttempts the wait is bounded: PIER_CONNECT, exit 2', async () => {
    const port = await freePort()
    const start = Date.now()
    const result = await runCli(['worker', '--echo', '--nats-url', `nats://127.0.0.1:${port}`, '--max-connect-attempts', '2', '--connect-timeout-ms', '200'])
    assert.equal(result.code, 2)
    assert.match(result.stderr, /PIER_CONNECT/)
    assert.ok(Date.now() - start < 15_000)
  })
})
