// End to end: what `openclaw channels status --json`, `channels logs --channel pier` and
// `security audit` say about Pier accounts in one real gateway (Node 24, openclaw@2026.9.6)
// with a real token-protected nats-server killed with -9 and restarted: the worker's state
// within a second of the outage, the plugin's own issue with its fix, the outage told in two log
// lines in the channel's log, a blocked account's issue once, and a worker that earns for
// nobody. Then the CLI where OpenClaw users look for it: `openclaw pier …` with the gateway's
// channels.pier config (its token a file SecretRef), and `--config` with that section as it is.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { writeFileSync, chmodSync } from 'node:fs'
import { join } from 'node:path'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { fileURLToPath } from 'node:url'
import { startNatsServer, freePort } from '../helpers/nats-server.mjs'
import { startFakeModel, answerFor } from '../helpers/fake-model.mjs'
import { createOpenClawHome, packPlugin, OPENCLAW } from '../helpers/openclaw.mjs'
import { firstRequest, rawClient, request, sleep, waitFor } from '../helpers/addon.mjs'

const TOKEN = 'status-e2e-token-5d1c'
const CLI = fileURLToPath(new URL('../../cli/pier-connector.js', import.meta.url))
const run = promisify(execFile)
let nats, natsPort, nc, model, home, gateway

/**
 * The gateway's channels.status, what `openclaw channels status --json` prints (one CLI process
 * costs 6-20 s; the first test reads the CLI's own output once).
 */
async function channelStatus() {
  return home.call('channels.status', {})
}

const account = (status, id) => status.channelAccounts.pier.find((a) => a.accountId === id)
const issuesOf = (status, id) => status.statusIssues.filter((i) => i.channel === 'pier' && i.accountId === id)

/** Pier's lines in `openclaw channels logs --channel pier`. */
async function channelLogLines() {
  const out = JSON.parse(await home.cli(['channels', 'logs', '--channel', 'pier', '--lines', '2000', '--json']))
  const lines = out.lines ?? out.entries ?? out
  return lines.map((l) => (typeof l === 'string' ? l : `${l.message ?? l.msg ?? JSON.stringify(l)}`))
}

before(async () => {
  natsPort = await freePort()
  nats = await startNatsServer({ name: 'pier-status-e2e', port: natsPort, extra: `authorization { token: "${TOKEN}" }` })
  model = await startFakeModel()
  home = await createOpenClawHome({ modelBaseUrl: model.baseUrl, registryUrl: 'http://127.0.0.1:9/' })
  await home.cli(['plugins', 'install', '--link', packPlugin().dir, '--force', '--accept-capabilities'])
  const config = home.readConfig()
  const secretsFile = join(home.dir, 'pier-secrets.json')
  writeFileSync(secretsFile, JSON.stringify({ pier: { token: TOKEN } }))
  chmodSync(secretsFile, 0o600)
  config.secrets = { providers: { pierfile: { source: 'file', path: secretsFile, mode: 'json' } } }
  // A log file of this gateway's own (the default one in /tmp/openclaw is shared by every run).
  config.logging = { file: join(home.dir, 'openclaw.log') }
  config.channels = {
    pier: {
      enabled: true,
      natsUrl: nats.url,
      token: { source: 'file', provider: 'pierfile', id: '/pier/token' },
      accounts: {
        // No workerId, no walletAddress: paid jobs with nobody to pay.
        default: { subject: 'jobs.st.default' },
        // Host tools without a sandbox: blocked before it takes a job.
        blocked: { subject: 'jobs.st.blocked', workerId: 'st-blocked', toolsAllow: ['exec'] },
      },
    },
  }
  home.writeConfig(config)
  gateway = await home.startGateway()
  nc = await rawClient(nats.url, { token: TOKEN, maxReconnectAttempts: -1, reconnectTimeWait: 100 })
})

after(async () => {
  if (process.env.PIER_E2E_LOG && gateway) writeFileSync(process.env.PIER_E2E_LOG, gateway.log())
  await gateway?.stop()
  await nc?.close()
  await nats?.stop()
  await model?.close()
  home?.cleanup()
})

