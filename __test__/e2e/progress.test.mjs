// End to end: progress and cancellation (protocol v1.1) in a real gateway (Node 24,
// openclaw@2026.9.6) with the fake model. A job turn's streamed text reaches a requester that
// asked for progress as partials that are its result; a cancelled turn is answered CANCELLED
// within a second, makes no further model request, and its ledger line is written.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { startNatsServer } from '../helpers/nats-server.mjs'
import { startFakeModel, dripFor } from '../helpers/fake-model.mjs'
import { createOpenClawHome, packPlugin } from '../helpers/openclaw.mjs'
import { askWithProgress, firstRequest, rawClient, waitFor } from '../helpers/addon.mjs'

let nats, nc, model, home, gateway, ledgerFile

before(async () => {
  nats = await startNatsServer({ name: 'pier-progress-e2e' })
  nc = await rawClient(nats.url)
  model = await startFakeModel()
  home = await createOpenClawHome({ modelBaseUrl: model.baseUrl, registryUrl: 'http://127.0.0.1:9/' })
  await home.cli(['plugins', 'install', '--link', packPlugin().dir, '--force', '--accept-capabilities'])
  const config = home.readConfig()
  config.channels = { pier: { natsUrl: nats.url, subject: 'progress.jobs', workerId: 'progress-1', jobTimeoutMs: 60_000, progressIntervalMs: 500 } }
  home.writeConfig(config)
  ledgerFile = join(home.dir, 'state', 'pier', 'ledger', 'default.jsonl')
  gateway = await home.startGateway()
  // The account is up once a plain job is answered.
  const warm = await firstRequest(nc, 'progress.jobs', { type: 'task_request', id: 'warm', task: 'PIERQ:warm' })
  assert.equal(warm.type, 'task_result', JSON.stringify(warm))
})

after(async () => {
  if (process.env.PIER_E2E_LOG && gateway) writeFileSync(process.env.PIER_E2E_LOG, gateway.log())
  await gateway?.stop()
  await nc?.close()
  await nats?.stop()
  await model?.close()
  home?.cleanup()
})

/** Sends `job` with Pier-Progress-To; returns the answer promise and the progress seen so far. */
const ask = (job) => askWithProgress(nc, 'progress.jobs', job)

describe('progress and cancellation in a real gateway', () => {
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
    await waitFor(() => existsSync(ledgerFile) && readFileSync(ledgerFile, 'utf8').includes('"cancel1"'), { timeout: 20_000 })
    const line = readFileSync(ledgerFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l)).find((l) => l.id === 'cancel1')
    assert.equal(line.code, 'CANCELLED', JSON.stringify(line))
    assert.equal(line.earned, 0)
    await new Promise((r) => setTimeout(r, 1500))
    assert.equal(model.requests.filter((r) => r.word === 'hangcancel').length, requestsBefore, 'no model request after the cancel')
    asked.stop()
  })
})
