// Progress and cancellation (protocol v1.1) as an outsider's client sees them: nats.js
// (@nats-io/transport-node) asks the CLI `--exec` worker for progress, reads `task_progress`
// (accepted, keep-alives, the command's output as partials) and publishes `task_cancel`.
import { describe, it, after } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect, createInbox, headers as natsHeaders } from '@nats-io/transport-node'
import { startNatsServer } from './helpers/nats-server.mjs'
import { startCliWorker, waitFor, CLI, natsPy } from './conformance/harness.mjs'
import { spawn } from 'node:child_process'
import { createRequire } from 'node:module'
import { createPublishTool } from '../plugin/tool.mjs'
import { pierLogger } from '../plugin/config.mjs'

const { PierClient } = createRequire(import.meta.url)('../index.js')

const cleanups = []
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup()
})

const dir = mkdtempSync(join(tmpdir(), 'pier-progress-'))
cleanups.push(() => rmSync(dir, { recursive: true, force: true }))

const server = await startNatsServer()
cleanups.push(() => server.stop())
const nc = await connect({ servers: server.url })
cleanups.push(() => nc.close())

/** Sends `job` to `subject` asking for progress; returns the answer and every progress message in arrival order. */
function askWithProgress(subject, job, { onProgress = () => {} } = {}) {
  const reply = createInbox()
  const progressTo = createInbox()
  const seen = []
  const answers = nc.subscribe(reply, { max: 1 })
  const progress = nc.subscribe(progressTo)
  ;(async () => {
    for await (const m of progress) {
      const message = m.json()
      seen.push(message)
      onProgress(message)
    }
  })()
  const answer = (async () => {
    for await (const m of answers) return m.json()
  })()
  const headers = natsHeaders()
  headers.set('Pier-Progress-To', progressTo)
  nc.publish(subject, JSON.stringify(job), { reply, headers })
  return {
    seen,
    answer: answer.then(async (a) => {
      // Whatever progress was sent went before the answer on the worker's one connection.
      await nc.flush()
      return a
    }),
    stop: () => progress.unsubscribe(),
  }
}

