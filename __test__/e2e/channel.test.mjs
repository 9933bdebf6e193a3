// End to end: Pier as an OpenClaw channel in one real gateway (Node 24, openclaw@2026.9.6),
// with real nats-servers and the fake model; nothing of the host is stubbed. Set up with
// `openclaw channels add`, secrets as SecretRefs (env and file) against a token-protected
// nats-server, three accounts (one whose NATS starts after the gateway, one whose turns may
// use the message tool: toolsAllow), live status through `openclaw channels status
// --probe`, the opt-in capped pier_publish, bounded job sessions, a job answered through the
// message tool on channel pier, /pier, and one drain per account on stop.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { writeFileSync, chmodSync } from 'node:fs'
import { join } from 'node:path'
import { startNatsServer, freePort } from '../helpers/nats-server.mjs'
import { startFakeModel, answerFor } from '../helpers/fake-model.mjs'
import { createOpenClawHome, packPlugin } from '../helpers/openclaw.mjs'
import { runWizard } from '../helpers/wizard.mjs'
import { firstRequest, rawClient, request, sleep, waitFor } from '../helpers/addon.mjs'

const TOKEN = 'e2e-secret-token-7f3a'
const FILE_TOKEN = TOKEN // the file SecretRef resolves to the same server token
const PLAINTEXT = 'plaintext-token-for-audit'

let nats, nc, model, home, gateway, latePort, late, lateNc
const t0 = Date.now()
const elapsed = () => `${((Date.now() - t0) / 1000).toFixed(1)}s`

/** The gateway's channels.status with probes (what `openclaw channels status --probe --json` shows), once it has accounts. */
async function channelStatus() {
  return waitFor(
    async () => {
      try {
        // The gateway's own answer, as the CLI prints it (one CLI process costs 6-20 s).
        const status = await home.call('channels.status', { probe: true })
        return status.channelAccounts?.pier ? status : null
      } catch {
        return null
      }
    },
    { timeout: 60_000, interval: 1000 },
  )
}

const account = (status, id) => status.channelAccounts.pier.find((a) => a.accountId === id)

/** The gateway's stored sessions (sessions.list's `sessions`, as it answers). */
async function storedSessions() {
  return (await home.call('sessions.list', { limit: 1000 })).sessions
}

async function sessionKeys() {
  return ((await storedSessions()) ?? []).map((s) => s.key)
}

/**
 * A job whose turn answers it with OpenClaw's `message` tool (channel pier, target the job id,
 * the fake model's PIERMSG marker) rather than with its final text: the requester must get the
 * tool's text, from this account's worker, and no session but the job's own may keep it.
 */
async function answeredByMessageTool(id) {
  const reply = await firstRequest(nc, 'jobs.chan.default', { type: 'task_request', id, task: `Answer with the message tool: PIERMSG:${id}`, timeoutMs: 30_000 })
  const calls = model.requests.filter((r) => r.messages.includes(`PIERMSG:${id}`))
  const seen = `${JSON.stringify(reply)}\nlog: ${gateway.log().split('\n').slice(-30).join('\n')}`
  assert.ok(calls[0]?.tools.includes('message'), `the message tool is offered to a job turn: ${calls[0]?.tools}`)
  assert.equal(reply.type, 'task_result', seen)
  // answerFor(id) came through the channel; the turn's final text would be after-message-<id>.
  assert.equal(reply.result, answerFor(id), seen)
  assert.deepEqual(reply.worker, { id: 'chan-default', wallet: '0xC0FFEE' })

  // Without a session route of the plugin's own, OpenClaw appends what the tool sent to the
  // agent's main session and makes pier/<job id> its delivery route (default dmScope "main"),
  // in the same tool call, just after sendText has answered the job (seen 3 s later).
  await sleep(3000)
  const history = JSON.stringify(await home.call('chat.history', { sessionKey: 'agent:main:main', limit: 20 }), null, 2)
  assert.doesNotMatch(history, new RegExp(answerFor(id)), 'the answer is not in the main session')
  const own = new RegExp(`job ${id} runs in stored session (agent:main:pier:[0-9a-f]{24})`).exec(gateway.log())?.[1]
  const others = (await storedSessions()).filter((s) => s.key !== own)
  assert.doesNotMatch(JSON.stringify(others), new RegExp(id), 'no other session is routed to the job')
}

async function invokeTool(args) {
  const response = await fetch(`http://127.0.0.1:${home.port}/tools/invoke`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ tool: 'pier_publish', args }),
  })
  return { status: response.status, body: await response.text() }
}

