// What a job costs and earns, without OpenClaw: a JS handler's usage reaches the worker's
// stats, its /metrics and its ledger; the CLI sums the ledger; pier_publish explains
// PRICE_TOO_LOW; job turns carry the account's token cap and model. (The real gateway:
// e2e/economics.test.mjs.)
import { it, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { fileURLToPath } from 'node:url'
import { PierWorker, ledgerDays, useNats, request, memoryLogger } from './helpers/addon.mjs'
import { freePort } from './helpers/nats-server.mjs'
import { replyHint, createPublishTool } from '../plugin/tool.mjs'
import { recordApproval } from '../plugin/approved-calls.mjs'
import { jobTurnParams, jobModelParams, usageOf } from '../plugin/agent-turn.mjs'
import { formatAccount } from '../plugin/command.mjs'
import { ledgerToday } from '../plugin/ledger.mjs'
import { samples } from './helpers/metrics-text.mjs'

const CLI = fileURLToPath(new URL('../cli/pier-connector.js', import.meta.url))
const nats = useNats()
const dir = mkdtempSync(join(tmpdir(), 'pier-economics-'))
after(() => rmSync(dir, { recursive: true, force: true }))

it("a handler's usage is counted, logged and written in the ledger; a job without usage records no tokens", async () => {
  const ledgerFile = join(dir, 'worker', 'ledger.jsonl')
  const metricsPort = await freePort()
  const logger = memoryLogger()
  const turns = {
    // OpenClaw's usage shape: cost as { total }.
    big: { result: 'done big', usage: { input: 1200, output: 300, cacheRead: 50, cacheWrite: 0, total: 1550, cost: { total: 0.0042 } } },
    small: { result: 'done small', usage: { input: 10, output: 5, cost: 0.0001 } },
    // A failed turn spent tokens too.
    failed: { error: { code: 'EXECUTION_FAILED', message: 'no reply' }, usage: { input: 7, output: 0, cost: 0.00002 } },
    plain: 'no usage',
  }
  const worker = new PierWorker(
    { natsUrl: nats.server.url, subject: 'eco.unit', workerId: 'eco-unit', ledgerFile, metricsPort, minJobPrice: 2 },
    (job) => turns[job.task],
    { logger },
  )
  await worker.start()
  try {
    for (const [task, price] of [['big', 5], ['small', 2], ['failed', 3], ['plain', 4]]) {
      const reply = await request(nats.nc, 'eco.unit', { id: task, task, meta: { price, sender: 'alice' } })
      if (task === 'failed') assert.equal(reply.error.code, 'EXECUTION_FAILED')
      else assert.equal(reply.result, typeof turns[task] === 'string' ? turns[task] : turns[task].result)
    }
    const cheap = await request(nats.nc, 'eco.unit', { id: 'cheap', task: 'big', meta: { price: 1 } })
    assert.equal(cheap.error.code, 'PRICE_TOO_LOW')
    assert.match(cheap.error.message, /at least 2 \(meta\.price\); this one offers 1/)

    const stats = worker.status().stats
    assert.equal(stats.tokensIn, 1217)
    assert.equal(stats.tokensOut, 305)
    assert.equal(stats.cacheReadTokens, 50)
    assert.ok(Math.abs(stats.spent - 0.00432) < 1e-12, String(stats.spent))
    assert.equal(stats.earned, 11, 'the failed job earns nothing')

    const m = samples(await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text())
    assert.equal(m.get('pier_job_tokens_total{direction="input"}'), 1217)
    assert.equal(m.get('pier_job_tokens_total{direction="output"}'), 305)
    assert.equal(m.get('pier_job_tokens_total{direction="cache_read"}'), 50)
    assert.ok(Math.abs(m.get('pier_job_cost_total') - 0.00432) < 1e-12)
    assert.equal(m.get('pier_jobs_total{outcome="rejected",code="PRICE_TOO_LOW"}'), 1)
    assert.equal([...m.keys()].filter((k) => /alice|eco-unit/.test(k)).length, 0, 'no label per sender or worker')

    const log = logger.text()
    assert.match(log, /job big completed in \d+ ms \(tokens in 1200, out 300, cache read 50, cache write 0, cost 0\.0042\)/)
    assert.match(log, /job failed answered EXECUTION_FAILED: no reply \(tokens in 7, out 0, cost 0\.00002\)/)
    assert.match(log, /job plain completed in \d+ ms\n|job plain completed in \d+ ms$/m)
  } finally {
    await worker.stop()
  }

  const lines = readFileSync(ledgerFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l))
  assert.deepEqual(lines.map((l) => [l.id, l.outcome, l.earned]), [['big', 'completed', 5], ['small', 'completed', 2], ['failed', 'failed', 0], ['plain', 'completed', 4]])
  assert.equal(lines[0].tokensIn, 1200)
  assert.equal(lines[0].cost, 0.0042)
  assert.equal(lines[0].sender, 'alice')
  assert.equal(lines[0].job, undefined, 'an unsigned core job cannot run twice: nothing names it across runs')
  assert.equal(lines[2].code, 'EXECUTION_FAILED')
  assert.equal(lines[3].tokensIn, undefined, 'no usage measured: no token fields, cost 0')
  assert.equal(lines[3].cost, 0)
  assert.doesNotMatch(readFileSync(ledgerFile, 'utf8'), /done big|"task"/)

  const { stdout } = await promisify(execFile)(process.execPath, [CLI, 'ledger', '--ledger', ledgerFile, '--since', '1d', '--json'])
  const summed = JSON.parse(stdout)
  assert.equal(summed.days.length, 1)
  assert.equal(summed.days[0].day, new Date().toISOString().slice(0, 10))
  assert.deepEqual([summed.total.jobs, summed.total.completed, summed.total.earned, summed.total.tokensIn], [4, 3, 11, 1217])
  assert.ok(Math.abs(summed.total.spent - 0.00432) < 1e-12)
  const table = (await promisify(execFile)(process.execPath, [CLI, 'ledger', '--ledger', ledgerFile])).stdout
  assert.match(table, /^DAY \(UTC\) +JOBS +DONE +EARNED +SPENT +MARGIN +TOKENS IN +OUT\n/)
  assert.match(table, /\ntotal +4 +3 +11 +0\.00432 +11 +1217 +305\n/)
})

