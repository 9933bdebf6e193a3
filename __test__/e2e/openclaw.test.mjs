// End to end: the packed plugin installed with `openclaw plugins install npm-pack:` into a real
// OpenClaw gateway (Node 24), a real nats-server, and a local OpenAI-compatible model.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import { startNatsServer } from '../helpers/nats-server.mjs'
import { startNpmRegistry } from '../helpers/npm-registry.mjs'
import { startFakeModel, answerFor } from '../helpers/fake-model.mjs'
import { createOpenClawHome } from '../helpers/openclaw.mjs'
import { rawClient, request, waitFor, sleep } from '../helpers/addon.mjs'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const JOBS = 'jobs.e2e'

let nats, nc, registry, model, home, gateway

function packPlugin() {
  execFileSync('bash', [join(ROOT, 'scripts/pack.sh')], { stdio: 'ignore' })
  const dist = join(ROOT, 'dist')
  const files = readdirSync(dist).map((f) => join(dist, f))
  return {
    plugin: files.find((f) => /pier-connector-\d/.test(f)),
    binary: files.find((f) => /binding-linux-x64-gnu/.test(f)),
  }
}

/** Sends a request until the worker has subscribed (the gateway starts services after ready). */
async function firstRequest(payload, timeout) {
  return waitFor(
    async () => {
      try {
        return await request(nc, JOBS, payload, timeout)
      } catch (error) {
        if (/no responders/i.test(error.message)) return null
        throw error
      }
    },
    { timeout: 60_000, interval: 250 },
  )
}

before(async () => {
  const packed = packPlugin()
  nats = await startNatsServer({ name: 'pier-e2e' })
  nc = await rawClient(nats.url)
  registry = await startNpmRegistry([packed.binary])
  model = await startFakeModel()
  home = await createOpenClawHome({ modelBaseUrl: model.baseUrl, registryUrl: registry.url })
  await home.cli(['plugins', 'install', `npm-pack:${packed.plugin}`, '--force', '--accept-capabilities'])
  const config = home.readConfig()
  const entry = (config.plugins.entries['pier-connector'] ??= { enabled: true })
  entry.config = {
    natsUrl: nats.url,
    subject: JOBS,
    publishSubject: JOBS,
    workerId: 'e2e-worker',
    walletAddress: '0xE2E',
    maxConcurrentJobs: 4,
    jobTimeoutMs: 30_000,
    drainTimeoutMs: 20_000,
  }
  config.tools = { ...(config.tools ?? {}), toolSearch: false }
  home.writeConfig(config)
})

after(async () => {
  await gateway?.stop()
  await nc?.close()
  await nats?.stop()
  await model?.close()
  await registry?.close()
  home?.cleanup()
})

