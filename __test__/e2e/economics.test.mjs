// End to end: what a job costs and what it earns, in a real gateway (Node 24,
// openclaw@2026.9.6) with the fake model reporting usage (120 prompt and 30 completion tokens
// per request) and priced through its cost config. An account with maxOutputTokens 300,
// minJobPrice 5 and metrics; one that runs jobs on a cheaper model (jobModel). The ledger lives
// in the plugin's file under the state dir, survives a gateway restart, and the CLI sums it.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { fileURLToPath } from 'node:url'
import { startNatsServer, freePort } from '../helpers/nats-server.mjs'
import { startFakeModel, answerFor, USAGE } from '../helpers/fake-model.mjs'
import { createOpenClawHome, packPlugin } from '../helpers/openclaw.mjs'
import { firstRequest, rawClient, request, waitFor } from '../helpers/addon.mjs'
import { samples } from '../helpers/metrics-text.mjs'

const CLI = fileURLToPath(new URL('../../cli/pier-connector.js', import.meta.url))
// Per million tokens, as OpenClaw's model cost config reads.
const COST = { input: 2, output: 10, cacheRead: 0, cacheWrite: 0 }
const CHEAP_COST = { input: 1, output: 4, cacheRead: 0, cacheWrite: 0 }
const costOf = (requests, cost) => requests * (USAGE.prompt * cost.input + USAGE.completion * cost.output) / 1e6
let nats, nc, model, home, gateway, metricsPort, ledgerFile

const requestsOf = (marker) => model.requests.filter((r) => r.messages.includes(marker))

const metrics = async () => samples(await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text())
const ledgerLines = () => readFileSync(ledgerFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l))

before(async () => {
  nats = await startNatsServer({ name: 'pier-economics-e2e' })
  nc = await rawClient(nats.url)
  model = await startFakeModel()
  home = await createOpenClawHome({ modelBaseUrl: model.baseUrl, registryUrl: 'http://127.0.0.1:9/' })
  await home.cli(['plugins', 'install', '--link', packPlugin().dir, '--force', '--accept-capabilities'])
  metricsPort = await freePort()
  const config = home.readConfig()
  const provider = config.models.providers.vllm
  provider.models[0].cost = COST
  provider.models.push({ ...provider.models[0], id: 'fake-cheap', name: 'Fake cheap', cost: CHEAP_COST })
  config.channels = {
    pier: {
      natsUrl: nats.url,
      jobTimeoutMs: 30_000,
      accounts: {
        default: { subject: 'eco.jobs', workerId: 'eco-1', maxOutputTokens: 300, minJobPrice: 5, metricsPort },
        cheap: { subject: 'eco.cheap', workerId: 'eco-cheap', jobModel: 'vllm/fake-cheap' },
      },
    },
  }
  home.writeConfig(config)
  const validated = JSON.parse(await home.cli(['config', 'validate', '--json']))
  assert.equal(validated.valid, true, JSON.stringify(validated))
  ledgerFile = join(home.dir, 'state', 'pier', 'ledger', 'default.jsonl')
  gateway = await home.startGateway()
})

after(async () => {
  if (process.env.PIER_E2E_LOG && gateway) writeFileSync(process.env.PIER_E2E_LOG, gateway.log())
  await gateway?.stop()
  await nc?.close()
  await nats?.stop()
  await model?.close()
  home?.cleanup()
})