it('a daily budget stops jobs before the model once spent; status, /pier and the ledger CLI show the day against it', async () => {
  const ledgerFile = join(dir, 'budget', 'ledger.jsonl')
  const metricsPort = await freePort()
  let calls = 0
  const usage = { input: 400, output: 100, cacheRead: 0, cacheWrite: 0, cost: 0.5 }
  const config = { natsUrl: nats.server.url, subject: 'eco.budget', workerId: 'eco-budget', ledgerFile, metricsPort, maxDailySpend: 1 }
  const worker = new PierWorker(config, (job) => (calls++, { result: `done ${job.id}`, usage }))
  await worker.start()
  try {
    assert.deepEqual(worker.status().today, {
      day: new Date().toISOString().slice(0, 10),
      spent: 0,
      tokens: 0,
      maxDailySpend: 1,
      maxDailyTokens: 0,
      countedFrom: 'ledger',
      jobs: 0,
      completed: 0,
      undelivered: 0,
      reruns: 0,
      earned: 0,
      margin: 0,
    })
    for (const id of ['d1', 'd2']) assert.equal((await request(nats.nc, 'eco.budget', { id, task: 't' })).result, `done ${id}`)
    const refused = await request(nats.nc, 'eco.budget', { id: 'd3', task: 't' })
    assert.equal(refused.error.code, 'BUDGET_EXHAUSTED')
    assert.match(refused.error.message, /spending cap for the day \(1\) is reached/)
    assert.equal(calls, 2, 'the refused job never reached the handler')
    const status = worker.status()
    assert.deepEqual([status.today.spent, status.today.tokens], [1, 1000])
    assert.equal(status.stats.errorsByCode.BUDGET_EXHAUSTED, 1)
    const m = samples(await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text())
    assert.equal(m.get('pier_jobs_total{outcome="rejected",code="BUDGET_EXHAUSTED"}'), 1)
    assert.equal(m.get('pier_jobs_total{outcome="rejected",code="RATE_LIMITED"}'), 0)
    // /pier: the day's use against the budget, in 80 columns.
    const today = await ledgerToday(ledgerFile)
    // The running worker counts its day as its ledger does.
    for (const key of ['jobs', 'completed', 'earned', 'spent', 'margin', 'tokens']) assert.equal(status.today[key], today[key], key)
    const text = formatAccount('default', status, { today, config })
    // (The last error line quotes the refusal, as it quotes any error.)
    for (const line of text.split('\n').filter((l) => !l.startsWith('  last error:'))) assert.ok(line.length <= 80, `${line.length}: ${line}`)
    assert.match(text, /\n  today: spent 1 of maxDailySpend 1\n  budget reached: new jobs get BUDGET_EXHAUSTED until 00:00 UTC\n/)
    assert.match(text, /today \(UTC\): 2 jobs, earned 0, spent 1, margin -1/)
  } finally {
    await worker.stop()
  }
  // The ledger CLI shows the day against the budget the config names.
  const table = (await promisify(execFile)(process.execPath, [CLI, 'ledger', '--ledger', ledgerFile, '--max-daily-spend', '1', '--max-daily-tokens', '5000'])).stdout
  assert.match(table, /\nbudget today \(\d{4}-\d\d-\d\d UTC\): spent 1 of maxDailySpend 1, tokens 1000 of maxDailyTokens 5000 \(input, output and cache\), reached: new jobs are answered BUDGET_EXHAUSTED until 00:00 UTC\n/)
  const json = JSON.parse((await promisify(execFile)(process.execPath, [CLI, 'ledger', '--ledger', ledgerFile, '--max-daily-spend', '1', '--json'])).stdout)
  assert.deepEqual([json.budget.spent, json.budget.tokens, json.budget.maxDailySpend, json.budget.reached], [1, 1000, 1, true])
  const plain = JSON.parse((await promisify(execFile)(process.execPath, [CLI, 'ledger', '--ledger', ledgerFile, '--json'])).stdout)
  assert.equal(plain.budget, undefined, 'no budget in the config: none shown')

  // Started again the same day on the same ledger: still spent, nothing runs.
  const again = new PierWorker(config, () => (calls++, 'ran'))
  await again.start()
  try {
    assert.equal(again.status().today.spent, 1)
    assert.equal((await request(nats.nc, 'eco.budget', { id: 'd4', task: 't' })).error.code, 'BUDGET_EXHAUSTED')
    assert.equal(calls, 2)
  } finally {
    await again.stop()
  }
})

