#!/usr/bin/env node
// Measures what answering many Pier jobs leaves behind in a real OpenClaw gateway: the number
// of stored sessions, the size of the state directory and the gateway's RSS, every `--every`
// jobs. Real gateway (scripts/setup-e2e.sh), real nats-server, the fake model; the plugin is
// linked from this checkout packed into dist/ (scripts/pack.sh: a link to the checkout itself
// would make OpenClaw read target/). bench/gateway.mjs --long does the same next to throughput
// and latency per sample.
//
//   node scripts/measure-sessions.mjs [--jobs 1000] [--every 100] [--keep 0] [--concurrency 4]
//
// --keep is channels.pier.keepSessions; a huge value (e.g. 1000000) shows the growth without
// pruning. Prints one JSON line per sample and a summary.
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { startNatsServer } from '../__test__/helpers/nats-server.mjs'
import { startFakeModel } from '../__test__/helpers/fake-model.mjs'
import { createOpenClawHome, packPlugin } from '../__test__/helpers/openclaw.mjs'
import { rawClient, request, waitFor } from '../__test__/helpers/addon.mjs'

const { values: opts } = parseArgs({
  options: {
    jobs: { type: 'string', default: '1000' },
    every: { type: 'string', default: '100' },
    keep: { type: 'string', default: '0' },
    concurrency: { type: 'string', default: '4' },
  },
})
const JOBS = Number(opts.jobs)
const EVERY = Number(opts.every)
const CONCURRENCY = Number(opts.concurrency)
const SUBJECT = 'jobs.measure'

const nats = await startNatsServer({ name: 'pier-measure' })
const nc = await rawClient(nats.url)
const model = await startFakeModel()
const home = await createOpenClawHome({ modelBaseUrl: model.baseUrl, registryUrl: 'http://127.0.0.1:9/' })
let gateway
try {
  await home.cli(['plugins', 'install', '--link', packPlugin().dir, '--force', '--accept-capabilities'])
  const config = home.readConfig()
  config.channels = {
    pier: { natsUrl: nats.url, subject: SUBJECT, workerId: 'measure', maxConcurrentJobs: CONCURRENCY, jobTimeoutMs: 60_000, keepSessions: Number(opts.keep) },
  }
  config.tools = { ...config.tools, toolSearch: false }
  home.writeConfig(config)
  gateway = await home.startGateway()

  const stateBytes = () => Number(execFileSync('du', ['-sb', home.env.OPENCLAW_STATE_DIR], { encoding: 'utf8' }).split('\t')[0])
  /** Bytes of the SQLite files and of the `.deleted` transcript archives under the state dir. */
  const split = () => {
    const files = execFileSync('find', [home.env.OPENCLAW_STATE_DIR, '-type', 'f', '-printf', '%s %p\n'], { encoding: 'utf8' }).trim().split('\n')
    let db = 0
    let archives = 0
    for (const line of files) {
      const [size, ...rest] = line.split(' ')
      const path = rest.join(' ')
      if (/\.sqlite(-wal|-shm)?$/.test(path)) db += Number(size)
      else if (/\.deleted\./.test(path)) archives += Number(size)
    }
    return { dbMB: +(db / 1e6).toFixed(2), archivesMB: +(archives / 1e6).toFixed(2) }
  }
  const rssMb = () => {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${gateway.child.pid}/status`, 'utf8'))
    return m ? Math.round(Number(m[1]) / 1024) : null
  }
  const pierSessions = async () => {
    const out = JSON.parse(await home.cli(['gateway', 'call', 'sessions.list', '--params', '{"limit":100000}', '--json']))
    return (out.sessions ?? []).filter((s) => s.key.includes(':pier:')).length
  }
  const sample = async (done, startedAt) => {
    const row = { jobs: done, pierSessions: await pierSessions(), stateMB: +(stateBytes() / 1e6).toFixed(2), ...split(), rssMB: rssMb(), secs: Math.round((Date.now() - startedAt) / 1000) }
    console.log(JSON.stringify(row))
    return row
  }

  // The first job waits for the worker to subscribe.
  await waitFor(async () => {
    try {
      return await request(nc, SUBJECT, { id: 'warm', task: 'PIERQ:warm', timeoutMs: 60_000 }, 90_000)
    } catch (error) {
      if (/no responders/i.test(error.message)) return null
      throw error
    }
  }, { timeout: 90_000, interval: 500 })
  const startedAt = Date.now()
  const rows = [await sample(0, startedAt)]
  let next = 0
  let failed = 0
  let done = 0
  while (done < JOBS) {
    const batch = Math.min(EVERY, JOBS - done)
    let issued = 0
    const lane = async () => {
      while (issued < batch) {
        const id = `m-${next++}`
        issued++
        const reply = await request(nc, SUBJECT, { id, task: `PIERQ:${id}`, timeoutMs: 60_000 }, 90_000)
        if (reply.type !== 'task_result') failed++
      }
    }
    await Promise.all(Array.from({ length: CONCURRENCY }, lane))
    done += batch
    // Finished sessions are deleted once no job runs (plugin/sessions.mjs): wait for that.
    if (Number(opts.keep)) await new Promise((r) => setTimeout(r, 1500))
    else await waitFor(async () => (await pierSessions()) === 0, { timeout: 600_000, interval: 1000 })
    rows.push(await sample(done, startedAt))
  }
  const first = rows[1] ?? rows[0]
  const last = rows.at(-1)
  console.log(
    JSON.stringify({
      summary: true,
      jobs: JOBS,
      failed,
      keepSessions: Number(opts.keep),
      concurrency: CONCURRENCY,
      pierSessions: { after: last.pierSessions, max: Math.max(...rows.map((r) => r.pierSessions)) },
      stateMB: { afterFirstSample: first.stateMB, after: last.stateMB },
      dbMB: { afterFirstSample: first.dbMB, after: last.dbMB },
      archivesMB: { afterFirstSample: first.archivesMB, after: last.archivesMB },
      rssMB: { afterFirstSample: first.rssMB, after: last.rssMB },
      jobsPerSecond: +(JOBS / ((Date.now() - startedAt) / 1000)).toFixed(2),
    }),
  )
} finally {
  await gateway?.stop()
  await nc.close()
  await nats.stop()
  await model.close()
  home.cleanup()
}
