// The publisher's distinct failures, and each auth method against a server configured for it.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createUser } from '@nats-io/nkeys'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { fileURLToPath } from 'node:url'
import { createRequire } from 'node:module'
import { startNatsServer } from './helpers/nats-server.mjs'
import { PierWorker, PierClient, useNats, memoryLogger } from './helpers/addon.mjs'

describe('publisher', () => {
  const nats = useNats()

  it('receives a worker TIMEOUT reply sent at the job deadline', async () => {
    const worker = new PierWorker({ natsUrl: nats.server.url, subject: 'jobs.deadline' }, () => new Promise(() => {}), {
      logger: () => {},
    })
    await worker.start()
    const client = new PierClient({ natsUrl: nats.server.url, publishSubject: 'jobs.deadline' })
    const reply = await client.publish('slow', { timeoutMs: 200 })
    assert.equal(reply.error.code, 'TIMEOUT')
    await client.close()
    await worker.stop()
  })

  it('sends a v1 task_request and resolves to the worker reply', async () => {
    const seen = []
    nats.nc.subscribe('jobs.pub1', {
      callback: (_err, msg) => {
        seen.push(JSON.parse(new TextDecoder().decode(msg.data)))
        msg.respond(JSON.stringify({ version: '1.0', id: seen[0].id, type: 'task_result', ok: true, result: 'r' }))
      },
    })
    await nats.nc.flush()
    const client = new PierClient({ natsUrl: nats.server.url, publishSubject: 'jobs.pub1' })
    const reply = await client.publish('do it', { systemPrompt: 'sp', timeoutMs: 2000, meta: { price: 5 } })
    assert.equal(reply.result, 'r')
    assert.equal(seen[0].type, 'task_request')
    assert.equal(seen[0].version, '1.0')
    assert.equal(seen[0].task, 'do it')
    assert.equal(seen[0].systemPrompt, 'sp')
    assert.equal(seen[0].timeoutMs, 2000)
    assert.deepEqual(seen[0].meta, { price: 5 })
    assert.equal(reply.id, seen[0].id)
    await client.close()
  })

  it('rejects with PIER_NO_RESPONDERS when nobody listens', async () => {
    const client = new PierClient({ natsUrl: nats.server.url, publishSubject: 'jobs.nobody' })
    const start = Date.now()
    await assert.rejects(client.publish('x', { timeoutMs: 5000 }), /^Error: PIER_NO_RESPONDERS: no worker is listening on jobs\.nobody/)
    assert.ok(Date.now() - start < 2000, 'no responders is immediate, not a timeout')
    await client.close()
  })

  it('rejects with PIER_TIMEOUT when a listener never answers', async () => {
    nats.nc.subscribe('jobs.silent', { callback: () => {} })
    await nats.nc.flush()
    const client = new PierClient({ natsUrl: nats.server.url, publishSubject: 'jobs.silent' })
    const start = Date.now()
    // The publisher waits the job's timeout plus a grace second for a worker's TIMEOUT reply.
    await assert.rejects(client.publish('x', { timeoutMs: 300 }), /^Error: PIER_TIMEOUT: no reply on jobs\.silent within 1300 ms/)
    assert.ok(Date.now() - start >= 1290)
    await client.close()
  })

  it('rejects an empty task before sending', async () => {
    const client = new PierClient({ natsUrl: nats.server.url })
    await assert.rejects(client.publish('  '), /PIER_INVALID_TASK/)
    await client.close()
  })

  it('a running worker publishes over its own connection', async () => {
    const worker = new PierWorker(
      { natsUrl: nats.server.url, subject: 'jobs.loop', publishSubject: 'jobs.loop' },
      async (job) => `seen:${job.task}`,
      { logger: () => {} },
    )
    await assert.rejects(worker.publish('early'), /PIER_NOT_RUNNING/)
    await worker.start()
    const reply = await worker.publish('round trip', { timeoutMs: 2000 })
    assert.equal(reply.result, 'seen:round trip')
    await worker.stop()
  })
})

const run = promisify(execFile)
const TOKEN = 'tok-9f8e7d6c5b4a-SECRET'
const PASSWORD = 'pw-0a1b2c3d4e5f-SECRET'
const nkeyUser = createUser()
const NKEY_SEED = new TextDecoder().decode(nkeyUser.getSeed())

const authCases = [
  {
    name: 'token',
    server: `authorization { token: "${TOKEN}" }`,
    good: { token: TOKEN },
    bad: { token: 'tok-wrong-SECRET-000' },
    secrets: [TOKEN, 'tok-wrong-SECRET-000'],
  },
  {
    name: 'user/password',
    server: `authorization { users = [ { user: "pier", password: "${PASSWORD}" } ] }`,
    good: { user: 'pier', password: PASSWORD },
    bad: { user: 'pier', password: 'pw-wrong-SECRET-111' },
    secrets: [PASSWORD, 'pw-wrong-SECRET-111'],
  },
  {
    name: 'nkey',
    server: `authorization { users = [ { nkey: "${nkeyUser.getPublicKey()}" } ] }`,
    good: { nkeySeed: NKEY_SEED },
    bad: { nkeySeed: new TextDecoder().decode(createUser().getSeed()) },
    secrets: [NKEY_SEED],
  },
]

