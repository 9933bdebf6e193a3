// End to end: a busy worker is reconfigured and restarted in one real gateway (Node 24,
// openclaw@2026.9.6). 20 hot config reloads, each a new channels.pier workerId, and one
// in-process `openclaw gateway restart`, with jobs arriving all along and a slow job in flight
// at each reload: the job in flight is finished by the old worker, a job after the change is
// answered by the new config's worker within drainTimeoutMs plus a few seconds, one worker per
// account answers discovery, and the gateway's threads and RSS stay bounded (measured; the
// numbers go to bench/RESULTS.md). Every other change is written as JSON5 (a comment, unquoted
// keys, trailing commas), as people edit openclaw.json: the watcher reads it as OpenClaw does;
// the last test splits the config with $include and ${VAR}.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, readdirSync, writeFileSync } from 'node:fs'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { join } from 'node:path'
import { startNatsServer } from '../helpers/nats-server.mjs'
import { startFakeModel, answerFor } from '../helpers/fake-model.mjs'
import { createOpenClawHome, packPlugin } from '../helpers/openclaw.mjs'
import { PierClient, rawClient, request, waitFor, sleep } from '../helpers/addon.mjs'

const SUBJECT = 'jobs.reload'
const CLI = fileURLToPath(new URL('../../cli/pier-connector.js', import.meta.url))
const DRAIN_MS = 5000
const RELOADS = 20
let nats, nc, model, home, gateway, discovery

/** The gateway process: the launcher's descendant with the most threads (or the launcher). */
function gatewayPid(root) {
  const parent = new Map()
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      parent.set(Number(pid), Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')[1]))
    } catch {}
  }
  const tree = [root]
  for (let i = 0; i < tree.length; i++) for (const [pid, ppid] of parent) if (ppid === tree[i]) tree.push(pid)
  return tree.map((pid) => [pid, threadsOf(pid)]).sort((a, b) => b[1] - a[1])[0][0]
}

function threadsOf(pid) {
  try {
    return readdirSync(`/proc/${pid}/task`).length
  } catch {
    return 0
  }
}

/** Thread names (comm) of a process, counted, and how many copies of the addon it maps. */
function threadReport(pid) {
  const names = {}
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    try {
      const name = readFileSync(`/proc/${pid}/task/${task}/comm`, 'utf8').trim()
      names[name] = (names[name] ?? 0) + 1
    } catch {}
  }
  const copies = new Set(readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n').filter((l) => /pier-connector[^/]*\.node( \(deleted\))?$/.test(l)).map((l) => l.split(/\s+/).slice(5).join(' ')))
  return `${Object.entries(names).sort((a, b) => b[1] - a[1]).map(([n, c]) => `${n}:${c}`).join(' ')}; addon copies mapped: ${copies.size}`
}

function rssMbOf(pid) {
  const kb = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0)
  return Math.round(kb / 1024)
}

/** Jobs sent every 150 ms all along: what answered each, and what did not. */
function startLoad() {
  const outcomes = []
  let stopped = false
  let n = 0
  const done = (async () => {
    while (!stopped) {
      const id = `load-${n++}`
      const sent = Date.now()
      request(nc, SUBJECT, { type: 'task_request', id, task: `PIERQ:${id}`, timeoutMs: 20_000 }, 25_000).then(
        (reply) => outcomes.push({ id, sent, at: Date.now(), worker: reply.worker?.id, type: reply.type, code: reply.error?.code }),
        (error) => outcomes.push({ id, sent, at: Date.now(), failed: /no responders/i.test(error.message) ? 'no responders' : error.message }),
      )
      await sleep(150)
    }
  })()
  return {
    outcomes,
    async stop() {
      stopped = true
      await done
      await waitFor(() => outcomes.length >= n, { timeout: 30_000, interval: 100 })
    },
  }
}

/**
 * A slow job (2 s in the model, PIERQ:<word>) once its turn has reached the model: sent again
 * while the background load holds every slot (OVERLOADED). Resolves with the promise of its
 * answer.
 */
async function slowJobInFlight(word) {
  for (let attempt = 0; ; attempt++) {
    const reply = request(nc, SUBJECT, { type: 'task_request', id: `${word}-${attempt}`, task: `PIERQ:${word}`, timeoutMs: 20_000 }, 25_000)
    const reached = waitFor(() => model.requests.some((r) => r.word === word), { timeout: 25_000, interval: 50 }).catch(() => false)
    const first = await Promise.race([reached.then(() => 'running'), reply.then((r) => r, () => 'failed')])
    if (first === 'running' || first === 'failed' || first.error?.code !== 'OVERLOADED') return { answer: reply }
  }
}