describe('what a job costs and what it earns', () => {
  it('with maxOutputTokens 300 every model request of a job turn carries max_tokens <= 300', async () => {
    for (const [word, price] of [['ecoa', 5], ['ecob', 10]]) {
      const reply = await firstRequest(nc, 'eco.jobs', { type: 'task_request', id: word, task: `PIERQ:${word}`, meta: { price, sender: 'alice' } })
      assert.equal(reply.type, 'task_result', JSON.stringify(reply))
      assert.equal(reply.result, answerFor(word))
      const sent = requestsOf(`PIERQ:${word}`)
      assert.ok(sent.length >= 1, 'the turn reached the model')
      for (const r of sent) {
        assert.equal(typeof r.maxTokens, 'number', 'max_tokens is sent')
        assert.ok(r.maxTokens <= 300, `max_tokens ${r.maxTokens}`)
      }
    }
  })

  it("/metrics counts the tokens and the cost the model's usage and cost config give", async () => {
    const turns = requestsOf('PIERQ:ecoa').length + requestsOf('PIERQ:ecob').length
    const m = await waitFor(async () => {
      const m = await metrics()
      return m.get('pier_jobs_total{outcome="completed",code=""}') === 2 ? m : null
    })
    assert.equal(m.get('pier_job_tokens_total{direction="input"}'), turns * USAGE.prompt)
    assert.equal(m.get('pier_job_tokens_total{direction="output"}'), turns * USAGE.completion)
    const cost = m.get('pier_job_cost_total')
    assert.ok(cost > 0 && Math.abs(cost - costOf(turns, COST)) < 1e-12, `cost ${cost}, wanted ${costOf(turns, COST)}`)
    assert.equal(m.get('pier_earned_total'), 15)
  })

  it('with minJobPrice 5 a job offering 1 is answered PRICE_TOO_LOW and never reaches the model', async () => {
    const cheap = await request(nc, 'eco.jobs', { type: 'task_request', id: 'eco-cheap-offer', task: 'PIERQ:ecocheap', meta: { price: 1 } })
    assert.equal(cheap.type, 'task_error')
    assert.equal(cheap.error.code, 'PRICE_TOO_LOW')
    assert.match(cheap.error.message, /at least 5 .*offers 1/)
    const unpriced = await request(nc, 'eco.jobs', { type: 'task_request', id: 'eco-no-price', task: 'PIERQ:econone' })
    assert.equal(unpriced.error.code, 'PRICE_TOO_LOW')
    assert.equal(requestsOf('PIERQ:ecocheap').length, 0, 'the model never saw it')
    assert.equal(requestsOf('PIERQ:econone').length, 0)
    const m = await metrics()
    assert.equal(m.get('pier_jobs_total{outcome="rejected",code="PRICE_TOO_LOW"}'), 2)
  })

  it('jobModel runs job turns on the cheaper model, priced by its own cost config', async () => {
    const reply = await firstRequest(nc, 'eco.cheap', { type: 'task_request', id: 'ecoc', task: 'PIERQ:ecoc' })
    assert.equal(reply.result, answerFor('ecoc'))
    const sent = requestsOf('PIERQ:ecoc')
    assert.ok(sent.length >= 1)
    for (const r of sent) assert.equal(r.model, 'fake-cheap')
    for (const r of requestsOf('PIERQ:ecoa')) assert.equal(r.model, 'fake-model', "the other account: the agent's model")
    const line = await waitFor(() => {
      const file = join(home.dir, 'state', 'pier', 'ledger', 'cheap.jsonl')
      return existsSync(file) && JSON.parse(readFileSync(file, 'utf8').trim().split('\n').at(-1))
    })
    assert.equal(line.id, 'ecoc')
    assert.ok(Math.abs(line.cost - costOf(sent.length, CHEAP_COST)) < 1e-12, JSON.stringify(line))
  })

  it('the ledger has one line per job, survives a gateway restart, and `ledger` sums it', async () => {
    const before = ledgerLines()
    assert.deepEqual(before.map((l) => l.id), ['ecoa', 'ecob'], 'refused jobs are not in it')
    for (const l of before) {
      assert.equal(l.outcome, 'completed')
      assert.equal(l.worker, 'eco-1')
      assert.equal(l.sender, 'alice')
      assert.equal(l.tokensIn, requestsOf(`PIERQ:${l.id}`).length * USAGE.prompt)
      assert.equal(l.tokensOut, requestsOf(`PIERQ:${l.id}`).length * USAGE.completion)
    }
    assert.doesNotMatch(readFileSync(ledgerFile, 'utf8'), /PIERQ|answer-eco/, 'no task or result text')

    await gateway.stop()
    gateway = await home.startGateway()
    const reply = await firstRequest(nc, 'eco.jobs', { type: 'task_request', id: 'ecod', task: 'PIERQ:ecod', meta: { price: 7 } })
    assert.equal(reply.result, answerFor('ecod'))
    const after = await waitFor(() => (ledgerLines().length === 3 ? ledgerLines() : null))
    assert.deepEqual(after.map((l) => l.id), ['ecoa', 'ecob', 'ecod'])

    const { stdout } = await promisify(execFile)(process.execPath, [CLI, 'ledger', '--ledger', ledgerFile, '--since', '7d', '--json'])
    const summed = JSON.parse(stdout)
    const turns = ['ecoa', 'ecob', 'ecod'].reduce((n, id) => n + requestsOf(`PIERQ:${id}`).length, 0)
    assert.equal(summed.total.jobs, 3)
    assert.equal(summed.total.earned, 22)
    assert.ok(Math.abs(summed.total.spent - costOf(turns, COST)) < 1e-12, JSON.stringify(summed.total))
    assert.equal(summed.total.tokensIn, turns * USAGE.prompt)

    // /pier: the counts restarted with the gateway; today's ledger line did not.
    const key = 'agent:main:main'
    await home.call('chat.send', { sessionKey: key, message: '/pier', idempotencyKey: `eco-${Date.now()}` })
    const history = await waitFor(
      async () => {
        const h = JSON.stringify(await home.call('chat.history', { sessionKey: key, limit: 6 }), null, 2)
        return /Pier connector/.test(h) ? h : null
      },
      { timeout: 30_000, interval: 500 },
    )
    const text = JSON.parse(JSON.stringify(history)).replace(/\\n/g, '\n')
    assert.match(text, /account default\n[\s\S]*?jobs: 1 received, 1 completed/)
    assert.match(text, /today \(UTC\): 3 jobs, earned 22, spent /)
  })
})
