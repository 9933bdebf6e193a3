// Signed requests and results (protocol.md, "Signed requests and results") against
// implementations nobody here wrote: requests signed with JS `@nats-io/nkeys` (node:crypto for
// sha256, nats.js for the wire) and with Python `nkeys` (nats-py for the wire, PyNaCl to verify
// the worker's Pier-Worker headers, __test__/conformance/pier_sign.py), in core and JetStream
// mode; every refusal has its own case; the publisher against a Python responder.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { execFile, spawn } from 'node:child_process'
import { promisify } from 'node:util'
import { fileURLToPath } from 'node:url'
import { createUser, fromPublic, fromSeed } from '@nats-io/nkeys'
import { headers as natsHeaders, createInbox } from '@nats-io/transport-node'
import { PierWorker, PierClient, rawClient, waitFor } from './helpers/addon.mjs'
import { startNatsServer } from './helpers/nats-server.mjs'

const PY = fileURLToPath(new URL('./conformance/pier_sign.py', import.meta.url))
const run = promisify(execFile)
const enc = new TextEncoder()
const dec = new TextDecoder()

const requester = createUser()
const requesterKey = requester.getPublicKey()
const outsider = createUser() // signs validly, but is not listed
const workerKeys = createUser()
const workerSeed = dec.decode(workerKeys.getSeed())
const pyRequester = createUser()
const pySeed = dec.decode(pyRequester.getSeed())

let nats, nc, js
const workers = []
const seen = [] // { subject, senderKey } of every job a handler ran

