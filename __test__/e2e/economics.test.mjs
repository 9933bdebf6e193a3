// End to end: what a job costs and what it earns, in a real gateway (Node 24,
// openclaw@2026.9.6) with the fake model reporting usage (120 prompt and 30 completion tokens
// per request) and priced through its cost config. An account with maxOutputTokens 300,
// minJobPrice 5 and metrics; one that runs jobs on a cheaper model (jobModel). The ledger lives
// in the plugin's file under the state dir, survives a gateway restart, and the CLI sums it.
//
// Then what keeps a worker from spending more than its operator offered, in the same gateway,
// measured where it costs (the model server counts the requests it has open): a cap of 2
// concurrent jobs under a flood of short deadlines against a model slower than every deadline,
// a daily budget, and per-sender shares (signed senders each, unsigned ones together). And the
// other side of the money: a paid pier_publish from a chat turn asks the person at that chat
// (OpenClaw's plugin approval, answered with /approve), and is published only when allowed.
//
// And progress and cancellation (protocol v1.1), on an account of their own in the same gateway:
// a job turn's streamed text reaches a requester that asked for progress as partials that are its
// result; a cancelled turn is answered CANCELLED within a second, makes no further model request,
// and its ledger line is written.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { fileURLToPath } from 'node:url'
import { startNatsServer, freePort } from '../helpers/nats-server.mjs'
import { startFakeModel, answerFor, afterPublishFor, dripFor, USAGE } from '../helpers/fake-model.mjs'
import { createOpenClawHome, packPlugin } from '../helpers/openclaw.mjs'
import { askWithProgress, firstRequest, rawClient, request, waitFor, sleep, PierClient } from '../helpers/addon.mjs'
import { createUser } from '@nats-io/nkeys'
import { samples } from '../helpers/metrics-text.mjs'

const CLI = fileURLToPath(new URL('../../cli/pier-connector.js', import.meta.url))
// Per million tokens, as OpenClaw's model cost config reads.
const COST = { input: 2, output: 10, cacheRead: 0, cacheWrite: 0 }
const CHEAP_COST = { input: 1, output: 4, cacheRead: 0, cacheWrite: 0 }
const costOf = (requests, cost) => requests * (USAGE.prompt * cost.input + USAGE.completion * cost.output) / 1e6
let nats, nc, model, home, gateway, metricsPort, ledgerFile

// The flood account's cap, and the budget account's daily spending cap: two and a half model
// requests' cost, so two jobs of one request each stay under it and the third reaches it.
const FLOOD_CAP = 2
const DAILY_SPEND = 2.5 * costOf(1, COST)
const SHARE = { signed: 2, unsigned: 3 }

const requestsOf = (marker) => model.requests.filter((r) => r.messages.includes(marker))

const metrics = async () => samples(await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text())
const ledgerLines = () => readFileSync(ledgerFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l))