for (const auth of authCases) {
  describe(`${auth.name} auth`, () => {
    let server
    before(async () => {
      server = await startNatsServer({ extra: auth.server })
    })
    after(async () => server.stop())

    it('serves jobs with the right credential', async () => {
      const logger = memoryLogger()
      const config = { natsUrl: server.url, subject: 'jobs.auth', publishSubject: 'jobs.auth', ...auth.good }
      const worker = new PierWorker(config, async (job) => `ok:${job.task}`, { logger })
      await worker.start()
      const client = new PierClient(config, { logger })
      assert.equal((await client.publish('secured', { timeoutMs: 2000 })).result, 'ok:secured')
      await client.close()
      const status = JSON.stringify(worker.status())
      await worker.stop()
      for (const secret of auth.secrets) {
        assert.ok(!logger.text().includes(secret), 'secret in logs')
        assert.ok(!status.includes(secret), 'secret in status')
      }
    })

    it('fails with a clear error, without the secret, on a wrong credential', async () => {
      const logger = memoryLogger()
      const worker = new PierWorker({ natsUrl: server.url, connectTimeoutMs: 3000, ...auth.bad }, async () => '', { logger })
      const error = await worker.start().then(
        () => assert.fail('start should fail'),
        (e) => e,
      )
      assert.match(error.message, /^PIER_CONNECT: could not connect to NATS at nats:\/\/127\.0\.0\.1:\d+: .*(authorization|authentication)/i)
      for (const secret of auth.secrets) {
        assert.ok(!error.message.includes(secret), `secret in error: ${error.message}`)
        assert.ok(!logger.text().includes(secret), 'secret in logs')
        assert.ok(!String(error.stack).includes(secret), 'secret in stack')
      }
      assert.equal(worker.status().state, 'stopped')
    })

    if (auth.name === 'token') {
      it('the CLI takes the token from PIER_TOKEN and never prints it', async () => {
        const cli = fileURLToPath(new URL('../cli/pier-connector.js', import.meta.url))
        const { stdout, stderr } = await run(process.execPath, [cli, 'status', '--nats-url', server.url], {
          env: { ...process.env, PIER_TOKEN: TOKEN },
        })
        assert.equal(JSON.parse(stdout).state, 'connected')
        assert.ok(!stdout.includes(TOKEN) && !stderr.includes(TOKEN))
      })

      it('the environment fills a login the config leaves unset and never overrides one it names (CLI and plugin alike)', async () => {
        const cli = fileURLToPath(new URL('../cli/pier-connector.js', import.meta.url))
        // The flag's token is right, the environment's wrong: the flag's is used.
        const { stdout } = await run(process.execPath, [cli, 'status', '--nats-url', server.url, '--token', TOKEN], {
          env: { ...process.env, PIER_TOKEN: 'a-wrong-token-from-the-shell' },
        })
        assert.equal(JSON.parse(stdout).state, 'connected')
        const { withEnvironment } = createRequire(import.meta.url)('../lib/env.js')
        const env = { PIER_TOKEN: 'e', PIER_USER: 'u', PIER_PASSWORD: 'p', PIER_SIGNING_SEED: 'S' }
        assert.deepEqual(withEnvironment({ natsUrl: 'nats://h:1' }, env).used, ['PIER_TOKEN', 'PIER_USER', 'PIER_PASSWORD', 'PIER_SIGNING_SEED'])
        assert.deepEqual(withEnvironment({ natsUrl: 'nats://t@h:1' }, env).used, ['PIER_SIGNING_SEED'], 'user-info is a login')
        assert.deepEqual(withEnvironment({ natsUrl: 'nats://h:1, nats://u:p@h:2' }, env).used, ['PIER_SIGNING_SEED'], 'in any URL of a list')
        assert.deepEqual(withEnvironment({ credsFile: '/x', signingSeed: 'mine' }, env).config, { credsFile: '/x', signingSeed: 'mine' })
      })
    }

    it('without any credential the server refuses', async () => {
      const worker = new PierWorker({ natsUrl: server.url, connectTimeoutMs: 3000 }, async () => '', { logger: () => {} })
      await assert.rejects(worker.start(), /PIER_CONNECT/)
    })
  })
}

describe('credential validation', () => {
  it('a malformed nkey seed is a clear error that does not echo it', async () => {
    const worker = new PierWorker({ natsUrl: 'nats://127.0.0.1:1', nkeySeed: 'SXnot-a-seed-SECRET' }, async () => '', {
      logger: () => {},
    })
    const error = await worker.start().catch((e) => e)
    assert.match(error.message, /nkeySeed is not a user nkey seed/)
    assert.ok(!error.message.includes('SXnot-a-seed-SECRET'))
  })
})