describe('channels status, logs and audit tell the truth', () => {
  it('a worker with no workerId and no wallet answers, and gets a status issue and an audit finding', async () => {
    const reply = await firstRequest(nc, 'jobs.st.default', { type: 'task_request', id: 'st-1', task: 'PIERQ:st1', timeoutMs: 30_000 })
    assert.equal(reply.result, answerFor('st1'))
    assert.deepEqual(reply.worker, { id: 'anonymous-worker', wallet: null })
    const status = await waitFor(async () => {
      const s = await channelStatus()
      return account(s, 'default')?.connected ? s : null
    }, { timeout: 20_000, interval: 500 })
    const identity = issuesOf(status, 'default')
    assert.equal(identity.length, 1, JSON.stringify(status.statusIssues))
    assert.match(identity[0].message, /^paid jobs with nobody to pay: worker anonymous-worker has no workerId and no walletAddress/)
    assert.match(identity[0].fix, /openclaw config set channels\.pier\.walletAddress '"0x…"'/)
    // The CLI prints the same issue.
    const cli = JSON.parse(await home.cli(['channels', 'status', '--json']))
    assert.deepEqual(issuesOf(cli, 'default').map((i) => i.message), identity.map((i) => i.message))

    let audit
    try {
      audit = JSON.parse(await home.cli(['security', 'audit', '--json'], { timeout: 60_000 }))
    } catch (error) {
      audit = JSON.parse(error.stdout) // exit 1 when there are critical findings
    }
    const found = audit.findings.filter((f) => f.checkId === 'channels.pier.identity.anonymous')
    assert.equal(found.length, 1, JSON.stringify(audit.findings.map((f) => f.checkId)))
    assert.equal(found[0].severity, 'info')
    assert.match(found[0].title, /Pier account default: paid jobs with nobody to pay/)
  })

  it('a blocked account: one issue naming commands that exist, one log line', async () => {
    const status = await channelStatus()
    const blocked = account(status, 'blocked')
    assert.equal(blocked.lifecycle, 'blocked')
    assert.match(blocked.lastError, /^PIER_HOST_TOOLS: /)
    // One issue (OpenClaw's, whose message is the account's lastError): the cause and the fix.
    const issues = issuesOf(status, 'blocked')
    assert.equal(issues.length, 1, JSON.stringify(issues))
    assert.match(issues[0].message, /^PIER_HOST_TOOLS: .*Fix: remove them from toolsAllow.*; then the account restarts when channels\.pier changes/)
    assert.doesNotMatch(JSON.stringify(issues), /channels start/)
    const lines = (await channelLogLines()).filter((l) => /\[blocked\].*PIER_HOST_TOOLS/.test(l))
    assert.equal(lines.length, 1, lines.join('\n'))
  })

  it('NATS killed: within a second status says recovering with attempts and the error, and the plugin issue; three log lines for the outage', async () => {
    await nats.stop('SIGKILL')
    const killed = Date.now()
    await sleep(1000)
    const asked = Date.now()
    const status = await channelStatus()
    const down = account(status, 'default')
    const seen = JSON.stringify(down)
    assert.equal(down.connected, false, seen)
    assert.equal(down.running, true, seen)
    assert.equal(down.lifecycle, 'recovering', seen)
    assert.ok(down.reconnectAttempts > 0, seen)
    assert.match(down.lastError, /^PIER_CONNECT: cannot reach nats:\/\/127\.0\.0\.1:\d+: /, seen)
    assert.equal(down.pier.state, 'disconnected', seen)
    const issue = issuesOf(status, 'default').find((i) => i.kind === 'runtime')
    assert.ok(issue, JSON.stringify(status.statusIssues))
    assert.match(issue.message, /^not connected, retrying \(\d+ attempts\): PIER_CONNECT: /)
    assert.match(issue.fix, /natsUrl \(nats:\/\/127\.0\.0\.1:\d+\) is up and reachable/)
    console.log(`# status asked ${asked - killed} ms after the kill: ${down.reconnectAttempts} attempts`)

    // The attempts go on and the status follows them.
    await sleep(3000)
    const later = account(await channelStatus(), 'default')
    assert.ok(later.reconnectAttempts > down.reconnectAttempts, `${later.reconnectAttempts} > ${down.reconnectAttempts}`)

    nats = await startNatsServer({ name: 'pier-status-e2e', port: natsPort, extra: `authorization { token: "${TOKEN}" }` })
    const back = await waitFor(async () => {
      const a = account(await channelStatus(), 'default')
      return a.connected ? a : null
    }, { timeout: 20_000, interval: 500 })
    assert.equal(back.lifecycle, 'ready')
    assert.equal(back.reconnectAttempts, 0)
    const reply = await firstRequest(nc, 'jobs.st.default', { type: 'task_request', id: 'st-2', task: 'PIERQ:st2', timeoutMs: 30_000 })
    assert.equal(reply.result, answerFor('st2'))

    const lines = await channelLogLines()
    const outage = lines.filter((l) => /\[default\].*(NATS|reconnect|attempt)/.test(l) && !/NATS connected to/.test(l))
    assert.equal(outage.filter((l) => /lost; reconnecting/.test(l)).length, 1, outage.join('\n'))
    assert.equal(outage.filter((l) => /connection back to \S+ after \d+ s/.test(l)).length, 1, outage.join('\n'))
    assert.equal(outage.length, 2, `an outage under a minute is two lines:\n${outage.join('\n')}`)
    assert.ok(lines.some((l) => /\[default\] worker anonymous-worker taking jobs on jobs\.st\.default/.test(l)), 'the worker lines are in the channel log')
  })

  // Each subcommand goes through the same wrapper (plugin/cli.mjs): the gateway's config, its
  // SecretRefs resolved, for the account --account names. What each subcommand does is the CLI's
  // own (cli.test.mjs, discovery.test.mjs); one `openclaw pier` process costs 6-10 s here.
  it('openclaw pier lists every CLI command and runs them with the gateway config (SecretRef resolved, --account)', async () => {
    const pier = async (args) => {
      try {
        return { code: 0, ...(await run(OPENCLAW, ['pier', ...args], { env: home.env, timeout: 120_000 })) }
      } catch (error) {
        return { code: error.code, stdout: error.stdout, stderr: error.stderr }
      }
    }
    const help = await pier(['--help'])
    for (const name of ['workers', 'status', 'publish', 'keygen', 'ledger', 'identity']) assert.match(help.stdout, new RegExp(`\\b${name}\\b`), help.stdout)

    const status = await pier(['status'])
    assert.equal(status.code, 0, status.stderr)
    assert.equal(JSON.parse(status.stdout).servers, nats.url, 'connected with the file SecretRef token')

    const direct = await pier(['publish', 'PIERQ:cli1', '--publish-subject', 'jobs.st.default', '--timeout-ms', '30000'])
    assert.equal(direct.code, 0, direct.stderr)
    assert.equal(JSON.parse(direct.stdout).result, answerFor('cli1'))

    const blocked = await pier(['status', '--account', 'blocked'])
    assert.equal(blocked.code, 0, blocked.stderr)
    assert.equal(JSON.parse(blocked.stdout).subject, 'jobs.st.blocked', 'another account with --account')
  })

  it('pier-connector --config takes a channels.pier section as it is', async () => {
    const section = structuredClone(home.readConfig().channels.pier)
    section.token = { source: 'env', provider: 'default', id: 'PIER_STATUS_TOKEN' }
    const file = join(home.dir, 'pier-section.json')
    writeFileSync(file, JSON.stringify(section))
    const env = { ...process.env, PIER_STATUS_TOKEN: TOKEN }
    const { stdout } = await run(process.execPath, [CLI, 'status', '--config', file, '--account', 'blocked'], { env })
    assert.equal(JSON.parse(stdout).subject, 'jobs.st.blocked')
    const reply = JSON.parse((await run(process.execPath, [CLI, 'publish', 'PIERQ:cli2', '--config', file, '--publish-subject', 'jobs.st.default'], { env })).stdout)
    assert.equal(reply.result, answerFor('cli2'))
    // A SecretRef the CLI cannot resolve is named, with what to do.
    section.token = { source: 'file', provider: 'pierfile', id: '/pier/token' }
    writeFileSync(file, JSON.stringify(section))
    const refused = await run(process.execPath, [CLI, 'status', '--config', file]).catch((e) => e)
    assert.equal(refused.code, 2)
    assert.match(refused.stderr, /token in .* is a SecretRef \(file:\/pier\/token\) this CLI cannot resolve: run openclaw pier, which resolves it/)
  })
})