/** Sends a job until the worker `workerId` answers one; resolves with the time it took. */
async function answeredBy(workerId, since) {
  let k = 0
  return waitFor(
    async () => {
      try {
        const reply = await request(nc, SUBJECT, { type: 'task_request', id: `${workerId}-probe-${k++}`, task: 'PIERQ:probe', timeoutMs: 20_000 }, 25_000)
        return reply.worker?.id === workerId && reply.result === answerFor('probe') ? Date.now() - since : null
      } catch {
        return null
      }
    },
    { timeout: 60_000, interval: 100 },
  )
}

/** The workers that answer discovery on this server. */
async function liveWorkers() {
  return (await discovery.workers(700)).map((w) => w.metadata?.workerId)
}

/**
 * `config` as a person edits OpenClaw's JSON5 file: a comment, unquoted keys, trailing commas.
 * The watcher must read it as OpenClaw does (JSON.parse cannot).
 */
function json5Text(config, note) {
  const text = JSON.stringify(config, null, 2)
    .replace(/^(\s*)"([A-Za-z_$][\w$]*)":/gm, '$1$2:')
    .replace(/([^,{[\s])(?=\n\s*[}\]])/g, '$1,')
  return `// ${note}\n${text}\n`
}

let lastConfig
/** Every other change is written as JSON5. */
function setWorkerId(id, i) {
  let config
  try {
    config = home.readConfig()
  } catch {
    config = structuredClone(lastConfig) // the file is JSON5 now: the test's own copy
  }
  config.channels.pier.workerId = id
  lastConfig = config
  if (i % 2) writeFileSync(home.configPath, json5Text(config, `reload ${i}: worker ${id}`))
  else home.writeConfig(config)
}

before(async () => {
  nats = await startNatsServer({ name: 'pier-reload-e2e' })
  nc = await rawClient(nats.url)
  discovery = new PierClient({ natsUrl: nats.url })
  model = await startFakeModel()
  // PIER_RELOAD_LAST: what the last test's included file substitutes (`${PIER_RELOAD_LAST}`).
  home = await createOpenClawHome({ modelBaseUrl: model.baseUrl, registryUrl: 'http://127.0.0.1:9/', env: { PIER_RELOAD_LAST: String(RELOADS) } })
  await home.cli(['plugins', 'install', '--link', packPlugin().dir, '--force', '--accept-capabilities'])
  const config = home.readConfig()
  config.channels = { pier: { natsUrl: nats.url, subject: SUBJECT, workerId: 'rl-0', walletAddress: '0xRL', drainTimeoutMs: DRAIN_MS, jobTimeoutMs: 20_000 } }
  config.logging = { file: join(home.dir, 'openclaw.log') }
  home.writeConfig(config)
  gateway = await home.startGateway()
})

after(async () => {
  if (process.env.PIER_E2E_LOG && gateway) writeFileSync(process.env.PIER_E2E_LOG, gateway.log())
  await gateway?.stop()
  await discovery?.close()
  await nc?.close()
  await nats?.stop()
  await model?.close()
  home?.cleanup()
})