it('pier_publish tells a requester what PRICE_TOO_LOW means and whether it may pay more', async () => {
  const worker = PierWorker.echo({ natsUrl: nats.server.url, subject: 'eco.floor', minJobPrice: 5 })
  await worker.start()
  const config = { channels: { pier: { natsUrl: nats.server.url, publishSubject: 'eco.floor', maxPublishPrice: 3 } } }
  const quiet = { info() {}, warn() {}, error() {}, addon() {} }
  const tool = createPublishTool({ runtime: { config: { current: () => config } } }, quiet)
  // A person allowed each paid call (what the approval hook records for allow-once).
  recordApproval('c1', { task: 'cheap', timeoutMs: 5000, meta: { price: 2 } })
  recordApproval('c2', { task: 'cheap', timeoutMs: 5000, meta: { price: 2 } })
  recordApproval('c3', { task: 'paid', timeoutMs: 5000, meta: { price: 5 } })
  try {
    const refused = (await tool.execute('c1', { task: 'cheap', timeoutMs: 5000, meta: { price: 2 } })).details
    assert.equal(refused.error.code, 'PRICE_TOO_LOW')
    assert.match(refused.hint, /meta\.price \(2\) is below the minimum that worker takes \(5\)\. This account may not pay that much \(maxPublishPrice is 3\)/)
    config.channels.pier.maxPublishPrice = 10
    const again = (await tool.execute('c2', { task: 'cheap', timeoutMs: 5000, meta: { price: 2 } })).details
    assert.match(again.hint, /publish it again with meta\.price 5 \(within this account's maxPublishPrice of 10\)/)
    const paid = (await tool.execute('c3', { task: 'paid', timeoutMs: 5000, meta: { price: 5 } })).details
    assert.deepEqual([paid.ok, paid.result, paid.hint], [true, 'paid', undefined])
  } finally {
    await tool.close()
    await worker.stop()
  }

  const other = { ok: false, error: { code: 'PRICE_TOO_LOW', message: 'pay more' } }
  assert.match(replyHint(other, { maxPublishPrice: 10, price: 1 }), /publish it again with a higher meta\.price, up to this account's maxPublishPrice of 10/)
  assert.match(replyHint(other, { maxPublishPrice: 1, price: 1 }), /may not pay that much \(maxPublishPrice is 1\)/)
  assert.equal(replyHint({ ok: true, result: 'x' }, { maxPublishPrice: 1, price: 1 }), undefined)
  assert.equal(replyHint({ ok: false, error: { code: 'OVERLOADED' } }, { maxPublishPrice: 1, price: 1 }), undefined)
})

it("a job turn carries the account's token cap and job model; OpenClaw's usage is read from agentMeta", () => {
  assert.deepEqual(jobModelParams({ maxOutputTokens: 300, jobModel: 'vllm/fake-cheap' }), { streamParams: { maxTokens: 300 }, provider: 'vllm', model: 'fake-cheap' })
  assert.deepEqual(jobModelParams({ maxOutputTokens: 0, jobModel: '' }), {})
  const params = jobTurnParams({ job: { id: 'j', task: 't', timeoutMs: 1000 }, agentId: 'main', ids: {}, runId: 'r', workspaceDir: '/w', offered: [], handle: 'h', limits: { maxOutputTokens: 64 } })
  assert.deepEqual(params.streamParams, { maxTokens: 64 })
  assert.equal(params.model, undefined)
  assert.deepEqual(usageOf({ meta: { agentMeta: { usage: { input: 3, output: 2, cacheRead: 1, total: 6, cost: { total: 0.5 } } } } }), { input: 3, output: 2, cacheRead: 1, cacheWrite: 0, cost: 0.5 })
  assert.equal(usageOf({ meta: {} }), undefined)
})

it("/pier's account block fits a chat 80 columns wide and says the counts restart", () => {
  const status = {
    state: 'connected', servers: 'nats://127.0.0.1:4222', serverName: 'NCXGZ5QMLOHTGBXR7UR45FLX3ROIDOG6CZD3ZMHDRR7L6RLSS5FT3XE6', serverVersion: '2.10.22',
    workerId: 'eco-1', maxConcurrentJobs: 4, subject: 'jobs.worker', queueGroup: 'openclaw-workers', publishSubject: 'jobs.submit', uptimeMs: 185_000,
    stats: { received: 120, completed: 100, failed: 10, rejected: 8, timedOut: 2, inFlight: 0, earned: 1500, spent: 0.8123, tokensIn: 123456, tokensOut: 23456, cacheReadTokens: 0, cacheWriteTokens: 0, reconnects: 0, disconnects: 0 },
  }
  const today = { day: '2026-12-06', jobs: 12, completed: 11, earned: 150, spent: 0.08, margin: 149.92 }
  const text = formatAccount('default', status, { today })
  for (const line of text.split('\n')) assert.ok(line.length <= 80, `${line.length}: ${line}`)
  assert.doesNotMatch(text, /NCXGZ5Q/, 'no server id')
  assert.doesNotMatch(text, /subjects: jobs/)
  assert.match(text, /server nats:\/\/127\.0\.0\.1:4222 \(v2\.10\.22\)/)
  assert.match(text, /money: earned 1500 \(meta\.price\), spent 0\.8123 \(model cost\)/)
  assert.match(text, /today \(UTC\): 12 jobs, earned 150, spent 0\.08, margin 149\.9/)
  assert.match(text, /the counts below start again with the worker/)
  assert.match(text, /jobs: 120 received, 100 completed, 10 failed, 2 timed out, 0 running\n  refused: 8 /)
})

it('reading a ledger never blocks the event loop; a line cut short is skipped, counted, and swallows nothing', async () => {
  const ledgerFile = join(dir, 'big', 'ledger.jsonl')
  mkdirSync(join(dir, 'big'))
  const day = new Date().toISOString().slice(0, 10)
  const line = (i, outcome, earned, rerun) =>
    JSON.stringify({ time: `${day}T00:00:00.000Z`, worker: 'w', id: `j${i}`, job: `pier-seq-${i}`, price: 1, earned, outcome, ...(rerun ? { rerun: true } : {}), code: null, cost: 0.5, durationMs: 1 })
  // 60,000 jobs (about 10 MB), one of them undelivered and run again, and a line a crash
  // cut short, followed by a whole one.
  const lines = [line(0, 'undelivered', 0, false), line(0, 'completed', 1, true)]
  for (let i = 1; i < 60_000; i++) lines.push(line(i, 'completed', 1, false))
  writeFileSync(ledgerFile, `${lines.join('\n')}\n{"time":"${day}T01:00:00.000Z","wor\n${line(60_000, 'completed', 1, false)}\n`)
  let last = performance.now()
  let longestStall = 0
  const timer = setInterval(() => {
    const now = performance.now()
    longestStall = Math.max(longestStall, now - last)
    last = now
  }, 1)
  const started = performance.now()
  const pending = ledgerDays(ledgerFile)
  assert.ok(pending instanceof Promise, 'read off the JavaScript thread')
  const read = await pending
  const took = performance.now() - started
  clearInterval(timer)
  assert.equal(read.unreadableLines, 1)
  assert.equal(read.days.length, 1)
  const today = read.days[0]
  assert.deepEqual([today.jobs, today.completed, today.earned, today.undelivered, today.reruns], [60_001, 60_001, 60_001, 1, 1])
  assert.equal(today.spent, 0.5 * 60_002, 'every run spent')
  // The event loop kept turning while the file was read.
  assert.ok(took > 20, `a read long enough to tell (${took} ms)`)
  assert.ok(longestStall < took / 2, `the event loop stalled ${longestStall} ms of a ${took} ms read`)
  const shown = await ledgerToday(ledgerFile)
  assert.equal(shown.unreadableLines, 1)
  assert.match(formatAccount('default', null, { today: shown }), /today \(UTC\): 60001 jobs, earned 60001, spent 30001, margin 30000\n  runs: 1 rerun, 1 undelivered \(spent; each job counted once\)\n  ledger: 1 unreadable line skipped/)
  await assert.rejects(ledgerDays(join(dir, 'big')), (error) => error.code === 'PIER_REQUEST')
})