before(async () => {
  nats = await startNatsServer({ name: 'pier-economics-e2e' })
  nc = await rawClient(nats.url)
  // PIERQ:slow… answers after 10 minutes: past every deadline here, so only an abort ends it.
  model = await startFakeModel({ slowMs: 600_000 })
  home = await createOpenClawHome({ modelBaseUrl: model.baseUrl, registryUrl: 'http://127.0.0.1:9/' })
  await home.cli(['plugins', 'install', '--link', packPlugin().dir, '--force', '--accept-capabilities'])
  metricsPort = await freePort()
  const config = home.readConfig()
  const provider = config.models.providers.vllm
  provider.models[0].cost = COST
  provider.models.push({ ...provider.models[0], id: 'fake-cheap', name: 'Fake cheap', cost: CHEAP_COST })
  // The main agent may call pier_publish (a chat turn's model does: PIERPUB).
  config.tools = { alsoAllow: ['pier_publish'] }
  config.channels = {
    pier: {
      natsUrl: nats.url,
      jobTimeoutMs: 30_000,
      accounts: {
        default: { subject: 'eco.jobs', workerId: 'eco-1', maxOutputTokens: 300, minJobPrice: 5, metricsPort, publishSubject: 'eco.submit', maxPublishPrice: 10 },
        cheap: { subject: 'eco.cheap', workerId: 'eco-cheap', jobModel: 'vllm/fake-cheap' },
        flood: { subject: 'eco.flood', workerId: 'eco-flood', maxConcurrentJobs: FLOOD_CAP },
        budget: { subject: 'eco.budget', workerId: 'eco-budget', maxDailySpend: DAILY_SPEND },
        rates: { subject: 'eco.rates', workerId: 'eco-rates', senderJobsPerMinute: SHARE.signed, unsignedJobsPerMinute: SHARE.unsigned, maxConcurrentJobs: 8 },
        progress: { subject: 'eco.progress', workerId: 'eco-progress', jobTimeoutMs: 60_000, progressIntervalMs: 500 },
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

/** Resolves once an account's worker answers on `subject`: a malformed job, refused before it uses a share or reaches the model. */
const ready = (subject) => firstRequest(nc, subject, 'not a job')
const ledgerOf = (account) => {
  const file = join(home.dir, 'state', 'pier', 'ledger', `${account}.jsonl`)
  return existsSync(file) ? readFileSync(file, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l)) : []
}
const codeOf = (reply) => (reply.type === 'task_result' ? 'result' : reply.error?.code)

describe('spending only what the operator offered, measured at the model', () => {
  it(`a flood of short-deadline jobs never has more than maxConcurrentJobs (${FLOOD_CAP}) model requests in flight`, async () => {
    await ready('eco.flood')
    model.resetMaxInFlight()
    const flood = model.requests.length
    const atModel = () => new Set(model.requests.slice(flood).filter((r) => r.word?.startsWith('slowflood')).map((r) => r.word))
    // Four requesters send jobs back to back: two of every three with a 4 s deadline, which
    // their turns reach the model within and the model never answers by; one with 1 ms, which
    // passes before its turn can start. Each is answered TIMEOUT at its deadline, or OVERLOADED
    // while both slots are taken, and a slot frees only once its turn has stopped. The flood
    // goes on until slots were taken again after TIMEOUTs at the model (4 jobs there) and the
    // model saw the cap filled, or for at most 4 minutes (a machine too slow to show it).
    const until = Date.now() + 240_000
    const replies = []
    let sent = 0
    const requester = async () => {
      while (!(atModel().size >= 2 * FLOOD_CAP && model.maxInFlight >= FLOOD_CAP) && Date.now() < until) {
        const i = sent++
        const timeoutMs = i % 3 === 2 ? 1 : 4000
        const reply = await request(nc, 'eco.flood', { id: `flood-${i}`, task: `PIERQ:slowflood${i}`, timeoutMs }, 30_000)
        replies.push(reply)
        // Pacing, not a wait for anything: a refused requester comes back 10 times a second.
        if (codeOf(reply) === 'OVERLOADED') await sleep(100)
      }
    }
    await Promise.all(Array.from({ length: 4 }, requester))
    // Every turn the flood started stops at the model: none is left running there.
    await waitFor(() => model.inFlight === 0, { timeout: 60_000, interval: 100 })
    const codes = {}
    for (const r of replies) codes[codeOf(r)] = (codes[codeOf(r)] ?? 0) + 1
    const reached = atModel()
    console.log(`# flood: ${replies.length} jobs ${JSON.stringify(codes)}, ${reached.size} reached the model, at most ${model.maxInFlight} requests in flight there`)
    assert.ok(reached.size >= 2 * FLOOD_CAP, `slots were taken again after TIMEOUTs at the model (${reached.size} jobs reached it)`)
    assert.equal(model.maxInFlight, FLOOD_CAP, `never more than ${FLOOD_CAP} model requests in flight, and the flood filled the cap`)
    assert.deepEqual(Object.keys(codes).sort(), ['OVERLOADED', 'TIMEOUT'], 'the model answers no job in time; a full worker refuses the rest')
    for (const r of model.requests.slice(flood).filter((r) => r.word?.startsWith('slowflood'))) {
      assert.equal(r.ended, 'client-closed', `${r.word}: its turn was stopped at the model, not left running there`)
    }
    // Each timed-out job's ledger line is written once its turn has stopped.
    const lines = await waitFor(() => {
      const l = ledgerOf('flood').filter((x) => x.id.startsWith('flood-'))
      return l.length === codes.TIMEOUT ? l : null
    }, { timeout: 30_000, interval: 200 })
    for (const l of lines) assert.equal(l.code, 'TIMEOUT', JSON.stringify(l))
  })

  it('a daily budget stops the model after the jobs it allows: the first job past the cap and every later one are answered BUDGET_EXHAUSTED and never reach it', async () => {
    const replies = []
    for (let i = 1; i <= 10; i++) {
      const job = { id: `budget-${i}`, task: `PIERQ:budget${i}` }
      const reply = i === 1 ? await firstRequest(nc, 'eco.budget', job) : await request(nc, 'eco.budget', job, 30_000)
      replies.push(reply)
      if (codeOf(reply) === 'BUDGET_EXHAUSTED') break
    }
    const allowed = replies.filter((r) => codeOf(r) === 'result')
    assert.equal(allowed.length, replies.length - 1, `jobs run until one is refused: ${JSON.stringify(replies.map(codeOf))}`)
    for (const r of allowed) assert.equal(r.result, answerFor(r.id.replace('-', '')))
    const refused = replies.at(-1)
    console.log(`# budget: ${allowed.length} jobs ran, then ${JSON.stringify(codeOf(refused))}`)
    assert.equal(codeOf(refused), 'BUDGET_EXHAUSTED')
    assert.match(refused.error.message, new RegExp(`spending cap for the day \\(${DAILY_SPEND}\\) is reached`))
    // Exactly the jobs it allows: the day's spend (what the model's requests cost) was under
    // the cap before the last job that ran, and at or over it after.
    const spentBy = (n) => costOf(allowed.slice(0, n).reduce((k, r) => k + requestsOf(`PIERQ:${r.id.replace('-', '')}`).length, 0), COST)
    assert.ok(allowed.length >= 1 && spentBy(allowed.length - 1) < DAILY_SPEND, `under the cap before job ${allowed.length}: ${spentBy(allowed.length - 1)}`)
    assert.ok(spentBy(allowed.length) >= DAILY_SPEND, `at the cap after it: ${spentBy(allowed.length)}`)
    // Later jobs too, and none of the refused ones reached the model.
    for (const id of ['budget-late1', 'budget-late2']) {
      assert.equal(codeOf(await request(nc, 'eco.budget', { id, task: `PIERQ:${id.replace('-', '')}` })), 'BUDGET_EXHAUSTED')
    }
    for (const word of [refused.id.replace('-', ''), 'budgetlate1', 'budgetlate2']) assert.equal(requestsOf(`PIERQ:${word}`).length, 0, `${word} never reached the model`)
    // The channel status (published every second) shows the day against the budget; the
    // ledger holds the jobs that ran.
    let today
    await waitFor(async () => {
      const status = await home.call('channels.status', { probe: true })
      today = status.channelAccounts?.pier?.find((a) => a.accountId === 'budget')?.pier?.today
      return today?.jobs === allowed.length
    }, { timeout: 30_000, interval: 500 }).catch((error) => assert.fail(`${error.message}: ${JSON.stringify(today)}`))
    assert.equal(today.maxDailySpend, DAILY_SPEND)
    assert.ok(Math.abs(today.spent - spentBy(allowed.length)) < 1e-12, JSON.stringify(today))
    assert.deepEqual(ledgerOf('budget').map((l) => l.id), allowed.map((r) => r.id))
  })

  it("rates refuse exactly the jobs over each sender's share: each signed key its own, all unsigned senders one together", async () => {
    await ready('eco.rates')
    // Two signed senders (keys of their own) that declare the same name.
    const signedSender = () => new PierClient({ natsUrl: nats.url, publishSubject: 'eco.rates', signingSeed: new TextDecoder().decode(createUser().getSeed()) })
    const clients = { a: signedSender(), b: signedSender() }
    // Unsigned senders each declare another name; they share one window all the same.
    const plan = [
      ['a', 'ra1'], ['a', 'ra2'], ['b', 'rb1'], ['u', 'ru1', 'alice'], ['a', 'ra3'], ['u', 'ru2', 'bob'],
      ['b', 'rb2'], ['u', 'ru3', 'carol'], ['b', 'rb3'], ['u', 'ru4', 'dave'], ['a', 'ra4'], ['u', 'ru5', 'erin'],
    ]
    // One after another, in about a second (7 quick turns): well inside the sliding minute.
    const over = new Set(['ra3', 'ra4', 'rb3', 'ru4', 'ru5'])
    try {
      const got = {}
      for (const [who, word, name] of plan) {
        const reply =
          who === 'u'
            ? await request(nc, 'eco.rates', { id: word, task: `PIERQ:${word}`, meta: { sender: name } }, 30_000)
            : await clients[who].publish(`PIERQ:${word}`, { timeoutMs: 30_000, meta: { sender: 'same-name' } })
        got[word] = reply
      }
      assert.deepEqual(
        Object.entries(got).filter(([, r]) => codeOf(r) === 'RATE_LIMITED').map(([w]) => w).sort(),
        [...over].sort(),
        JSON.stringify(Object.fromEntries(Object.entries(got).map(([w, r]) => [w, codeOf(r)]))),
      )
      for (const [word, reply] of Object.entries(got)) {
        if (over.has(word)) {
          assert.match(reply.error.message, word.startsWith('ru') ? /unsigned jobs' share of this worker \(3 jobs a minute/ : /this sender's share of this worker \(2 jobs a minute\)/)
          assert.equal(requestsOf(`PIERQ:${word}`).length, 0, `${word} never reached the model`)
        } else {
          assert.equal(reply.result, answerFor(word))
        }
      }
    } finally {
      await Promise.all(Object.values(clients).map((c) => c.close?.()))
    }
  })
})

describe('progress and cancellation in a real gateway', () => {
  const progressLedger = () => join(home.dir, 'state', 'pier', 'ledger', 'progress.jsonl')
  /** Sends `job` with Pier-Progress-To; returns the answer promise and the progress seen so far. */
  const ask = (job) => askWithProgress(nc, 'eco.progress', job)

  it("a tool-less job turn's streamed text arrives as partials that are its result", async () => {
    const asked = ask({ type: 'task_request', id: 'drip1', task: 'PIERQ:dripone' })
    const answer = await asked.answer
    await nc.flush()
    assert.equal(answer.type, 'task_result', JSON.stringify(answer))
    assert.equal(answer.result, dripFor('dripone'))
    const seen = [...asked.seen]
    assert.equal(seen[0]?.state, 'accepted', JSON.stringify(seen))
    seen.forEach((p, n) => assert.equal(p.seq, n))
    const partials = seen.filter((p) => p.state === 'partial')
    assert.equal(partials.map((p) => p.text).join(''), answer.result)
    // Streamed while the model wrote (8 chunks, 150 ms apart), not only completed at the end.
    assert.ok(partials.length >= 2, `${partials.length} partials: ${JSON.stringify(seen)}`)
    asked.stop()
  })

  it('a cancelled turn is answered CANCELLED within a second, asks the model nothing more, and is in the ledger', async () => {
    const asked = ask({ type: 'task_request', id: 'cancel1', task: 'PIERQ:hangcancel', meta: { price: 3 } })
    await waitFor(() => asked.seen.some((p) => p.state === 'accepted') && model.requests.some((r) => r.word === 'hangcancel'), { timeout: 30_000 })
    const accepted = asked.seen.find((p) => p.state === 'accepted')
    const requestsBefore = model.requests.filter((r) => r.word === 'hangcancel').length
    const sent = performance.now()
    nc.publish(accepted.cancel.subject, JSON.stringify({ version: '1.1', type: 'task_cancel', id: 'cancel1', token: accepted.cancel.token }))
    const answer = await asked.answer
    const latency = performance.now() - sent
    assert.equal(answer.error?.code, 'CANCELLED', JSON.stringify(answer))
    assert.ok(latency < 1000, `${latency} ms`)
    console.log(`# task_cancel to CANCELLED in a real gateway: ${latency.toFixed(0)} ms`)
    await waitFor(() => existsSync(progressLedger()) && readFileSync(progressLedger(), 'utf8').includes('"cancel1"'), { timeout: 20_000 })
    const line = readFileSync(progressLedger(), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).find((l) => l.id === 'cancel1')
    assert.equal(line.code, 'CANCELLED', JSON.stringify(line))
    assert.equal(line.earned, 0)
    await sleep(1500)
    assert.equal(model.requests.filter((r) => r.word === 'hangcancel').length, requestsBefore, 'no model request after the cancel')
    asked.stop()
  })
})

describe('a paid pier_publish from a chat asks the person at that chat', () => {
  const key = 'agent:main:main'
  const messages = async () => (await home.call('chat.history', { sessionKey: key, limit: 40 })).messages ?? []
  /**
   * The chat's messages once the model has answered after its PIERPUB call of `word`; if it
   * never does, what the chat, the model and the gateway's log show of the turn.
   */
  const turnEnded = async (word) => {
    try {
      return await waitFor(async () => {
        const m = await messages()
        return JSON.stringify(m).includes(afterPublishFor(word)) ? m : null
      }, { timeout: 120_000, interval: 500 })
    } catch (error) {
      const chat = (await messages()).slice(-8).map((m) => `${m.role}: ${JSON.stringify(m.content).slice(0, 300)}`)
      const asked = requestsOf(`PIERPUB:${word}`).map((r) => `${r.word ?? '-'} ${r.ended ?? 'open'}`)
      const logged = gateway.log().split('\n').filter((l) => /approv|pier_publish|deny|denied|queue|error|fail/i.test(l)).slice(-40)
      error.message += `\nchat:\n${chat.join('\n')}\nmodel requests with PIERPUB:${word}: ${asked.join(', ')}\ngateway log:\n${logged.join('\n')}`
      throw error
    }
  }
  /** The text of the tool results in the transcript (Tool Search's tool_call wraps pier_publish's). */
  const toolResults = (m) => m.filter((x) => x.role === 'toolResult').map((x) => JSON.stringify(x.content))
  /** The plugin approval OpenClaw shows the chat for the turn `runId`. */
  const approvalOf = (runId) =>
    waitFor(async () => (await home.tui.events('plugin.approval.requested')).find((e) => e.payload?.request?.runId === runId)?.payload, { timeout: 120_000, interval: 250 })
  const published = []
  let sub

  before(async () => {
    // A Pier worker of its own for the published tasks: it records each and answers it.
    sub = nc.subscribe('eco.submit', {
      callback: (_e, m) => {
        const job = m.json()
        published.push(job)
        m.respond(JSON.stringify({ version: '1.0', id: job.id, type: 'task_result', ok: true, result: `done-${job.task}` }))
      },
    })
    await nc.flush()
    await home.tui.open()
  })
  after(() => sub?.unsubscribe())

  it('approved with /approve in that chat: the call the hook was asked about is published, and its result reaches the transcript', async () => {
    const runId = `pub-ok-${Date.now()}`
    await home.tui.send(key, 'Publish this for me: PIERPUB:pubok:5', runId)
    const approval = await approvalOf(runId)
    // The hook as registered, with the context OpenClaw gave it: a paid call within the cap,
    // from a chat (webchat: this terminal chat), asks once and only allows once.
    assert.equal(approval.request.pluginId, 'pier-connector')
    assert.equal(approval.request.toolName, 'pier_publish')
    assert.equal(approval.request.turnSourceChannel, 'webchat')
    assert.equal(approval.request.title, 'Publish a paid Pier task (price 5)')
    assert.deepEqual(approval.request.scope, { kind: 'payment', amount: '5', currency: 'PIER', target: 'Pier marketplace' })
    assert.deepEqual(approval.request.allowedDecisions, ['allow-once', 'deny'])
    assert.equal(published.length, 0, 'nothing is published while the person has not answered')

    await home.tui.send(key, `/approve ${approval.id} allow-once`)
    const chat = await turnEnded('pubok')
    const asked = (await home.tui.events('plugin.approval.requested')).filter((e) => e.payload?.request?.runId === runId)
    assert.equal(asked.length, 1, 'asked once')
    assert.equal(published.length, 1)
    assert.equal(published[0].task, 'PIERQ:pubok')
    assert.deepEqual(published[0].meta, { price: 5 })
    // The worker's answer came back as the tool's result, into the chat's transcript.
    assert.ok(toolResults(chat).some((r) => r.includes('done-PIERQ:pubok')), JSON.stringify(toolResults(chat)))
    assert.match(JSON.stringify(chat), new RegExp(`Approval allow-once submitted for ${approval.id}`))
  })

  it('denied with /approve … deny: nothing is published, and the model is told', async () => {
    const runId = `pub-no-${Date.now()}`
    await home.tui.send(key, 'Publish this for me: PIERPUB:pubno:7', runId)
    const approval = await approvalOf(runId)
    assert.equal(approval.request.title, 'Publish a paid Pier task (price 7)')
    await home.tui.send(key, `/approve ${approval.id} deny`)
    // The turn goes on without the call and ends: had the task been sent, its answer (which the
    // tool waits for) would have come from this test's worker before that.
    const chat = await turnEnded('pubno')
    assert.deepEqual(published.map((j) => j.task), ['PIERQ:pubok'], 'the denied task was not published')
    const results = toolResults(chat)
    assert.ok(!results.some((r) => r.includes('done-PIERQ:pubno')))
    assert.ok(results.some((r) => r.includes('Denied by user. The tool call did not run.')), JSON.stringify(results))
  })
})