describe('reloads and restarts under load', () => {
  it(`${RELOADS} hot reloads, each a new workerId, jobs arriving throughout: each applies, the job in flight finishing first`, async () => {
    await answeredBy('rl-0', Date.now())
    const pid = gatewayPid(gateway.child.pid)
    const load = startLoad()
    const samples = [{ reload: 0, threads: threadsOf(pid), rssMb: rssMbOf(pid) }]
    const applied = []
    try {
      for (let i = 1; i <= RELOADS; i++) {
        // A slow job (2 s in the model) is in flight when the config changes.
        const slow = (await slowJobInFlight(`slow${i}`)).answer
        const changed = Date.now()
        setWorkerId(`rl-${i}`, i)
        const ms = await answeredBy(`rl-${i}`, changed)
        applied.push(ms)
        const inFlight = await slow
        assert.equal(inFlight.type, 'task_result', `the job in flight at reload ${i} finished: ${JSON.stringify(inFlight)}`)
        assert.equal(inFlight.result, answerFor(`slow${i}`))
        assert.deepEqual(await liveWorkers(), [`rl-${i}`], `one worker after reload ${i}`)
        samples.push({ reload: i, threads: threadsOf(pid), rssMb: rssMbOf(pid) })
      }
    } finally {
      await load.stop()
    }
    assert.equal(gatewayPid(gateway.child.pid), pid, 'the same gateway process throughout')
    const answered = load.outcomes.filter((o) => o.type === 'task_result')
    const refused = load.outcomes.filter((o) => o.type === 'task_error')
    const missed = load.outcomes.filter((o) => o.failed)
    console.log(`# reload applied (change -> first job answered by the new worker), ms: ${applied.join(' ')}`)
    console.log(`# load: ${load.outcomes.length} jobs, ${answered.length} answered, ${refused.length} task_error (${[...new Set(refused.map((o) => o.code))].join(',')}), ${missed.length} not taken (${[...new Set(missed.map((o) => o.failed))].join(',')})`)
    console.log(`# threads: ${samples.map((s) => s.threads).join(' ')}`)
    console.log(`# rss MB: ${samples.map((s) => s.rssMb).join(' ')}`)
    console.log(`# gateway threads by name after ${RELOADS} reloads: ${threadReport(pid)}`)
    // Each change applied: answeredBy waits at most 60 s for the new worker, and a change deferred
    // behind a busy worker (the defect this guards) is never applied. How long it took is a
    // measurement (printed above; bench/RESULTS.md), not a pass mark: on 2 cores that other
    // work shares it ranged from 2.6 s to 16 s.
    // A busy worker refuses what exceeds maxConcurrentJobs (4) at once; nothing else fails.
    assert.ok(refused.every((o) => o.code === 'OVERLOADED' || o.code === 'SHUTTING_DOWN'), JSON.stringify(refused.slice(0, 3)))
    // A job neither answered nor refused by NATS: what the gateway logged of it (every job a
    // worker received ends in one line naming it), and the worker's lifecycle lines.
    const lost = load.outcomes.filter((o) => !o.type && o.failed !== 'no responders')
    const logged = gateway.log().split('\n').filter((l) => lost.some((o) => l.includes(`job ${o.id} `)) || /worker (rl-\d+ subscribed|stopped)|stopping:|still running|NATS (draining|connection closed)/.test(l))
    assert.ok(answered.length > 0 && lost.length === 0, `${JSON.stringify(lost.slice(0, 3))}\n${logged.join('\n')}`)
    const threads = samples.map((s) => s.threads)
    const rss = samples.map((s) => s.rssMb)
    assert.ok(Math.max(...threads.slice(10)) <= Math.max(...threads.slice(0, 10)) + 4, `threads bounded: ${threads.join(' ')}`)
    // Each reload once left a runtime (2 threads) per addon copy OpenClaw loaded (~3 a reload) and
    // ~31 MB of RSS: 23 -> 143 threads, 945 -> 1574 MB over 20 reloads. Now the gateway's heap
    // grows over the first reloads and levels off (a release build's runs: +320 to +450 MB over
    // 20, with plateaus, one addon copy mapped); over the last 10 it must stay well under the
    // leak's rate.
    const lastTen = (rss[20] - rss[10]) / 10
    assert.ok(lastTen < 20, `RSS bounded: +${lastTen.toFixed(1)} MB a reload over the last 10 (${rss.join(' ')})`)
  })

  it('adding the job agent (openclaw agents add pier-jobs) while jobs arrive never stops the worker', async () => {
    const load = startLoad()
    const added = Date.now()
    let out
    try {
      out = await home.cli(['agents', 'add', 'pier-jobs', '--workspace', join(home.dir, 'state', 'pier', 'job-workspace'), '--non-interactive'])
      // Jobs after the change run as pier-jobs, on the worker that never stopped.
      await waitFor(() => /jobs now run as agent pier-jobs \(was main\), the worker running on/.test(gateway.log()), { timeout: 30_000, interval: 200 })
    } finally {
      await load.stop()
    }
    const after = await request(nc, SUBJECT, { type: 'task_request', id: 'after-agent', task: 'PIERQ:after-agent', timeoutMs: 20_000 }, 25_000)
    assert.equal(after.result, answerFor('after-agent'), JSON.stringify(after))
    assert.equal(after.worker.id, `rl-${RELOADS}`)
    const ms = Date.now() - added
    console.log(`# agents add pier-jobs: jobs run as pier-jobs ${ms} ms after the command began`)
    assert.match(out, /Agent: pier-jobs/)
    // The worker never stopped: every job sent meanwhile was answered by it.
    const notAnswered = load.outcomes.filter((o) => o.type !== 'task_result' && o.code !== 'OVERLOADED')
    assert.deepEqual(notAnswered, [], 'no job went unanswered or failed while the agent was added')
    const status = await home.call('channels.status', {})
    const account = status.channelAccounts.pier.find((a) => a.accountId === 'default')
    assert.equal(account.lifecycle, 'ready', JSON.stringify(account))
    // (lastError may name the load's last OVERLOADED refusal; never a stop.)
    assert.doesNotMatch(account.lastError ?? '', /config change|PIER_|stopped/)

  })

  it('/pier after the job agent was added: the command answers, never the model (#34 item 2)', async () => {
    // The test before added pier-jobs: a hot reload that reloads no plugin. A chat turn then
    // matches commands against its agent's own registry, loaded in discovery mode for the new
    // config, where registerFull does not run; /pier is registered from registerCapabilities.
    assert.match(gateway.log(), /jobs now run as agent pier-jobs/, 'pier-jobs was added in this gateway')
    const key = 'agent:main:main'
    const asked = model.requests.length
    const seen = (await home.call('chat.history', { sessionKey: key, limit: 50 })).messages?.length ?? 0
    await home.call('chat.send', { sessionKey: key, message: '/pier', idempotencyKey: `rl-pier-${Date.now()}` })
    const reply = await waitFor(
      async () => {
        const messages = (await home.call('chat.history', { sessionKey: key, limit: 50 })).messages ?? []
        return messages.slice(seen).find((m) => m.role === 'assistant') ?? null
      },
      { timeout: 30_000, interval: 500 },
    )
    const text = typeof reply.content === 'string' ? reply.content : (reply.content ?? []).map((part) => part.text ?? '').join('')
    assert.match(text, /^Pier connector/, `the command's text, not a model's answer: ${text}`)
    assert.match(text, new RegExp(`account default\\n {2}connection: connected[^\\n]*\\n {2}worker: rl-${RELOADS}`), text)
    assert.ok(!model.requests.slice(asked).some((r) => r.messages.includes('/pier')), 'the model was never asked /pier')
  })

  it('an in-process gateway restart under load: running jobs finish or are answered SHUTTING_DOWN, the worker is back, alone, and the old copy left nothing running', async () => {
    const pid = gatewayPid(gateway.child.pid)
    const before = { threads: threadsOf(pid), rssMb: rssMbOf(pid) }
    const { outcomes, inFlight, ms } = await restartUnderLoad(pid, 'slowrestart')
    assert.equal(inFlight.type, 'task_result', `the job in flight at the restart finished: ${JSON.stringify(inFlight)}`)
    assert.equal(gatewayPid(gateway.child.pid), pid, 'restarted in-process')
    assert.match(gateway.log(), /restart/i)
    assert.deepEqual(await liveWorkers(), [`rl-${RELOADS}`])
    // A job the restart caught was finished, or refused with a code that says "send it again".
    const failed = outcomes.filter((o) => o.type === 'task_error' && o.code !== 'SHUTTING_DOWN' && o.code !== 'OVERLOADED')
    assert.deepEqual(failed, [], 'no job failed because of the restart')
    const gap = noWorkerGap(outcomes)
    console.log(`# in-process restart: worker back in ${ms} ms; no worker on the subject for ${gap.ms} ms (${gap.jobs} jobs found no responders)`)
    await sleep(3000)
    const after = { threads: threadsOf(pid), rssMb: rssMbOf(pid) }
    console.log(`# in-process restart: threads ${before.threads} -> ${after.threads}, rss ${before.rssMb} -> ${after.rssMb} MB`)
    assert.ok(after.threads <= before.threads + 4, `threads ${before.threads} -> ${after.threads}`)
    assert.doesNotMatch(gateway.log(), /Plugin replacement failed|cannot allocate memory in static TLS|still has active retained work/)
  })

  it('a second worker in the same queue group covers a restart: every job sent meanwhile is answered', async () => {
    const pid = gatewayPid(gateway.child.pid)
    const backup = spawn(process.execPath, [CLI, 'worker', '--echo', '--nats-url', nats.url, '--subject', SUBJECT, '--worker-id', 'backup'], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, XDG_CONFIG_HOME: home.dir },
    })
    let log = ''
    backup.stderr.on('data', (c) => (log += c))
    try {
      await waitFor(() => log.includes('subscribed to'), { timeout: 20_000 })
      const { outcomes } = await restartUnderLoad(pid, 'slowbackup')
      const missed = outcomes.filter((o) => !o.type)
      assert.deepEqual(missed, [], 'no job found no responders')
      const failed = outcomes.filter((o) => o.type === 'task_error' && o.code !== 'SHUTTING_DOWN' && o.code !== 'OVERLOADED')
      assert.deepEqual(failed, [])
      const byBackup = outcomes.filter((o) => o.worker === 'backup' && o.type === 'task_result').length
      console.log(`# restart with a second worker: ${outcomes.length} jobs, ${byBackup} answered by it, none lost`)
      assert.ok(byBackup > 0)
    } finally {
      // Stopped, not killed: a killed worker's subscription lives on in the server until it
      // notices the closed socket, and a job routed to it meanwhile (the next test's first) is
      // lost. A stopped one unsubscribes before it exits.
      const exited = new Promise((resolve) => backup.once('exit', resolve))
      backup.kill('SIGTERM')
      const stuck = setTimeout(() => backup.kill('SIGKILL'), 20_000)
      await exited
      clearTimeout(stuck)
    }
  })

  it('a config split with $include and ${VAR}: moving the account into an included file unchanged stops nothing, and an edit of that file alone applies', async () => {
    const included = join(home.dir, 'pier-channel.json5')
    const config = home.readConfig()
    const pier = config.channels.pier
    assert.equal(pier.workerId, `rl-${RELOADS}`)
    const load = startLoad()
    const logAt = gateway.log().length
    let ms
    try {
      // The same settings, now in an included JSON5 file, the workerId from the gateway's
      // environment: the config OpenClaw reads is the same, so the worker must run on (read as
      // plain JSON, the account's settings would be `{ $include }` and it would stop for a
      // change the gateway never applies). ui.seamColor changes too, so the gateway says when it
      // has read the file: it names the paths that changed.
      writeFileSync(included, json5Text({ ...pier, workerId: 'rl-${PIER_RELOAD_LAST}' }, 'the pier channel, included'))
      writeFileSync(home.configPath, JSON.stringify({ ...config, channels: { ...config.channels, pier: { $include: './pier-channel.json5' } }, ui: { ...config.ui, seamColor: '#FF4500' } }, null, 2))
      const read = await waitFor(() => /config change detected; evaluating reload \(([^)]*)\)/.exec(gateway.log().slice(logAt)), { timeout: 30_000, interval: 100 })
      assert.equal(read[1], 'ui', 'for the gateway only ui changed')
      // An edit of the included file alone, a slow job in flight: OpenClaw watches the files a
      // config includes, and so must the worker, or the change waits until the gateway happens
      // to find no turn running (13.6 s in a run without it; for ever under steady load).
      const slow = (await slowJobInFlight('slowinclude')).answer
      const changed = Date.now()
      writeFileSync(included, json5Text({ ...pier, workerId: 'rl-${PIER_RELOAD_LAST}-inc' }, 'the pier channel, edited'))
      ms = await answeredBy(`rl-${RELOADS}-inc`, changed)
      const inFlight = await slow
      assert.equal(inFlight.type, 'task_result', `the job in flight at the edit finished: ${JSON.stringify(inFlight)}`)
    } finally {
      await load.stop()
    }
    console.log(`# an edit of an included file applied in ${ms} ms`)
    assert.deepEqual(await liveWorkers(), [`rl-${RELOADS}-inc`])
    // The worker stopped for the edit itself, once; never for the move (the line each stop for
    // a config change logs).
    const stops = gateway.log().slice(logAt).split('\n').filter((l) => /config changed: taking no more jobs/.test(l))
    assert.equal(stops.length, 1, `stops for a config change: ${stops.join('\n') || 'none'}`)
    const lost = load.outcomes.filter((o) => !o.type && o.failed !== 'no responders')
    assert.deepEqual(lost, [], 'every job was answered or refused')
  })
})

/** Restarts the gateway in-process while jobs arrive; what became of them and of a slow one. */
async function restartUnderLoad(pid, word) {
  const load = startLoad()
  const slow = (await slowJobInFlight(word)).answer
  const restarted = Date.now()
  try {
    await home.cli(['gateway', 'restart'], { timeout: 120_000 })
  } catch (error) {
    // No service manager here: the running gateway restarts itself on SIGUSR2.
    process.kill(pid, 'SIGUSR2')
  }
  let ms
  try {
    ms = await answeredBy(`rl-${RELOADS}`, restarted)
  } finally {
    await load.stop()
  }
  return { outcomes: load.outcomes, inFlight: await slow, ms }
}

/** How long no worker listened: from the first job that found no responders to the last. */
function noWorkerGap(outcomes) {
  const missed = outcomes.filter((o) => o.failed === 'no responders')
  if (!missed.length) return { ms: 0, jobs: 0 }
  const sent = missed.map((o) => o.sent)
  return { ms: Math.max(...sent) - Math.min(...sent) + 150, jobs: missed.length }
}