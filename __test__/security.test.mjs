// TLS with a test CA, creds-file auth, permission violations, and no secret in any output.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createOperator, createAccount, createUser, encodeOperator, encodeAccount, encodeUser, fmtCreds } from '@nats-io/jwt'
import { startNatsServer } from './helpers/nats-server.mjs'
import { makeCertificates } from './helpers/certificates.mjs'
import { PierWorker, PierClient, rawClient, request, waitFor, memoryLogger } from './helpers/addon.mjs'

const dir = mkdtempSync(join(tmpdir(), 'pier-security-'))
const file = (name) => join(dir, name)
/** Everything the worker printed or returned in this file, searched for secrets at the end. */
const captured = []
const capture = (logger) => {
  captured.push(logger)
  return logger
}
const secrets = new Set()

after(() => {
  const everything = captured.map((c) => (typeof c === 'string' ? c : c.text())).join('\n')
  for (const secret of secrets) assert.ok(!everything.includes(secret), `a secret appeared in output`)
  rmSync(dir, { recursive: true, force: true })
})

describe('TLS', () => {
  let server
  before(async () => {
    makeCertificates(dir)
    server = await startNatsServer({
      extra: `tls { cert_file: "${file('server.pem')}", key_file: "${file('server.key')}", ca_file: "${file('ca.pem')}", verify: true }`,
    })
  })
  after(() => server.stop())

  const base = () => ({ natsUrl: `tls://127.0.0.1:${server.port}`, subject: 'jobs.tls', publishSubject: 'jobs.tls', connectTimeoutMs: 3000 })

  it('verifies the server with the configured CA and presents a client certificate', async () => {
    const logger = capture(memoryLogger())
    const config = { ...base(), tlsCaFile: file('ca.pem'), tlsCertFile: file('client.pem'), tlsKeyFile: file('client.key') }
    const worker = new PierWorker(config, async (job) => `tls:${job.task}`, { logger })
    await worker.start()
    const client = new PierClient(config, { logger })
    assert.equal((await client.publish('secure', { timeoutMs: 3000 })).result, 'tls:secure')
    await client.close()
    await worker.stop()
  })

  it('refuses a server whose certificate is not signed by the configured CA, with a clear error', async () => {
    const logger = capture(memoryLogger())
    const worker = new PierWorker(
      { ...base(), tlsCaFile: file('other-ca.pem'), tlsCertFile: file('client.pem'), tlsKeyFile: file('client.key') },
      async () => '',
      { logger },
    )
    const error = await worker.start().catch((e) => e)
    captured.push(error.message)
    assert.match(error.message, /^PIER_CONNECT: could not connect to NATS at tls:\/\/127\.0\.0\.1:\d+: .*(certificate|UnknownIssuer|tls)/i)
  })

  it('refuses to connect without the client certificate the server requires', async () => {
    // The server drops the connection after the handshake, which looks like an outage: one attempt.
    const worker = new PierWorker({ ...base(), tlsCaFile: file('ca.pem'), maxConnectAttempts: 1 }, async () => '', { logger: capture(memoryLogger()) })
    const error = await worker.start().catch((e) => e)
    captured.push(error.message)
    assert.match(error.message, /^PIER_CONNECT/)
  })
})

describe('creds-file auth (operator JWT mode)', () => {
  let server
  let credsPath
  before(async () => {
    const operator = createOperator()
    const account = createAccount()
    const user = createUser()
    const operatorJwt = await encodeOperator('pier-op', operator)
    // An account JWT without limits allows no connections: lift them explicitly.
    const limits = { conn: -1, leaf: -1, subs: -1, data: -1, payload: -1, imports: -1, exports: -1, wildcards: true }
    const accountJwt = await encodeAccount('pier-acct', account, { limits }, { signer: operator })
    const userJwt = await encodeUser('pier-worker', user, account)
    credsPath = file('worker.creds')
    writeFileSync(credsPath, fmtCreds(userJwt, user))
    secrets.add(new TextDecoder().decode(user.getSeed()))
    server = await startNatsServer({
      extra: `operator: ${operatorJwt}\nresolver: MEMORY\nresolver_preload: { ${account.getPublicKey()}: ${accountJwt} }`,
    })
  })
  after(() => server.stop())

  it('serves jobs with the creds file, and a missing file is a clear error', async () => {
    const logger = capture(memoryLogger())
    const config = { natsUrl: server.url, subject: 'jobs.creds', publishSubject: 'jobs.creds', credsFile: credsPath }
    const worker = new PierWorker(config, async (job) => `creds:${job.task}`, { logger })
    await worker.start()
    const client = new PierClient(config, { logger })
    assert.equal((await client.publish('hello', { timeoutMs: 3000 })).result, 'creds:hello')
    captured.push(JSON.stringify(worker.status()))
    await client.close()
    await worker.stop()

    const missing = new PierWorker({ ...config, credsFile: file('nope.creds') }, async () => '', { logger })
    const error = await missing.start().catch((e) => e)
    captured.push(error.message)
    assert.match(error.message, /PIER_CONNECT: .*cannot read credsFile .*nope\.creds: .*No such file/)
    writeFileSync(file('bad.creds'), 'not a creds file SEED-SECRET-0000')
    secrets.add('SEED-SECRET-0000')
    const bad = new PierWorker({ ...config, credsFile: file('bad.creds') }, async () => '', { logger })
    const badError = await bad.start().catch((e) => e)
    captured.push(badError.message)
    assert.match(badError.message, /cannot read credsFile .*bad\.creds: not a valid NATS credentials file/)
    const anonymous = new PierWorker({ natsUrl: server.url, connectTimeoutMs: 2000 }, async () => '', { logger })
    assert.match((await anonymous.start().catch((e) => e)).message, /^PIER_CONNECT/)
  })
})

