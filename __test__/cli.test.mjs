// The CLI as a user runs it: a worker process (--echo, --exec), publish and status.
import { describe, it, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { fileURLToPath } from 'node:url'
import { useNats, request, waitFor } from './helpers/addon.mjs'
import { processesRunning } from './conformance/harness.mjs'
import { createRequire } from 'node:module'
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const CLI = fileURLToPath(new URL('../cli/pier-connector.js', import.meta.url))
const run = promisify(execFile)

const nats = useNats()

const children = new Set()
after(() => {
  // A failed assertion must not leave a worker process holding the test run open.
  for (const child of children) child.kill('SIGKILL')
})

/** Starts `pier-connector worker ...` and resolves once it has subscribed. */
async function startCliWorker(args, env = process.env) {
  const child = spawn(process.execPath, [CLI, 'worker', '--nats-url', nats.server.url, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env,
  })
  children.add(child)
  child.once('exit', () => children.delete(child))
  let stderr = ''
  let stdout = ''
  child.stderr.on('data', (c) => (stderr += c))
  child.stdout.on('data', (c) => (stdout += c))
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })))
  await waitFor(() => /subscribed to/.test(stderr) || child.exitCode !== null, { timeout: 10_000 })
  assert.match(stderr, /subscribed to/, stderr)
  return { child, exited, stderr: () => stderr, stdout: () => stdout }
}

const uniqueDigits = () => String(process.pid % 10000).padStart(4, '0') + String(Date.now() % 100000).padStart(5, '0')


