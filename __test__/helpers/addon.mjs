// The addon under test, a raw NATS client for sending arbitrary bytes, and small waits.
import { createRequire } from 'node:module'
import { before, after } from 'node:test'
import { connect, createInbox, headers as natsHeaders } from '@nats-io/transport-node'
import { startNatsServer } from './nats-server.mjs'
import { waitFor } from './wait.mjs'

const require = createRequire(import.meta.url)
export const { PierWorker, PierClient, ledgerDays } = require('../../index.js')

/** A logger that keeps every line, so tests can assert what was logged. */
export function memoryLogger() {
  const lines = []
  const logger = (level, message) => lines.push(`${level} ${message}`)
  logger.lines = lines
  logger.text = () => lines.join('\n')
  return logger
}

export async function rawClient(url, options = {}) {
  return connect({ servers: url, ...options })
}

/** A nats-server and a raw client for one test; `cleanups` gets what stops them. */
export async function startNatsWithClient(cleanups, options) {
  const server = await startNatsServer(options)
  cleanups.push(() => server.stop())
  const nc = await rawClient(server.url)
  cleanups.push(() => nc.close())
  return { server, nc }
}

/**
 * A nats-server and a raw client for the enclosing suite (or file): started before its tests,
 * stopped after. Read `.server` and `.nc` inside tests.
 */
export function useNats(options) {
  const nats = {}
  before(async () => {
    nats.server = await startNatsServer(options)
    nats.nc = await rawClient(nats.server.url)
  })
  after(async () => {
    await nats.nc?.close()
    await nats.server?.stop()
  })
  return nats
}

const encoder = new TextEncoder()
const decoder = new TextDecoder()

/** Sends `payload` (string, bytes or JSON value) as a request and returns the parsed reply. */
export async function request(nc, subject, payload, timeout = 5000) {
  const data =
    payload instanceof Uint8Array ? payload : encoder.encode(typeof payload === 'string' ? payload : JSON.stringify(payload))
  const reply = await nc.request(subject, data, { timeout })
  return JSON.parse(decoder.decode(reply.data))
}

export { waitFor, sleep } from './wait.mjs'

/**
 * `request` until a worker has subscribed (a gateway starts its services after it reports
 * ready): sent again while NATS says no responders, for up to `within` ms.
 */
export async function firstRequest(nc, subject, payload, { timeout = 30_000, within = 90_000 } = {}) {
  return waitFor(
    async () => {
      try {
        return await request(nc, subject, payload, timeout)
      } catch (error) {
        if (/no responders/i.test(error.message)) return null
        throw error
      }
    },
    { timeout: within, interval: 250 },
  )
}

/** A handler whose jobs wait until released, to hold jobs in flight. */
export function gatedHandler() {
  const waiting = []
  const handler = (job) =>
    new Promise((resolve) => {
      waiting.push(() => resolve(`done:${job.task}`))
    })
  handler.waiting = waiting
  handler.releaseAll = () => waiting.splice(0).forEach((release) => release())
  return handler
}

/**
 * Sends `job` on `subject` with Pier-Progress-To (protocol v1.1): its answer (a promise), the
 * progress messages seen so far (filled as they come), and stop() for the progress subscription.
 */
export function askWithProgress(nc, subject, job) {
  const reply = createInbox()
  const progressTo = createInbox()
  const seen = []
  const progress = nc.subscribe(progressTo)
  ;(async () => {
    for await (const m of progress) seen.push(m.json())
  })()
  const answers = nc.subscribe(reply, { max: 1 })
  const answer = (async () => {
    for await (const m of answers) return m.json()
  })()
  const headers = natsHeaders()
  headers.set('Pier-Progress-To', progressTo)
  nc.publish(subject, JSON.stringify(job), { reply, headers })
  return { seen, answer, stop: () => progress.unsubscribe() }
}
