// Prometheus metrics from a CLI worker (--metrics-port), scraped after known jobs.
import { it, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { useNats, request, waitFor } from './helpers/addon.mjs'
import { freePort } from './helpers/nats-server.mjs'
import { samples } from './helpers/metrics-text.mjs'

const CLI = fileURLToPath(new URL('../cli/pier-connector.js', import.meta.url))
const nats = useNats()
const children = new Set()
after(() => {
  for (const child of children) child.kill('SIGKILL')
})

it('serves counts, a duration histogram, state and earnings after known jobs', async () => {
  const port = await freePort()
  const child = spawn(
    process.execPath,
    [CLI, 'worker', '--exec', 'if [ "$PIER_JOB_ID" = slow ]; then sleep 5; fi; cat', '--nats-url', nats.server.url,
      '--subject', 'jobs.metrics', '--metrics-port', String(port), '--job-timeout-ms', '400'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  )
  children.add(child)
  let stderr = ''
  child.stderr.on('data', (c) => (stderr += c))
  await waitFor(() => /subscribed to/.test(stderr), { timeout: 10_000 })
  const url = `http://127.0.0.1:${port}/metrics`

  for (const [id, price] of [['a', 1.5], ['b', 2], ['c', undefined]]) {
    const reply = await request(nats.nc, 'jobs.metrics', { id, task: 'hi', meta: price ? { price } : {} })
    assert.equal(reply.result, 'hi')
  }
  const slow = await request(nats.nc, 'jobs.metrics', { id: 'slow', task: 'x' }, 5000)
  assert.equal(slow.error.code, 'TIMEOUT')
  const bad = await request(nats.nc, 'jobs.metrics', { id: 'd', type: 'task_request', task: 7 })
  assert.equal(bad.error.code, 'INVALID_REQUEST')

  const response = await fetch(url)
  assert.equal(response.status, 200)
  assert.match(response.headers.get('content-type'), /openmetrics-text|text\/plain/)
  // The job cut off at 400 ms keeps its slot until its command has exited (it is killed at the
  // deadline, a moment after the TIMEOUT answer): read the counts once it has.
  const text = await waitFor(async () => {
    const t = await (await fetch(url)).text()
    return samples(t).get('pier_jobs_in_flight') === 0 ? t : null
  }, { timeout: 5000 })
  const m = samples(text)
  assert.equal(m.get('pier_jobs_total{outcome="completed",code=""}'), 3)
  assert.equal(m.get('pier_jobs_total{outcome="timed_out",code="TIMEOUT"}'), 1)
  assert.equal(m.get('pier_jobs_total{outcome="failed",code="INVALID_REQUEST"}'), 1)
  assert.equal(m.get('pier_jobs_total{outcome="rejected",code="OVERLOADED"}'), 0)
  assert.equal(m.get('pier_earned_total'), 3.5)
  // Four jobs ran (the invalid one never did): three quick ones and one cut off at 400 ms.
  assert.equal(m.get('pier_job_duration_seconds_count'), 4)
  assert.equal(m.get('pier_job_duration_seconds_bucket{le="+Inf"}'), 4)
  assert.equal(m.get('pier_job_duration_seconds_bucket{le="0.256"}'), 3, text)
  assert.equal(m.get('pier_job_duration_seconds_bucket{le="0.512"}'), 4, text)
  assert.ok(m.get('pier_job_duration_seconds_sum') >= 0.4)
  assert.equal(m.get('pier_jobs_in_flight'), 0)
  assert.equal(m.get('pier_connection_state{state="connected"}'), 1)
  assert.equal(m.get('pier_connection_state{state="connecting"}'), 0)
  assert.equal(m.get('pier_reconnects_total'), 0)
  assert.equal(m.get('pier_reply_failures_total'), 0)
  assert.match(text, /# EOF\n$/)

  assert.equal((await fetch(`http://127.0.0.1:${port}/other`)).status, 404)
  child.kill('SIGTERM')
  await new Promise((resolve) => child.once('exit', resolve))
})

it('a PierWorker with metricsPort serves while it runs and closes the port when it stops', async () => {
  const { PierWorker } = await import('./helpers/addon.mjs')
  const port = await freePort()
  const worker = PierWorker.echo({ natsUrl: nats.server.url, subject: 'jobs.metrics2', metricsPort: port }, { logger: () => {} })
  await worker.start()
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
  assert.match(text, /pier_connection_state\{state="connected"\} 1/)
  await worker.stop()
  await assert.rejects(fetch(`http://127.0.0.1:${port}/metrics`), 'closed once the worker stops')
})

it('--log-format json writes every line as one JSON object, one info line per finished job, no task bodies', async () => {
  const child = spawn(
    process.execPath,
    [CLI, 'worker', '--echo', '--nats-url', nats.server.url, '--subject', 'jobs.jsonlog', '--worker-id', 'j1',
      '--log-format', 'json', '--allowed-senders', 'alice'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  )
  children.add(child)
  let stderr = ''
  child.stderr.on('data', (c) => (stderr += c))
  await waitFor(() => /subscribed to/.test(stderr), { timeout: 10_000 })
  const secretTask = 'TASK-BODY-MARKER-4711'
  assert.equal((await request(nats.nc, 'jobs.jsonlog', { id: 'ok1', task: secretTask, meta: { sender: 'alice', price: 7 } })).result, secretTask)
  assert.equal((await request(nats.nc, 'jobs.jsonlog', { id: 'no1', task: secretTask, meta: { sender: 'bob' } })).error.code, 'UNAUTHORIZED')
  child.kill('SIGTERM')
  await new Promise((resolve) => child.once('exit', resolve))

  const lines = stderr.trim().split('\n').map((line) => JSON.parse(line))
  for (const line of lines) {
    assert.match(line.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
    assert.ok(['debug', 'info', 'warn', 'error'].includes(line.level), JSON.stringify(line))
    assert.equal(typeof line.msg, 'string')
  }
  assert.ok(!stderr.includes(secretTask), 'no task body in any line')
  const jobs = lines.filter((l) => 'jobId' in l)
  assert.deepEqual(
    jobs.map(({ level, jobId, sender, outcome, code, price }) => ({ level, jobId, sender, outcome, code, price })),
    [
      { level: 'info', jobId: 'ok1', sender: 'alice', outcome: 'completed', code: null, price: 7 },
      { level: 'warn', jobId: 'no1', sender: 'bob', outcome: 'failed', code: 'UNAUTHORIZED', price: null },
    ],
  )
  assert.ok(jobs.every((j) => Number.isInteger(j.durationMs) && j.durationMs >= 0))
  assert.ok(lines.some((l) => /stopping/.test(l.msg)), 'the CLI\'s own lines are JSON too')
})