describe('pier-connector worker', () => {
  it('--echo answers jobs, and SIGTERM drains, prints the final status and exits 0', async () => {
    const worker = await startCliWorker(['--echo', '--subject', 'jobs.cli.echo', '--worker-id', 'cli-1'])
    const reply = await request(nats.nc, 'jobs.cli.echo', { type: 'task_request', id: 'e1', task: 'ping' })
    assert.equal(reply.result, 'ping')
    assert.equal(reply.worker.id, 'cli-1')
    worker.child.kill('SIGTERM')
    assert.deepEqual(await worker.exited, { code: 0, signal: null })
    const status = JSON.parse(worker.stdout().trim().split('\n').pop())
    assert.equal(status.state, 'stopped')
    assert.equal(status.stats.completed, 1)
  })

  it('--exec gives the task on stdin and returns stdout; a failing command is EXECUTION_FAILED', async () => {
    const worker = await startCliWorker([
      '--exec', 'if [ "$PIER_JOB_ID" = fail ]; then echo "bad input" >&2; exit 3; fi; tr a-z A-Z',
      '--subject', 'jobs.cli.exec',
    ])
    const ok = await request(nats.nc, 'jobs.cli.exec', { id: 'x1', task: 'shout this' })
    assert.equal(ok.result, 'SHOUT THIS')
    const failed = await request(nats.nc, 'jobs.cli.exec', { id: 'fail', task: 'x' })
    assert.equal(failed.error.code, 'EXECUTION_FAILED')
    assert.equal(failed.error.message, 'the command exited with code 3: bad input')
    worker.child.kill('SIGINT')
    assert.equal((await worker.exited).code, 0)
  })

  it("--exec runs a stranger's task without the worker's credentials in its environment", async () => {
    const { createUser } = await import('@nats-io/nkeys')
    const seed = new TextDecoder().decode(createUser().getSeed())
    const worker = await startCliWorker(['--exec', 'env | grep -c "^PIER_\\(TOKEN\\|SIGNING_SEED\\|PASSWORD\\|NKEY_SEED\\|USER\\)=" || true', '--subject', 'jobs.cli.env'], {
      ...process.env,
      PIER_SIGNING_SEED: seed,
      PIER_TOKEN: 'not-for-the-task',
    })
    const reply = await request(nats.nc, 'jobs.cli.env', { id: 'e1', task: 'x' })
    assert.equal(reply.result, '0', JSON.stringify(reply))
    worker.child.kill('SIGINT')
    await worker.exited
  })

  it('--exec stops a command whose output no NATS message could hold, instead of keeping it all', async () => {
    const { execHandler, MAX_RESULT_BYTES } = createRequire(import.meta.url)('../cli/exec-runner.js')
    const run = execHandler(`head -c ${MAX_RESULT_BYTES + 1024} /dev/zero; sleep 30`, new Map(), [])
    const started = Date.now()
    await assert.rejects(run({ id: 'big', task: '', timeoutMs: 60_000, meta: {} }), /wrote more than 67108864 bytes/)
    assert.ok(Date.now() - started < 20_000, 'killed at the limit, not at its end')
  })

  it('--exec kills a command that outlives the job deadline', async () => {
    const worker = await startCliWorker(['--exec', 'sleep 30', '--subject', 'jobs.cli.slow', '--job-timeout-ms', '300'])
    const start = Date.now()
    const reply = await request(nats.nc, 'jobs.cli.slow', { id: 's1', task: 'x' })
    assert.equal(reply.error.code, 'TIMEOUT')
    assert.ok(Date.now() - start < 3000)
    worker.child.kill('SIGTERM')
    assert.equal((await worker.exited).code, 0)
  })

  it('--exec kills each job\'s whole process group at its deadline: no command outlives its job', async () => {
    // A unique duration is the marker: `sleep 31.<n>` sleeps 31 s and names only this test's processes.
    const marker = `sleep 31.${uniqueDigits()}`
    const worker = await startCliWorker(['--exec', `${marker}; cat`, '--subject', 'jobs.cli.group'])
    const replies = [1, 2, 3].map((i) => request(nats.nc, 'jobs.cli.group', { id: `g${i}`, task: 'x', timeoutMs: 700 }))
    await waitFor(() => processesRunning(marker).length === 3, { timeout: 3000 })
    for (const reply of await Promise.all(replies)) assert.equal(reply.error.code, 'TIMEOUT')
    await waitFor(() => processesRunning(marker).length === 0, { timeout: 3000 })
    worker.child.kill('SIGTERM')
    assert.equal((await worker.exited).code, 0)
  })

  it('--exec: a command ignoring SIGTERM and a background process are killed too', async () => {
    const digits = uniqueDigits()
    const stubborn = `sleep 32.${digits}`
    const background = `sleep 33.${digits}`
    const worker = await startCliWorker([
      '--exec', `if [ "$PIER_JOB_ID" = bg ]; then (${background} &); echo started; else trap "" TERM; ${stubborn}; cat; fi`,
      '--subject', 'jobs.cli.stubborn',
    ])
    // The command returns while what it started in the background still runs: it ends with the job.
    const bg = await request(nats.nc, 'jobs.cli.stubborn', { id: 'bg', task: 'x' })
    assert.equal(bg.result, 'started')
    await waitFor(() => processesRunning(background).length === 0, { timeout: 3000 })
    // SIGTERM is ignored (and inherited by sleep): SIGKILL follows after a short grace.
    const reply = await request(nats.nc, 'jobs.cli.stubborn', { id: 'st', task: 'x', timeoutMs: 500 })
    assert.equal(reply.error.code, 'TIMEOUT')
    await waitFor(() => processesRunning(stubborn).length === 0, { timeout: 3000 })
    worker.child.kill('SIGTERM')
    assert.equal((await worker.exited).code, 0)
  })

  it('--exec: stopping the worker answers running jobs SHUTTING_DOWN and kills their processes', async () => {
    const marker = `sleep 34.${uniqueDigits()}`
    const worker = await startCliWorker([
      '--exec', `trap "" TERM; ${marker}; cat`, '--subject', 'jobs.cli.shutdown', '--drain-timeout-ms', '200',
    ])
    const replies = ['d1', 'd2'].map((id) => request(nats.nc, 'jobs.cli.shutdown', { id, task: 'x', timeoutMs: 60_000 }))
    await waitFor(() => processesRunning(marker).length === 2, { timeout: 3000 })
    worker.child.kill('SIGTERM')
    for (const reply of await Promise.all(replies)) assert.equal(reply.error.code, 'SHUTTING_DOWN')
    assert.deepEqual(await worker.exited, { code: 0, signal: null })
    await waitFor(() => processesRunning(marker).length === 0, { timeout: 3000 })
  })

  it('--exec: a NUL byte in systemPrompt or sender is a one-line INVALID_REQUEST that echoes nothing', async () => {
    const worker = await startCliWorker(['--exec', 'cat', '--subject', 'jobs.cli.nul'])
    const prompt = await request(nats.nc, 'jobs.cli.nul', { id: 'n1', task: 'x', systemPrompt: 'secret prompt\u0000tail' })
    assert.equal(prompt.id, 'n1')
    assert.deepEqual(prompt.error, {
      code: 'INVALID_REQUEST',
      message: 'systemPrompt contains a NUL byte, which a command environment cannot carry',
    })
    const sender = await request(nats.nc, 'jobs.cli.nul', { id: 'n2', task: 'x', meta: { sender: 'al\u0000ice' } })
    assert.deepEqual(sender.error, {
      code: 'INVALID_REQUEST',
      message: 'sender contains a NUL byte, which a command environment cannot carry',
    })
    const ok = await request(nats.nc, 'jobs.cli.nul', { id: 'n3', task: 'still works' })
    assert.equal(ok.result, 'still works')
    worker.child.kill('SIGTERM')
    assert.equal((await worker.exited).code, 0)
    assert.doesNotMatch(worker.stderr(), /secret prompt|ERR_INVALID_ARG|node:internal/)
  })

  it('refuses to start without a handler choice', async () => {
    await assert.rejects(run(process.execPath, [CLI, 'worker', '--nats-url', nats.server.url]), (e) => {
      assert.equal(e.code, 2)
      assert.match(e.stderr, /exactly one of --echo or --exec/)
      return true
    })
  })

  it('never joins the public marketplace unless told: a worker with no server named refuses, naming the flag', async () => {
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('PIER_')))
    for (const handler of [['--echo'], ['--exec', 'cat']]) {
      await assert.rejects(run(process.execPath, [CLI, 'worker', ...handler], { env }), (e) => {
        assert.equal(e.code, 2)
        assert.match(e.stderr, /only from a server you name: --nats-url nats:\/\/127\.0\.0\.1:4222 .*--nats-url wss:\/\/pier\.gholl\.com\/nexus to answer strangers' jobs/)
        assert.doesNotMatch(e.stderr, /subscribed to|NATS connected|connecting to/, 'refused before connecting')
        return true
      })
    }
  })
})