describe('pier-connector in a real OpenClaw gateway', () => {
  it('plugins inspect lists the channel, service, tool and command', async () => {
    const inspect = JSON.parse(await home.cli(['plugins', 'inspect', 'pier-connector', '--runtime', '--json']))
    assert.equal(inspect.plugin.status, 'loaded')
    assert.deepEqual(inspect.plugin.channelIds, ['pier'])
    assert.deepEqual(inspect.plugin.toolNames, ['pier_publish'])
    assert.deepEqual(inspect.commands, ['pier'])
    assert.deepEqual(inspect.services, ['pier-connector'])
  })

  it('a task_request runs one agent turn and the model answer comes back as task_result', async () => {
    gateway = await home.startGateway()
    const reply = await firstRequest(
      { version: '1.0', id: 'e2e-1', type: 'task_request', task: 'Please answer PIERQ:alpha', timeoutMs: 30_000 },
      45_000,
    )
    assert.equal(reply.type, 'task_result', JSON.stringify(reply))
    assert.equal(reply.id, 'e2e-1')
    assert.equal(reply.result, answerFor('alpha'))
    assert.deepEqual(reply.worker, { id: 'e2e-worker', wallet: '0xE2E' })
  })

  it('two concurrent jobs each get their own answer, in their own sessions', async () => {
    const [a, b] = await Promise.all([
      request(nc, JOBS, { type: 'task_request', id: 'e2e-a', task: 'PIERQ:bravo', timeoutMs: 30_000 }, 45_000),
      request(nc, JOBS, { type: 'task_request', id: 'e2e-b', task: 'PIERQ:charlie', timeoutMs: 30_000 }, 45_000),
    ])
    assert.equal(a.result, answerFor('bravo'))
    assert.equal(b.result, answerFor('charlie'))
    // No session mixing: neither model call saw the other job's prompt.
    const calls = (word) => model.requests.filter((r) => r.word === word)
    assert.ok(calls('bravo').length >= 1 && calls('charlie').length >= 1)
    for (const call of calls('bravo')) assert.doesNotMatch(call.messages, /charlie/)
    for (const call of calls('charlie')) assert.doesNotMatch(call.messages, /bravo/)
    const sessions = await home.cli(['gateway', 'call', 'sessions.list', '--params', '{}', '--json'])
    assert.match(sessions, /agent:main:pier:e2e-a/)
    assert.match(sessions, /agent:main:pier:e2e-b/)
  })

  it('the job systemPrompt reaches the model', async () => {
    const reply = await request(
      nc, JOBS,
      { type: 'task_request', id: 'e2e-sp', task: 'PIERQ:delta', systemPrompt: 'SYSMARK-7 answer tersely', timeoutMs: 30_000 },
      45_000,
    )
    assert.equal(reply.result, answerFor('delta'))
    const call = model.requests.find((r) => r.word === 'delta')
    assert.match(call.system, /SYSMARK-7/)
  })

  it('a job whose model call hangs past its timeoutMs gets TIMEOUT', async () => {
    const start = Date.now()
    const reply = await request(nc, JOBS, { type: 'task_request', id: 'e2e-t', task: 'PIERQ:hang1', timeoutMs: 4000 }, 20_000)
    assert.equal(reply.type, 'task_error')
    assert.equal(reply.error.code, 'TIMEOUT')
    assert.equal(reply.id, 'e2e-t')
    assert.ok(Date.now() - start < 10_000)
  })

  it('/pier reports the worker status through the gateway', async () => {
    const key = 'agent:main:main'
    await home.cli(['gateway', 'call', 'chat.send', '--params', JSON.stringify({ sessionKey: key, message: '/pier', idempotencyKey: `pier-${Date.now()}` }), '--json'])
    const text = await waitFor(
      async () => {
        const history = await home.cli(['gateway', 'call', 'chat.history', '--params', JSON.stringify({ sessionKey: key, limit: 6 }), '--json'])
        return /Pier connector[\s\S]*connection: connected/.test(history) ? history : null
      },
      { timeout: 30_000, interval: 500 },
    )
    assert.match(text, /subjects: jobs jobs\.e2e, queue openclaw-workers, publish jobs\.e2e/)
    assert.match(text, /worker: e2e-worker/)
    assert.match(text, /jobs: \d+ received, \d+ completed/)
  })

  it('pier_publish publishes through the gateway and returns the worker reply', async () => {
    const response = await fetch(`http://127.0.0.1:${home.port}/tools/invoke`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ tool: 'pier_publish', args: { task: 'PIERQ:echo', timeoutMs: 30_000 } }),
    })
    const body = await response.text()
    assert.equal(response.status, 200, body)
    assert.match(body, new RegExp(answerFor('echo')))
    assert.match(body, /task_result/)
  })

  it('stopping the gateway drains the worker: an in-flight job is still answered', async () => {
    const pending = request(nc, JOBS, { type: 'task_request', id: 'e2e-drain', task: 'PIERQ:slow1', timeoutMs: 30_000 }, 45_000)
    await sleep(700)
    const exited = gateway.stop()
    const reply = await pending
    assert.equal(reply.type, 'task_result', JSON.stringify(reply))
    assert.equal(reply.result, answerFor('slow1'))
    await exited
    assert.match(gateway.log(), /stopping: draining in-flight jobs/)
    gateway = null
  })
})