describe('progress and cancellation through nats.js', () => {
  it("a command's output streams as partials that are its result, after accepted and between keep-alives, seq by one, nothing after the answer", async () => {
    await startCliWorker(server.url, ['--exec', 'for i in 1 2 3 4 5 6; do echo "line $i of the answer"; sleep 0.2; done', '--subject', 'jobs.progress', '--progress-interval-ms', '300'], cleanups)
    const asked = askWithProgress('jobs.progress', { id: 'p1', task: 'stream' })
    const answer = await asked.answer
    assert.equal(answer.type, 'task_result', JSON.stringify(answer))
    const seen = [...asked.seen]
    assert.equal(seen[0].state, 'accepted')
    assert.equal(seen[0].version, '1.1')
    assert.equal(seen[0].intervalMs, 300)
    assert.match(seen[0].cancel.token, /^[A-Za-z0-9_-]{22,}$/)
    seen.forEach((p, n) => assert.equal(p.seq, n, JSON.stringify(seen)))
    const partials = seen.filter((p) => p.state === 'partial')
    assert.ok(partials.length >= 2, `streamed in pieces: ${partials.length}`)
    assert.equal(partials.map((p) => p.text).join(''), answer.result)
    assert.equal(answer.result.split('\n').length, 6)
    const count = asked.seen.length
    await new Promise((r) => setTimeout(r, 700))
    assert.equal(asked.seen.length, count, 'nothing after the answer')
    asked.stop()
  })

  it('a wrong token changes nothing; the right one kills the command and is answered CANCELLED within a second', async () => {
    const pidFile = join(dir, 'pid')
    await startCliWorker(server.url, ['--exec', `echo $$ > ${pidFile}; sleep 30; echo never`, '--subject', 'jobs.cancel'], cleanups)
    let accepted
    const asked = askWithProgress('jobs.cancel', { id: 'c1', task: 'hold', timeoutMs: 60000 }, {
      onProgress: (p) => {
        if (p.state === 'accepted') accepted = p
      },
    })
    const pidWritten = () => {
      try {
        return readFileSync(pidFile, 'utf8').trim()
      } catch {
        return ''
      }
    }
    await waitFor(() => accepted && pidWritten(), { timeout: 10_000 })
    const pid = Number(readFileSync(pidFile, 'utf8').trim())
    const alive = (p) => {
      try {
        process.kill(p, 0)
        return true
      } catch {
        return false
      }
    }
    assert.ok(alive(pid))
    nc.publish(accepted.cancel.subject, JSON.stringify({ version: '1.1', type: 'task_cancel', id: 'c1', token: 'wrong-token-wrong-token-x' }))
    nc.publish(accepted.cancel.subject, JSON.stringify({ version: '1.1', type: 'task_cancel', id: 'other', token: accepted.cancel.token }))
    await nc.flush()
    const early = await Promise.race([asked.answer, new Promise((r) => setTimeout(() => r('none'), 400))])
    assert.equal(early, 'none', 'a wrong cancel is never answered')
    assert.ok(alive(pid), 'and stops nothing')
    const sent = performance.now()
    nc.publish(accepted.cancel.subject, JSON.stringify({ version: '1.1', type: 'task_cancel', id: 'c1', token: accepted.cancel.token }))
    const answer = await asked.answer
    const latency = performance.now() - sent
    assert.equal(answer.error?.code, 'CANCELLED', JSON.stringify(answer))
    assert.ok(latency < 1000, `${latency} ms`)
    await waitFor(() => !alive(pid), { timeout: 3000 })
    asked.stop()
  })

  it('PierClient: onProgress sees the job, and aborting its AbortSignal cancels it (CANCELLED within a second)', async () => {
    await startCliWorker(server.url, ['--exec', 'printf "first part "; sleep 0.6; printf "second part"; sleep 30', '--subject', 'jobs.client'], cleanups)
    const client = new PierClient({ natsUrl: server.url, publishSubject: 'jobs.client', identityFile: join(dir, 'client.seed') })
    cleanups.push(() => client.close())
    const seen = []
    const controller = new AbortController()
    const reply = client.publish('go', { timeoutMs: 60000, signal: controller.signal, onProgress: (p) => seen.push(p) })
    await waitFor(() => seen.some((p) => p.state === 'partial'), { timeout: 10_000 })
    assert.equal(seen[0].state, 'accepted')
    assert.equal(seen[0].type, 'task_progress')
    const aborted = performance.now()
    controller.abort()
    const answer = await reply
    assert.equal(answer.error?.code, 'CANCELLED', JSON.stringify(answer))
    assert.ok(performance.now() - aborted < 1000)
    assert.equal(seen.filter((p) => p.state === 'partial').map((p) => p.text).join(''), 'first part ')
    seen.forEach((p, n) => assert.equal(p.seq, n))
  })

  it('publish --progress prints each task_progress as a JSON line, then the reply; Ctrl-C cancels the job and waits for CANCELLED', async () => {
    await startCliWorker(server.url, ['--exec', 'echo one; sleep 0.3; echo two', '--subject', 'jobs.cli-progress'], cleanups)
    const publish = (task) => {
      const child = spawn(process.execPath, [CLI, 'publish', task, '--progress', '--nats-url', server.url, '--publish-subject', 'jobs.cli-progress', '--identity-file', join(dir, 'cli.seed')], { stdio: ['ignore', 'pipe', 'pipe'] })
      let stdout = ''
      let stderr = ''
      child.stdout.on('data', (c) => (stdout += c))
      child.stderr.on('data', (c) => (stderr += c))
      const exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)))
      cleanups.push(() => child.kill('SIGKILL'))
      return { child, exited, out: () => stdout, err: () => stderr }
    }
    const done = publish('streamed')
    assert.equal(await done.exited, 0, done.err())
    const lines = done.out().trim().split('\n').map((l) => JSON.parse(l))
    const reply = lines.at(-1)
    assert.equal(reply.type, 'task_result')
    assert.equal(reply.result, 'one\ntwo')
    const progress = lines.slice(0, -1)
    assert.equal(progress[0].state, 'accepted')
    assert.equal(progress.filter((p) => p.state === 'partial').map((p) => p.text).join(''), reply.result)
    // Ctrl-C once the job runs: the cancel goes out and the CANCELLED answer is printed.
    await startCliWorker(server.url, ['--exec', 'sleep 30', '--subject', 'jobs.cli-cancel'], cleanups)
    const child = spawn(process.execPath, [CLI, 'publish', 'long', '--progress', '--timeout-ms', '60000', '--nats-url', server.url, '--publish-subject', 'jobs.cli-cancel', '--identity-file', join(dir, 'cli.seed')], { stdio: ['ignore', 'pipe', 'pipe'] })
    cleanups.push(() => child.kill('SIGKILL'))
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (c) => (stdout += c))
    child.stderr.on('data', (c) => (stderr += c))
    const exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)))
    await waitFor(() => stdout.includes('"accepted"'), { timeout: 10_000 })
    child.kill('SIGINT')
    assert.equal(await exited, 1, stderr)
    const answer = JSON.parse(stdout.trim().split('\n').at(-1))
    assert.equal(answer.error?.code, 'CANCELLED', stdout)
    assert.match(stderr, /cancelling the job/)
  })

  it('pier_publish asks for progress: partial text reaches onUpdate, the host abort cancels the job', async () => {
    await startCliWorker(server.url, ['--exec', 'printf "half"; sleep 30', '--subject', 'jobs.tool'], cleanups)
    const cfg = { channels: { pier: { natsUrl: server.url, publishSubject: 'jobs.tool', identityFile: join(dir, 'tool.seed') } } }
    const api = { config: cfg, runtime: { config: { current: () => cfg } } }
    const tool = createPublishTool(api, pierLogger())
    cleanups.push(() => tool.close())
    const updates = []
    const controller = new AbortController()
    const result = tool.execute('t1', { task: 'go', timeoutMs: 60000 }, controller.signal, (u) => updates.push(u))
    await waitFor(() => updates.length > 0, { timeout: 10_000 })
    assert.equal(updates[0].content[0].text, 'half')
    controller.abort()
    const { details } = await result
    assert.equal(details.error?.code, 'CANCELLED', JSON.stringify(details))
  })

  it('nats-py: progress with its keep-alives and partials, a v1.0 request gets one message, a wrong cancel changes nothing, the right one CANCELLED', async () => {
    await startCliWorker(server.url, ['--exec', 'printf "py one "; sleep 0.7; printf "py two"', '--subject', 'jobs.py', '--progress-interval-ms', '200'], cleanups)
    const streamed = await natsPy(['progress', server.url, 'jobs.py', 'go'])
    assert.equal(streamed.reply.result, 'py one py two', JSON.stringify(streamed))
    assert.equal(streamed.progress[0].state, 'accepted')
    streamed.progress.forEach((p, n) => assert.equal(p.seq, n))
    assert.ok(streamed.progress.some((p) => p.state === 'working'), 'a keep-alive during the 0.7 s of silence')
    assert.equal(streamed.progress.filter((p) => p.state === 'partial').map((p) => p.text).join(''), streamed.reply.result)
    const plain = await natsPy(['request', server.url, 'jobs.py', 'go'])
    assert.equal(plain.reply.result, 'py one py two', 'a v1.0 requester gets its one answer')
    await startCliWorker(server.url, ['--exec', 'sleep 30', '--subject', 'jobs.py-cancel'], cleanups)
    const cancelled = await natsPy(['progress', server.url, 'jobs.py-cancel', 'go', 'cancel'])
    assert.equal(cancelled.answered_before_right_cancel, false, 'the wrong token changed nothing')
    assert.equal(cancelled.reply.error?.code, 'CANCELLED', JSON.stringify(cancelled.reply))
    assert.ok(cancelled.cancel_ms < 1000, `${cancelled.cancel_ms} ms`)
  })
})