const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex')
const b64url = (bytes) => Buffer.from(bytes).toString('base64url')
const lines = (...parts) => enc.encode(parts.map((p) => `${p}\n`).join(''))
const nowTs = (offsetS = 0) => new Date(Math.floor(Date.now() / 1000 + offsetS) * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z')

/** A Pier-Sender header for these bytes, written from the contract with @nats-io/nkeys. */
function senderHeader(kp, { subject, reply, payload, ts = nowTs(), nonce = randomBytes(18).toString('base64url') }) {
  const key = kp.getPublicKey()
  const sig = b64url(kp.sign(lines('PIER-TASK-V1', key, subject, reply, ts, nonce, sha256(payload))))
  return { value: JSON.stringify({ v: 1, key, ts, nonce, sig }), nonce }
}

/** Checks a reply's Pier-Worker header with @nats-io/nkeys; its key, or throws. */
function workerKeyOf(msg, requestId, nonce) {
  const value = msg.headers?.get('Pier-Worker')
  assert.ok(value, 'the reply carries Pier-Worker')
  const h = JSON.parse(value)
  const ok = fromPublic(h.key).verify(lines('PIER-RESULT-V1', h.key, requestId ?? '', nonce ?? '', h.ts, sha256(msg.data)), Buffer.from(h.sig, 'base64url'))
  assert.equal(ok, true, 'Pier-Worker verifies')
  return h.key
}

/**
 * Sends one job the way this mode's requesters do: core request/reply, or into JetStream with
 * Pier-Reply-To. `sign` builds the header from what is really signed; `mutate` changes the
 * message after signing. Returns `{ reply, msg, nonce }`.
 */
async function send(mode, subject, job, { sign = requester, headerFor, tamper = false, signedSubject = subject, ts, nonce, repeat } = {}) {
  const payload = enc.encode(JSON.stringify(job))
  const inbox = createInbox()
  const sub = nc.subscribe(inbox, { max: 1 })
  const header = repeat ?? (sign ? senderHeader(sign, { subject: signedSubject, reply: inbox, payload, ts, nonce }) : null)
  const h = natsHeaders()
  if (header) h.set('Pier-Sender', headerFor ? headerFor(header.value) : header.value)
  const sent = tamper ? enc.encode(JSON.stringify({ ...job, task: `${job.task}!` })) : payload
  if (mode === 'core') nc.publish(subject, sent, { reply: inbox, headers: h })
  else {
    h.set('Pier-Reply-To', inbox)
    await js.publish(subject, sent, { headers: h })
  }
  const timer = setTimeout(() => sub.unsubscribe(), 10_000)
  for await (const msg of sub) {
    clearTimeout(timer)
    return { reply: msg.json(), msg, header, inbox }
  }
  throw new Error(`no reply on ${subject}`)
}

async function startWorker(subject, extra) {
  const worker = new PierWorker(
    { natsUrl: nats.url, subject, signingSeed: workerSeed, ackWaitMs: 2000, ...extra },
    async (job) => {
      seen.push({ subject, senderKey: job.senderKey })
      return `ok:${job.task}`
    },
    { logger: () => {} },
  )
  workers.push(worker)
  await worker.start()
}

const MODES = {
  core: { signed: 'sig.core.signed', any: 'sig.core.any', extra: {} },
  jetstream: { signed: 'sig.js.signed', any: 'sig.js.any', extra: { delivery: 'jetstream' } },
}

before(async () => {
  nats = await startNatsServer({ name: 'pier-signatures', jetstream: true })
  nc = await rawClient(nats.url)
  js = (await import('@nats-io/jetstream')).jetstream(nc)
  for (const [mode, m] of Object.entries(MODES)) {
    const js = mode === 'jetstream'
    await startWorker(m.signed, { ...m.extra, senderTrust: 'signed', allowedSenders: [requesterKey, pyRequester.getPublicKey()], ...(js ? { streamName: 'SIG_SIGNED', consumerName: 'sig-signed' } : {}) })
    await startWorker(m.any, { ...m.extra, ...(js ? { streamName: 'SIG_ANY', consumerName: 'sig-any' } : {}) })
  }
})

after(async () => {
  await Promise.all(workers.map((w) => w.stop()))
  await nc?.close()
  await nats?.stop()
})

const ran = (subject, before) => seen.slice(before).filter((s) => s.subject === subject).length

for (const [mode, m] of Object.entries(MODES)) {
  describe(`signed jobs, ${mode} mode`, () => {
    it('a job signed with @nats-io/nkeys runs; the handler gets the verified key; the reply carries a Pier-Worker that @nats-io/nkeys verifies', async () => {
      const before = seen.length
      const { reply, msg, header } = await send(mode, m.signed, { type: 'task_request', id: `${mode}-ok`, task: 'hi' })
      assert.equal(reply.type, 'task_result', JSON.stringify(reply))
      assert.equal(reply.result, 'ok:hi')
      assert.deepEqual(seen.slice(before), [{ subject: m.signed, senderKey: requesterKey }])
      assert.equal(workerKeyOf(msg, `${mode}-ok`, header.nonce), workerKeys.getPublicKey())
    })

    const refusals = [
      ['an unsigned job under senderTrust "signed"', { subject: m.signed, options: { sign: null } }, /signed jobs only/],
      ['a key not in allowedSenders', { subject: m.signed, options: { sign: outsider } }, /does not take jobs from this sender/],
      ['a payload changed after signing', { subject: m.signed, options: { tamper: true } }, /signature/i],
      ['a job signed for another subject', { subject: m.signed, options: { signedSubject: 'jobs.elsewhere' } }, /signature|subject/i],
      ['an expired ts', { subject: m.signed, options: { ts: nowTs(-3600) } }, /window|old|expired|ts/i],
      ['a forged header under senderTrust "any"', { subject: m.any, options: { headerFor: (v) => JSON.stringify({ ...JSON.parse(v), sig: b64url(randomBytes(64)) }) } }, /signature/i],
    ]
    for (const [name, { subject, options }, why] of refusals) {
      it(`${name} is refused UNAUTHORIZED and never runs`, async () => {
        const before = seen.length
        const { reply, msg, header } = await send(mode, subject, { type: 'task_request', id: `${mode}-${name.length}`, task: 'no' }, options)
        assert.equal(reply.type, 'task_error', JSON.stringify(reply))
        assert.equal(reply.error.code, 'UNAUTHORIZED')
        assert.match(reply.error.message, why)
        assert.equal(ran(subject, before), 0)
        // Refusals are signed too, for the request they refuse.
        assert.equal(workerKeyOf(msg, reply.id, header ? JSON.parse(header.value).nonce : null), workerKeys.getPublicKey())
      })
    }

    it('a replayed request (the same signed header again) is refused UNAUTHORIZED and never runs', async () => {
      const job = { type: 'task_request', id: `${mode}-replay`, task: 'once' }
      const payload = enc.encode(JSON.stringify(job))
      const inbox = createInbox()
      const header = senderHeader(requester, { subject: m.signed, reply: inbox, payload })
      const sub = nc.subscribe(inbox, { max: 2 })
      const before = seen.length
      for (let i = 0; i < 2; i++) {
        const h = natsHeaders()
        h.set('Pier-Sender', header.value)
        if (mode === 'core') nc.publish(m.signed, payload, { reply: inbox, headers: h })
        else {
          h.set('Pier-Reply-To', inbox)
          await js.publish(m.signed, payload, { headers: h })
        }
      }
      const replies = []
      const timer = setTimeout(() => sub.unsubscribe(), 10_000)
      for await (const msg of sub) replies.push(msg.json())
      clearTimeout(timer)
      assert.deepEqual(replies.map((r) => r.type).sort(), ['task_error', 'task_result'])
      assert.match(replies.find((r) => r.type === 'task_error').error.message, /replay|seen/i)
      assert.equal(ran(m.signed, before), 1)
    })

    it('a job signed with Python nkeys runs, and PyNaCl verifies the Pier-Worker of its reply', async () => {
      const before = seen.length
      const job = JSON.stringify({ type: 'task_request', id: `${mode}-py`, task: 'from-python' })
      const { stdout } = await run('python3', [PY, 'request', nats.url, m.signed, pySeed, job, ...(mode === 'jetstream' ? ['--js'] : [])], { timeout: 30_000 })
      const [line] = stdout.trim().split('\n').map((l) => JSON.parse(l))
      assert.equal(line.reply.result, 'ok:from-python', stdout)
      assert.deepEqual(line.worker, { key: workerKeys.getPublicKey() })
      assert.deepEqual(seen.slice(before), [{ subject: m.signed, senderKey: pyRequester.getPublicKey() }])
    })

    it('Python: bytes other than those signed, and the same request sent twice, are refused', async () => {
      const job = JSON.stringify({ type: 'task_request', id: `${mode}-pyt`, task: 'x' })
      const tampered = await run('python3', [PY, 'request', nats.url, m.signed, pySeed, job, '--tamper', ...(mode === 'jetstream' ? ['--js'] : [])], { timeout: 30_000 })
      assert.equal(JSON.parse(tampered.stdout).reply.error.code, 'UNAUTHORIZED')
      const twice = await run('python3', [PY, 'request', nats.url, m.signed, pySeed, job.replace('pyt', 'pyr'), '--times', '2', ...(mode === 'jetstream' ? ['--js'] : [])], { timeout: 30_000 })
      const [first, second] = twice.stdout.trim().split('\n').map((l) => JSON.parse(l).reply)
      assert.equal(first.type, 'task_result')
      assert.equal(second.error.code, 'UNAUTHORIZED')
    })
  })
}

describe('the publisher against a Python worker', () => {
  /** Starts pier_sign.py respond; resolves once it subscribed. */
  async function pythonResponder(subject, seed, forge) {
    const child = spawn('python3', [PY, 'respond', nats.url, subject, seed, ...(forge ? ['--forge'] : [])], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.on('data', (c) => (out += c))
    child.stderr.on('data', (c) => (err += c))
    await waitFor(() => /ready/.test(out) || child.exitCode !== null, { timeout: 20_000 })
    if (!/ready/.test(out)) throw new Error(`responder did not start: ${err}`)
    return child
  }

  it('a good Pier-Worker adds workerKey to the result; a forged one is PIER_WORKER_SIGNATURE, never a result', async () => {
    const pyWorker = createUser()
    const seed = dec.decode(pyWorker.getSeed())
    const client = new PierClient({ natsUrl: nats.url, publishSubject: 'py.worker', signingSeed: dec.decode(requester.getSeed()) })
    try {
      await pythonResponder('py.worker', seed, false)
      const good = await client.publish('hello', { timeoutMs: 10_000 })
      assert.equal(good.result, 'py:hello')
      assert.equal(good.workerKey, pyWorker.getPublicKey())
      await pythonResponder('py.worker', seed, true)
      await assert.rejects(client.publish('hello', { timeoutMs: 10_000 }), (e) => e.code === 'PIER_WORKER_SIGNATURE')
    } finally {
      await client.close()
    }
  })

  it('trustedWorkers refuses a worker it does not list', async () => {
    const pyWorker = createUser()
    const client = new PierClient({ natsUrl: nats.url, publishSubject: 'py.untrusted', trustedWorkers: [workerKeys.getPublicKey()] })
    try {
      await pythonResponder('py.untrusted', dec.decode(pyWorker.getSeed()), false)
      await assert.rejects(client.publish('hello', { timeoutMs: 10_000 }), (e) => e.code === 'PIER_UNTRUSTED_WORKER')
    } finally {
      await client.close()
    }
  })
})

// The seed round-trips through @nats-io/nkeys (a sanity check of the test's own keys).
it('the test keys are NATS user keys', () => {
  assert.equal(fromSeed(workerKeys.getSeed()).getPublicKey(), workerKeys.getPublicKey())
  assert.match(requesterKey, /^U[A-Z2-7]{55}$/)
})