describe('pier-connector publish and status', () => {
  it('publish prints the reply JSON and exits 0 on task_result', async () => {
    const worker = await startCliWorker(['--echo', '--subject', 'jobs.cli.pub'])
    const { stdout } = await run(process.execPath, [
      CLI, 'publish', 'hello', 'world', '--nats-url', nats.server.url, '--publish-subject', 'jobs.cli.pub',
      '--timeout-ms', '3000', '--meta', '{"price":5}',
    ])
    const reply = JSON.parse(stdout)
    assert.equal(reply.type, 'task_result')
    assert.equal(reply.result, 'hello world')
    worker.child.kill('SIGTERM')
    await worker.exited
  })

  it('publish exits 2 with a clear message when nobody listens', async () => {
    await assert.rejects(
      run(process.execPath, [CLI, 'publish', 'x', '--nats-url', nats.server.url, '--publish-subject', 'jobs.cli.none']),
      (e) => {
        assert.equal(e.code, 2)
        assert.match(e.stderr, /PIER_NO_RESPONDERS/)
        return true
      },
    )
    // The defaults publish to jobs.submit, where the marketplace (not a worker) takes tasks.
    await assert.rejects(run(process.execPath, [CLI, 'publish', 'x', '--nats-url', nats.server.url, '--timeout-ms', '5000']), (e) => {
      assert.equal(e.code, 2)
      assert.match(e.stderr, /^PIER_NO_RESPONDERS: /m)
      assert.match(e.stderr, /publishSubject \(default jobs\.submit\) is where the Pier marketplace takes tasks; workers listen on their subject \(default jobs\.worker/)
      assert.match(e.stderr, /To reach a worker directly, publish to its subject: --publish-subject jobs\.worker/)
      return true
    })
  })

  it('status reports the server and subjects', async () => {
    const { stdout } = await run(process.execPath, [CLI, 'status', '--nats-url', nats.server.url, '--subject', 'jobs.s'])
    const status = JSON.parse(stdout)
    assert.equal(status.state, 'connected')
    assert.equal(status.serverName, 'pier-test')
    assert.equal(status.subject, 'jobs.s')
    assert.equal(typeof status.rttMs, 'number')
  })

  it('keygen makes keys that sign both ways: the job reaches --exec with its key, the reply names the worker', async () => {
    const keygen = async () => JSON.parse((await run(process.execPath, [CLI, 'keygen', '--json'])).stdout)
    const [requester, workerKey] = [await keygen(), await keygen()]
    assert.match(requester.seed, /^SU[A-Z2-7]{56}$/)
    assert.match(requester.publicKey, /^U[A-Z2-7]{55}$/)
    const text = (await run(process.execPath, [CLI, 'keygen'])).stdout
    assert.match(text, /^seed: +SU[A-Z2-7]{56}\npublic key: +U[A-Z2-7]{55}\n$/)
    const worker = await startCliWorker(
      ['--exec', 'printf %s "$PIER_SENDER_KEY"', '--subject', 'jobs.cli.signed', '--sender-trust', 'signed', '--allowed-senders', requester.publicKey],
      { ...process.env, PIER_SIGNING_SEED: workerKey.seed },
    )
    const publish = (seed, extra = []) =>
      run(process.execPath, [CLI, 'publish', 'who', '--nats-url', nats.server.url, '--publish-subject', 'jobs.cli.signed', '--timeout-ms', '3000', ...extra], {
        env: { ...process.env, ...(seed ? { PIER_SIGNING_SEED: seed } : {}) },
      })
    const reply = JSON.parse((await publish(requester.seed, ['--trusted-workers', workerKey.publicKey])).stdout)
    assert.equal(reply.result, requester.publicKey)
    assert.equal(reply.workerKey, workerKey.publicKey)
    await assert.rejects(publish(undefined), (e) => {
      assert.equal(e.code, 1)
      assert.equal(JSON.parse(e.stdout).error.code, 'UNAUTHORIZED')
      return true
    })
    await assert.rejects(publish(requester.seed, ['--trusted-workers', requester.publicKey]), (e) => {
      assert.equal(e.code, 2)
      assert.match(e.stderr, /PIER_UNTRUSTED_WORKER/)
      return true
    })
    assert.ok(!worker.stderr().includes(workerKey.seed), 'the seed never shows in logs')
    worker.child.kill('SIGTERM')
    await worker.exited
  })

  it('identity: every worker and requester signs by default with a key of its own, kept 0600 in --identity-file and rotated on request', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pier-cli-identity-'))
    const [workerFile, requesterFile] = [join(dir, 'worker', 'id.seed'), join(dir, 'requester.seed')]
    const identity = async (file, extra = []) => JSON.parse((await run(process.execPath, [CLI, 'identity', '--identity-file', file, '--json', ...extra])).stdout)
    const made = await identity(workerFile)
    assert.match(made.publicKey, /^U[A-Z2-7]{55}$/)
    assert.equal(made.source, 'file')
    assert.equal(made.created, true)
    assert.equal(statSync(workerFile).mode & 0o777, 0o600)
    assert.equal(statSync(join(dir, 'worker')).mode & 0o777, 0o700)
    const again = await identity(workerFile)
    assert.deepEqual([again.publicKey, again.created], [made.publicKey, false])
    // No signingSeed anywhere: the worker signs its results and the requester its requests.
    const env = { ...process.env }
    delete env.PIER_SIGNING_SEED
    const worker = await startCliWorker(['--exec', 'printf %s "$PIER_SENDER_KEY"', '--subject', 'jobs.cli.identity', '--identity-file', workerFile], env)
    const publish = (extra = []) =>
      run(process.execPath, [CLI, 'publish', 'who', '--nats-url', nats.server.url, '--publish-subject', 'jobs.cli.identity', '--timeout-ms', '3000', '--identity-file', requesterFile, ...extra], { env })
    const reply = JSON.parse((await publish(['--trusted-workers', made.publicKey])).stdout)
    const requester = await identity(requesterFile)
    assert.equal(requester.created, false, 'the requester made its key when it first published')
    assert.equal(reply.result, requester.publicKey, 'the job was signed by the requester')
    assert.equal(reply.workerKey, made.publicKey, 'the result was signed by the worker')
    const text = (await run(process.execPath, [CLI, 'identity', '--identity-file', workerFile])).stdout
    assert.match(text, new RegExp(`^public key: ${made.publicKey}\n`))
    // The seed itself (not any 'SU': a public key or a temp dir name may hold those letters).
    const ownSeed = /^S[A-Z][A-Z2-7]{50,}$/m.exec(readFileSync(workerFile, 'utf8'))?.[0]
    assert.ok(ownSeed && !text.includes(ownSeed), 'the seed is never printed')
    // Rotation: a new key, the old seed kept beside it; the running worker keeps the old key.
    const rotated = await identity(workerFile, ['--rotate'])
    assert.notEqual(rotated.publicKey, made.publicKey)
    assert.equal(rotated.previousPublicKey, made.publicKey)
    assert.equal(rotated.backupFile, `${workerFile}.old`)
    assert.equal(statSync(`${workerFile}.old`).mode & 0o777, 0o600)
    assert.equal((await identity(workerFile)).publicKey, rotated.publicKey)
    assert.equal(JSON.parse((await publish()).stdout).workerKey, made.publicKey)
    worker.child.kill('SIGTERM')
    await worker.exited
    // The login key never signs: a signingSeed equal to nkeySeed is PIER_CONFIG.
    const { seed } = JSON.parse((await run(process.execPath, [CLI, 'keygen', '--json'])).stdout)
    await assert.rejects(run(process.execPath, [CLI, 'identity', '--nkey-seed', seed, '--signing-seed', seed]), (e) => {
      assert.equal(e.code, 2)
      assert.match(e.stderr, /PIER_CONFIG: .*signingSeed is the NATS login key \(nkeySeed\)/)
      assert.ok(!e.stderr.includes(seed))
      return true
    })
    rmSync(dir, { recursive: true, force: true })
  })

  it('rejects unknown flags with usage', async () => {
    await assert.rejects(run(process.execPath, [CLI, 'status', '--bogus']), (e) => {
      assert.equal(e.code, 2)
      assert.match(e.stderr, /Usage:/)
      return true
    })
  })
})