describe('permission violations are logged and counted, not fatal', () => {
  const PASSWORD = 'pw-perm-SECRET-4455'
  let server, nc
  before(async () => {
    secrets.add(PASSWORD)
    server = await startNatsServer({
      extra: `authorization { users = [
        { user: "requester", password: "${PASSWORD}" },
        { user: "no-reply", password: "${PASSWORD}", permissions: { publish: { deny: ["_REPLY.>"] } } },
        { user: "no-jobs", password: "${PASSWORD}", permissions: { subscribe: { deny: ["jobs.forbidden"] } } }
      ] }`,
    })
    nc = await rawClient(server.url, { user: 'requester', pass: PASSWORD, inboxPrefix: '_REPLY' })
  })
  after(async () => {
    await nc.close()
    await server.stop()
  })

  it('a worker denied publishing to the reply subject logs it, counts it and keeps running', async () => {
    const logger = capture(memoryLogger())
    const worker = new PierWorker(
      { natsUrl: server.url, user: 'no-reply', password: PASSWORD, subject: 'jobs.perm' },
      async (job) => `perm:${job.task}`,
      { logger },
    )
    await worker.start()
    await assert.rejects(request(nc, 'jobs.perm', { task: 'x' }, 1500), /timeout/i)
    await waitFor(() => worker.status().stats.serverErrors >= 1)
    assert.match(logger.text(), /error \[pier-connector\] NATS server error: .*[Pp]ermissions [Vv]iolation for [Pp]ublish to "?_REPLY/)
    const status = worker.status()
    assert.equal(status.state, 'connected')
    assert.equal(status.stats.completed, 1, 'the job ran; only its reply was refused')
    captured.push(JSON.stringify(status))
    await worker.stop()
  })

  it('a worker denied subscribing to the job subject logs it and counts it', async () => {
    const logger = capture(memoryLogger())
    const worker = new PierWorker(
      { natsUrl: server.url, user: 'no-jobs', password: PASSWORD, subject: 'jobs.forbidden' },
      async () => 'never',
      { logger },
    )
    await worker.start()
    await waitFor(() => worker.status().stats.serverErrors >= 1)
    // The count is the addon's own; the log line reaches JS through the event loop a moment later.
    await waitFor(() => /[Pp]ermissions [Vv]iolation for [Ss]ubscription/.test(logger.text()))
    assert.match(logger.text(), /[Pp]ermissions [Vv]iolation for [Ss]ubscription to "?jobs\.forbidden/)
    assert.equal(worker.status().state, 'connected')
    await worker.stop()
  })
})

describe('secrets in URLs', () => {
  it('a password inside natsUrl never reaches logs, errors or status', async () => {
    const secret = 'url-pass-SECRET-7788'
    secrets.add(secret)
    const logger = capture(memoryLogger())
    const worker = new PierWorker({ natsUrl: `nats://bob:${secret}@127.0.0.1:1`, connectTimeoutMs: 500, maxConnectAttempts: 1 }, async () => '', { logger })
    const error = await worker.start().catch((e) => e)
    captured.push(error.message, String(error.stack), JSON.stringify(worker.status()))
    assert.match(error.message, /nats:\/\/\[redacted\]@127\.0\.0\.1:1/)
  })
})