before(async () => {
  nats = await startNatsServer({ name: 'pier-channel-e2e', extra: `authorization { token: "${TOKEN}" }` })
  nc = await rawClient(nats.url, { token: TOKEN })
  latePort = await freePort()
  model = await startFakeModel()
  home = await createOpenClawHome({ modelBaseUrl: model.baseUrl, registryUrl: 'http://127.0.0.1:9/' })
  // The packed directory: a link to the built checkout makes OpenClaw read its target/ too.
  await home.cli(['plugins', 'install', '--link', packPlugin().dir, '--force', '--accept-capabilities'])
})

after(async () => {
  // PIER_E2E_LOG=<file> keeps the gateway's log for a look after the run.
  if (process.env.PIER_E2E_LOG && gateway) writeFileSync(process.env.PIER_E2E_LOG, gateway.log())
  await gateway?.stop()
  await nc?.close()
  await lateNc?.close()
  await late?.stop()
  await nats?.stop()
  await model?.close()
  home?.cleanup()
})

describe('Pier as an OpenClaw channel', () => {
  it('openclaw channels add --channel pier (interactive) runs the setup wizard and stores a SecretRef', async () => {
    const screen = await runWizard(
      home,
      [
        { prompt: /NATSURLofthePierserver/, keys: `\x15${nats.url}\r` },
        { prompt: /Workerid,showntojobpublishers/, keys: '\x15wizard-worker\r' },
        { prompt: /Walletaddressforrewards/, keys: '\x150xW1Z\r' },
        { prompt: /NATStoken.*UsePIER_TOKEN/, keys: '\r' }, // stored as a reference to PIER_TOKEN
      ],
      { PIER_TOKEN: 'wizard-token-not-to-be-stored' },
    )
    const pier = home.readConfig().channels?.pier
    assert.equal(pier?.natsUrl, nats.url, screen.slice(-1500))
    assert.equal(pier.workerId, 'wizard-worker')
    assert.equal(pier.walletAddress, '0xW1Z')
    assert.deepEqual(pier.token, { source: 'env', provider: 'default', id: 'PIER_TOKEN' })
    assert.doesNotMatch(JSON.stringify(home.readConfig()), /wizard-token-not-to-be-stored/)
    console.log(`# setup wizard done at ${elapsed()}`)
  })

  it('openclaw channels add --channel pier (non-interactive) writes a config that validates', async () => {
    await home.cli(['channels', 'add', '--channel', 'pier', '--url', nats.url, '--use-env', '--name', 'Main worker'])
    await home.cli(['channels', 'add', '--channel', 'pier', '--account', 'late', '--url', `nats://127.0.0.1:${latePort}`])
    const config = home.readConfig()
    const pier = config.channels.pier
    assert.equal(pier.natsUrl, nats.url)
    assert.deepEqual(pier.accounts.default.token, { source: 'env', provider: 'default', id: 'PIER_TOKEN' }, 'a reference, not the token')
    assert.equal(pier.accounts.default.name, 'Main worker')
    assert.equal(pier.accounts.late.natsUrl, `nats://127.0.0.1:${latePort}`)
    assert.deepEqual(JSON.parse(await home.cli(['config', 'validate', '--json'])).valid, true)

    // The rest of the setup a user would write by hand: identities, subjects, a third account
    // whose token is a file SecretRef, the publish cap, bounded sessions.
    const secretsFile = join(home.dir, 'pier-secrets.json')
    writeFileSync(secretsFile, JSON.stringify({ two: { token: FILE_TOKEN } }))
    chmodSync(secretsFile, 0o600)
    config.secrets = { providers: { pierfile: { source: 'file', path: secretsFile, mode: 'json' } } }
    Object.assign(pier, { publishSubject: 'jobs.chan.submit', jobTimeoutMs: 30_000, drainTimeoutMs: 20_000, maxPublishPrice: 10, keepSessions: 2 })
    Object.assign(pier.accounts.default, { subject: 'jobs.chan.default', workerId: 'chan-default', walletAddress: '0xC0FFEE', toolsAllow: ['message'], unsafeHostTools: true })
    Object.assign(pier.accounts.late, { subject: 'jobs.chan.late', workerId: 'chan-late', connectTimeoutMs: 500 })
    pier.accounts.two = { subject: 'jobs.chan.two', workerId: 'chan-two', token: { source: 'file', provider: 'pierfile', id: '/two/token' } }
    config.tools = { ...config.tools, toolSearch: false }
    home.writeConfig(config)
    const validated = JSON.parse(await home.cli(['config', 'validate', '--json']))
    assert.equal(validated.valid, true, JSON.stringify(validated))
    console.log(`# channels add + validate done at ${elapsed()}`)
  })

  it('secrets: SecretRefs resolve and a plaintext token is flagged by the secrets audit', async () => {
    const config = home.readConfig()
    config.channels.pier.accounts.audit = { enabled: false, token: PLAINTEXT }
    home.writeConfig(config)
    let audit
    try {
      audit = JSON.parse(await home.cli(['secrets', 'audit', '--json'], { timeout: 60_000 }))
    } catch (error) {
      audit = JSON.parse(error.stdout) // exit 1 when there are findings
    }
    const paths = audit.findings.map((f) => `${f.code} ${f.jsonPath}`)
    assert.ok(paths.includes('PLAINTEXT_FOUND channels.pier.accounts.audit.token'), paths.join('\n'))
    assert.ok(paths.includes('REF_UNRESOLVED channels.pier.accounts.default.token'), 'PIER_TOKEN is not set for the CLI')
    assert.ok(!paths.some((p) => p.includes('accounts.two.token')), 'the file SecretRef resolves')
    delete config.channels.pier.accounts.audit
    home.writeConfig(config)
  })

  it('NATS started after the gateway: the account reports connecting, then answers a job, and its status forgets the outage', async () => {
    home.env.PIER_TOKEN = TOKEN // the env SecretRef's value, only in the gateway's environment
    gateway = await home.startGateway()
    console.log(`# gateway ready at ${elapsed()}`)
    // NATS for this account starts once its status has shown it connecting.
    const before = await waitFor(async () => {
      const s = await channelStatus()
      return account(s, 'late')?.lastError ? s : null
    }, { timeout: 60_000, interval: 500 })
    const waiting = account(before, 'late')
    assert.equal(waiting.running, true)
    assert.equal(waiting.connected, false)
    assert.equal(waiting.pier.state, 'connecting', JSON.stringify(waiting))
    assert.match(waiting.lastError, /^PIER_CONNECT: /)
    assert.ok(before.statusIssues.some((i) => i.accountId === 'late' && i.kind === 'runtime'), JSON.stringify(before.statusIssues))
    late = await startNatsServer({ name: 'pier-late', port: latePort })
    lateNc = await rawClient(late.url)
    console.log(`# late NATS up ${((Date.now() - gateway.readyAt) / 1000).toFixed(1)} s after the gateway was ready`)
    const reply = await firstRequest(lateNc, 'jobs.chan.late', { type: 'task_request', id: 'late-1', task: 'PIERQ:late', timeoutMs: 30_000 })
    assert.equal(reply.result, answerFor('late'))
    assert.equal(reply.worker.id, 'chan-late')
    const after = account(await channelStatus(), 'late')
    assert.equal(after.connected, true)
    assert.equal(after.lifecycle, 'ready')
    assert.equal(after.lastError ?? null, null, `status tells the present: ${after.lastError}`)
  })

  it('channels status --probe --json: the account runs, is connected, and answers a job through a real agent turn', async () => {
    const reply = await firstRequest(nc, 'jobs.chan.default', { type: 'task_request', id: 'c-1', task: 'Please answer PIERQ:alpha', timeoutMs: 30_000 })
    assert.equal(reply.type, 'task_result', JSON.stringify(reply))
    assert.equal(reply.result, answerFor('alpha'))
    assert.deepEqual(reply.worker, { id: 'chan-default', wallet: '0xC0FFEE' })

    const status = await waitFor(async () => {
      const s = await channelStatus()
      return account(s, 'default')?.pier?.completed >= 1 ? s : null
    }, { timeout: 30_000, interval: 500 })
    const main = account(status, 'default')
    assert.equal(main.running, true)
    assert.equal(main.connected, true)
    assert.equal(main.enabled, true)
    assert.equal(main.configured, true)
    assert.equal(main.lifecycle, 'ready')
    assert.ok(main.healthState === undefined || main.healthState === 'healthy', main.healthState)
    assert.equal(main.probe.ok, true)
    assert.equal(main.pier.server, nats.url)
    assert.equal(main.pier.serverName, 'pier-channel-e2e')
    assert.equal(main.pier.workerId, 'chan-default')
    assert.equal(main.pier.inFlight, 0)
    assert.equal(main.pier.received, 1)
    assert.equal(main.pier.completed, 1)
    assert.equal(main.lastError, null)
    assert.equal(main.name, 'Main worker')
    assert.deepEqual(status.statusIssues.filter((i) => i.accountId === 'default'), [])
    assert.doesNotMatch(JSON.stringify(status), new RegExp(TOKEN))

    const text = await home.cli(['channels', 'status', '--probe'])
    assert.match(text, /Pier default \(Main worker\): enabled, configured, running, connected,.* works/)
    assert.doesNotMatch(text, /health:/)
    const overview = await home.cli(['status'])
    assert.doesNotMatch(overview, /No channels configured/)
    assert.match(overview, /│ Pier\s+│ ON\s+│ OK/)
  })

  it("a SecretRef file token logs in to the token-protected server: a second account answers on its own subject, each offered only its toolsAllow's tools (none by default)", async () => {
    const one = await request(nc, 'jobs.chan.default', { id: 'two-a', task: 'PIERQ:one', timeoutMs: 30_000 }, 45_000)
    const two = await firstRequest(nc, 'jobs.chan.two', { id: 'two-b', task: 'PIERQ:two', timeoutMs: 30_000 })
    assert.equal(one.result, answerFor('one'))
    assert.equal(two.result, answerFor('two'))
    assert.equal(one.worker.id, 'chan-default')
    assert.equal(two.worker.id, 'chan-two')
    // Account two has no toolsAllow, so its job turns are offered no tools (the default); the
    // default account lists the message tool, and gets it alone.
    const toolsFor = (marker) => model.requests.find((r) => r.messages.includes(marker))?.tools
    assert.deepEqual(toolsFor('PIERQ:two'), [])
    assert.deepEqual(toolsFor('PIERQ:one'), ['message'])
    const status = await channelStatus()
    assert.equal(account(status, 'two').connected, true)
    assert.equal(account(status, 'two').pier.subject, 'jobs.chan.two')
  })

  it('/pier shows the fleet table and one readable block per account', async () => {
    const key = 'agent:main:main'
    await home.call('chat.send', { sessionKey: key, message: '/pier', idempotencyKey: `pier-${Date.now()}` })
    let last = ''
    const history = await waitFor(
      async () => {
        last = JSON.stringify(await home.call('chat.history', { sessionKey: key, limit: 6 }), null, 2)
        return /Pier connector/.test(last) ? last : null
      },
      { timeout: 30_000, interval: 500 },
    ).catch((error) => {
      throw new Error(`${error.message}; last history: ${last.slice(-3000)}`)
    })
    const text = JSON.parse(JSON.stringify(history)).replace(/\\n/g, '\n')
    for (const id of ['default', 'late', 'two']) assert.match(text, new RegExp(`account ${id}\\n  connection: connected, server nats://`))
    // The fleet table above the blocks: the CLI's columns, one row per running account.
    assert.match(text, /WORKER +SERVER +UP +RUN +DONE +FAIL +P50 +EARNED +SPENT\n/)
    for (const worker of ['chan-default', 'chan-late', 'chan-two']) assert.match(text, new RegExp(`\\n${worker} +127\\.0\\.0\\.1:\\d+ +\\d+(s|m \\d\\ds) +\\d+ +\\d+ +\\d+ +(–|≤\\d+ms|≤[\\d.]+s) +[\\d.]+ +[\\d.]+\\n`))
    assert.match(text, /\n3 workers; counts since each started \(UP\)\n/)
    assert.match(text, /uptime: (\d+s|\d+m \d\ds); the counts below start again with the worker/)
    assert.match(text, /reconnects: \d+ \(\d+ disconnects?\)/)
    assert.match(text, /last error: /)
    assert.doesNotMatch(text, /uptimeMs|\d{5,} ?ms/)
  })

  it('pier_publish is opt-in, refused over the price cap before sending, and every error has a code', async () => {
    const effective = async () =>
      JSON.stringify(await home.call('tools.effective', { sessionKey: 'agent:main:main' }))
    assert.doesNotMatch(await effective(), /pier_publish/, 'not offered to an agent until the user allows it')
    // The user opts in; the running gateway picks the config change up.
    await home.cli(['config', 'set', 'tools.alsoAllow', '["pier_publish"]', '--strict-json'])
    await waitFor(async () => /pier_publish/.test(await effective()), { timeout: 30_000, interval: 1000 })

    const sent = []
    const sub = nc.subscribe('jobs.chan.submit', { callback: (_e, m) => sent.push(m) })
    await nc.flush()
    const over = await invokeTool({ task: 'PIERQ:costly', meta: { price: 11 } })
    assert.equal(over.status, 200, over.body)
    assert.match(over.body, /"code":"PIER_PRICE_CAP"/)
    assert.match(over.body, /above maxPublishPrice 10/)

    const paid = await invokeTool({ task: 'PIERQ:paid', meta: { price: 5 }, timeoutMs: 2000 })
    console.log(`# paid publish within the cap: ${paid.body.slice(0, 300)}`)
    assert.doesNotMatch(paid.body, /task_result/, 'a paid publish waits for an approval nobody can give here')
    assert.match(paid.body, /approv/i)
    await sleep(300)
    assert.equal(sent.length, 0, `nothing was published: ${paid.body}`)

    const free = await invokeTool({ task: 'PIERQ:free', timeoutMs: 2000 })
    assert.match(free.body, /"code":"PIER_(NO_RESPONDERS|TIMEOUT)"/)
    assert.equal(sent.length, 1, 'an unpaid task is sent')
    sub.unsubscribe()
    assert.doesNotMatch(over.body + paid.body + free.body, new RegExp(TOKEN))
  })

  it('job sessions past keepSessions are removed as each turn ends: after 10 jobs the newest 2 remain, keyed by a token of the worker', async () => {
    for (let i = 0; i < 10; i++) {
      const reply = await request(nc, 'jobs.chan.default', { id: `s-${i}`, task: `PIERQ:s${i}`, timeoutMs: 30_000 }, 45_000)
      assert.equal(reply.result, answerFor(`s${i}`), `${JSON.stringify(reply)}\n${gateway.log().split('\n').slice(-30).join('\n')}`)
    }
    // Each job's session is deleted as its turn ends, past the newest 2 of each of the three
    // accounts that share this agent: no wait for a gap between jobs.
    // The reply may leave before the deletion its turn's end started (~10 ms) is done.
    const keys = await waitFor(async () => {
      const k = (await sessionKeys()).filter((key) => key.includes(':pier:'))
      return k.length <= 2 * 3 ? k : null
    }, { timeout: 10_000, interval: 100 })
    const newest = /\[default\] job s-9 runs in stored session (agent:main:pier:[0-9a-f]{24}) \(keepSessions\)/.exec(gateway.log())
    assert.ok(newest, 'the log names the stored session of each job')
    assert.ok(keys.includes(newest[1]), 'the newest kept (keepSessions 2)')
    assert.ok(!keys.some((k) => /s-\d/.test(k)), 'keyed by a token of the worker, never by the job id')
  })

  it('a durable job turn (keepSessions 2) answers its job with the message tool on channel pier', async () => {
    await answeredByMessageTool('m-durable')
  })

  it('stopping the gateway drains each account once: an in-flight job is still answered', async () => {
    const pending = request(nc, 'jobs.chan.default', { id: 'drain-1', task: 'PIERQ:slow1', timeoutMs: 30_000 }, 45_000)
    // Stop once the turn is inside its (2 s) model call.
    await waitFor(() => model.requests.some((r) => r.word === 'slow1'), { timeout: 20_000 })
    const exited = gateway.stop()
    const reply = await pending
    assert.equal(reply.type, 'task_result', `${JSON.stringify(reply)}\n${gateway.log().split('\n').slice(-40).join('\n')}`)
    assert.equal(reply.result, answerFor('slow1'))
    await exited
    const log = gateway.log()
    for (const id of ['default', 'late', 'two']) {
      assert.equal(log.split(`[${id}] stopping: draining in-flight jobs`).length - 1, 1, `${id} drained once`)
    }
    assert.doesNotMatch(log, new RegExp(TOKEN))
    gateway = null
  })

  it('a restarted gateway deletes the job sessions its earlier run left (keepSessions 2), then stores none (0)', async () => {
    const config = home.readConfig()
    config.channels.pier.keepSessions = 0
    home.writeConfig(config)
    gateway = await home.startGateway()
    const swept = await waitFor(() => /\[(?:default|late|two)\] deleting (\d+) job sessions an earlier gateway run left behind/.exec(gateway.log()), { timeout: 60_000, interval: 500 })
    assert.ok(Number(swept[1]) >= 1, swept[0])
    await waitFor(async () => ((await sessionKeys()).some((k) => k.includes(':pier:')) ? null : true), { timeout: 60_000, interval: 1000 })
    // keepSessions 0 (the default): job turns are detached, so answered jobs store no session.
    for (const id of ['d-1', 'd-2']) {
      const reply = await firstRequest(nc, 'jobs.chan.default', { id, task: `PIERQ:${id}`, timeoutMs: 30_000 })
      assert.equal(reply.result, answerFor(id))
    }
    assert.deepEqual((await sessionKeys()).filter((k) => k.includes(':pier:')), [])
    console.log(`# done at ${elapsed()}`)
  })

  it('a detached job turn (keepSessions 0) answers its job with the message tool on channel pier', async () => {
    await answeredByMessageTool('m-detached')
    assert.deepEqual((await sessionKeys()).filter((k) => k.includes(':pier:')), [])
  })
})
