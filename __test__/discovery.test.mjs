// NATS service discovery: live workers answer $SRV.PING / INFO / STATS as `pier-worker`, with
// their counters, and error replies carry the service error headers.
import { it, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { promisify } from 'node:util'
import { fileURLToPath } from 'node:url'
import { createInbox } from '@nats-io/transport-node'
import { PierWorker, PierClient, useNats, request, sleep } from './helpers/addon.mjs'
import fleetTable from '../lib/fleet-table.js'

const { serverLabel } = fleetTable

const PACKAGE_VERSION = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version
const nats = useNats()
const workers = []
after(() => Promise.all(workers.map((w) => w.stop())))

async function startWorker(workerId, extra = {}) {
  const worker = new PierWorker(
    { natsUrl: nats.server.url, subject: 'jobs.disc', workerId, walletAddress: `0x${workerId}`, ...extra },
    async (job) => {
      if (job.task === 'fail') throw new Error('boom')
      return `ok:${job.task}`
    },
    { logger: () => {} },
  )
  workers.push(worker)
  await worker.start()
  return worker
}

/** Publishes to a $SRV subject and collects every answer for `ms`. */
async function gather(subject, ms = 300) {
  const inbox = createInbox()
  const answers = []
  const sub = nats.nc.subscribe(inbox, { callback: (_e, m) => answers.push(m) })
  nats.nc.publish(subject, '', { reply: inbox })
  await sleep(ms)
  sub.unsubscribe()
  return answers.map((m) => m.json())
}

it('two running workers are discovered by $SRV.PING and report live STATS', async () => {
  await startWorker('alpha', { discoveryEarnings: true })
  await startWorker('beta')
  await startWorker('hidden', { discovery: false })
  for (let i = 0; i < 6; i++) await request(nats.nc, 'jobs.disc', { task: `t${i}` })
  await request(nats.nc, 'jobs.disc', { task: 'fail' })

  const pings = await gather('$SRV.PING.pier-worker')
  assert.equal(pings.length, 2, 'a worker with discovery: false stays silent')
  for (const p of pings) {
    assert.equal(p.type, 'io.nats.micro.v1.ping_response')
    assert.equal(p.name, 'pier-worker')
    assert.equal(p.version, PACKAGE_VERSION, 'the service version is the package version')
  }
  assert.deepEqual(pings.map((p) => p.metadata.workerId).sort(), ['alpha', 'beta'])

  const info = await gather(`$SRV.INFO.pier-worker.${pings[0].id}`)
  assert.equal(info.length, 1, 'addressed by id, one worker answers')
  // ADR-32: every INFO endpoint carries metadata (nats.py's EndpointInfo.from_dict requires the key).
  assert.deepEqual(info[0].endpoints[0], { name: 'jobs', subject: 'jobs.disc', queue_group: 'openclaw-workers', metadata: {} })

  const client = new PierClient({ natsUrl: nats.server.url })
  const stats = await client.workers(300)
  await client.close()
  assert.equal(stats.length, 2)
  const byWorker = Object.fromEntries(stats.map((s) => [s.metadata.workerId, s]))
  const local = { alpha: workers[0].status().stats, beta: workers[1].status().stats }
  for (const id of ['alpha', 'beta']) {
    const endpoint = byWorker[id].endpoints[0]
    assert.equal(byWorker[id].type, 'io.nats.micro.v1.stats_response')
    assert.equal(endpoint.num_requests, local[id].received)
    assert.equal(endpoint.data.completed, local[id].completed)
    assert.match(byWorker[id].started, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
  }
  // Discovery answers strangers: earnings only where the operator opted in, and the last error
  // as its code alone.
  assert.equal(byWorker.alpha.endpoints[0].data.earned, 0)
  assert.equal('earned' in byWorker.beta.endpoints[0].data, false)
  const lastErrors = stats.map((s) => s.endpoints[0].last_error).filter(Boolean)
  assert.deepEqual(lastErrors, Array(1 - workers[2].status().stats.failed).fill('EXECUTION_FAILED'))
  const total = (k) => stats.reduce((sum, s) => sum + s.endpoints[0][k], 0)
  assert.equal(total('num_requests'), 7 - workers[2].status().stats.received)
  assert.equal(total('num_errors'), 1 - workers[2].status().stats.failed)
})

it('task_error replies carry the service error headers', async () => {
  const msg = await nats.nc.request('jobs.disc', JSON.stringify({ id: 'e1', task: 'fail' }), { timeout: 3000 })
  assert.equal(msg.json().error.code, 'EXECUTION_FAILED')
  assert.equal(msg.headers?.get('Nats-Service-Error-Code'), '500')
  assert.match(msg.headers?.get('Nats-Service-Error') ?? '', /^EXECUTION_FAILED: boom/)
})

it('pier-connector workers lists the live workers as JSON', async () => {
  const cli = fileURLToPath(new URL('../cli/pier-connector.js', import.meta.url))
  const { stdout } = await promisify(execFile)(process.execPath, [cli, 'workers', '--nats-url', nats.server.url, '--wait-ms', '300', '--json'])
  const listed = JSON.parse(stdout)
  assert.deepEqual(listed.map((w) => w.metadata.workerId).sort(), ['alpha', 'beta'])
})

it('pier-connector workers prints a table a person reads: one row per worker with its counts', async () => {
  const cli = fileURLToPath(new URL('../cli/pier-connector.js', import.meta.url))
  const { stdout } = await promisify(execFile)(process.execPath, [cli, 'workers', '--nats-url', nats.server.url, '--wait-ms', '300'])
  const [header, ...rest] = stdout.trimEnd().split('\n')
  assert.match(header, /^WORKER\s+SERVER\s+UP\s+RUN\s+DONE\s+FAIL\s+P50\s+EARNED\s+SPENT$/)
  assert.equal(rest.pop(), 'EARNED/SPENT –: kept private (discoveryEarnings: true publishes them)')
  assert.match(rest.pop(), /^EARNED: meta\.price of completed jobs; SPENT: model cost/)
  assert.equal(rest.pop(), '2 workers; counts since each started (UP)')
  const rows = Object.fromEntries(rest.map((line) => [line.split(/\s+/)[0], line.split(/\s{2,}/)]))
  assert.deepEqual(Object.keys(rows).sort(), ['alpha', 'beta'])
  for (const [name, cells] of Object.entries(rows)) {
    const local = workers.find((w) => w.status().workerId === name).status()
    assert.equal(cells[1], serverLabel(local.serverName))
    assert.match(cells[2], /^\d+s$|^\d+m \d\ds$/)
    assert.equal(Number(cells[4]), local.stats.completed)
    assert.equal(Number(cells[5]), local.stats.failed + local.stats.timedOut)
    assert.equal(cells[7], name === 'alpha' ? '0' : '–', 'only alpha publishes its earnings')
    assert.equal(cells[8], name === 'alpha' ? '0' : '–', 'and its spending')
  }
  for (const line of stdout.split('\n')) assert.ok(line.length <= 80, `wider than 80: ${line}`)
})
