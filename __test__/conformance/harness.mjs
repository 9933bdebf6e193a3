// What the conformance tests drive the worker with: the CLI worker as a separate process, a raw
// NATS protocol client on a plain TCP socket (node:net), and nats-py through a Python script.
// Nothing here uses the addon's own client code.
import { spawn, execFile } from 'node:child_process'
import { connect as tcpConnect } from 'node:net'
import { readdirSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

export const CLI = fileURLToPath(new URL('../../cli/pier-connector.js', import.meta.url))
const PYTHON_CHECK = fileURLToPath(new URL('./nats_py_check.py', import.meta.url))

import { sleep, waitFor } from '../helpers/wait.mjs'

export { sleep, waitFor }

/**
 * Starts `pier-connector worker ...` (flags as given; no --nats-url is added). Resolves at once;
 * `subscribed()` waits for the worker's "subscribed to" log line. `cleanups` gets a SIGKILL.
 */
export function spawnCliWorker(args, cleanups) {
  const child = spawn(process.execPath, [CLI, 'worker', ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stderr = ''
  let stdout = ''
  child.stderr.on('data', (c) => (stderr += c))
  child.stdout.on('data', (c) => (stdout += c))
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })))
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL')
      await exited
    }
  })
  const worker = {
    child,
    exited,
    stderr: () => stderr,
    stdout: () => stdout,
    async subscribed(timeout = 10_000) {
      await waitFor(() => /subscribed to/.test(stderr) || child.exitCode !== null, { timeout })
      if (!/subscribed to/.test(stderr)) throw new Error(`the CLI worker did not subscribe:\n${stderr}`)
      return worker
    },
    /** The worker's status, as the CLI prints it on SIGUSR2 (one JSON line on stdout). */
    async status() {
      const lines = stdout.split('\n').filter(Boolean).length
      child.kill('SIGUSR2')
      await waitFor(() => stdout.split('\n').filter(Boolean).length > lines, { timeout: 3000 })
      return JSON.parse(stdout.trim().split('\n').pop())
    },
    /** SIGTERM, then the exit and the final status line. */
    async stop() {
      child.kill('SIGTERM')
      const exit = await exited
      const last = stdout.trim().split('\n').pop()
      return { ...exit, status: last ? JSON.parse(last) : undefined }
    },
  }
  return worker
}

/** Starts a CLI worker on `url` and waits until it has subscribed. */
export function startCliWorker(url, args, cleanups) {
  return spawnCliWorker(['--nats-url', url, ...args], cleanups).subscribed()
}

/** Runs `pier-connector <args>`; resolves to { code, stdout, stderr } whatever the exit code. */
export function runCli(args, timeout = 20_000) {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout }, (error, stdout, stderr) =>
      resolve({ code: error ? (error.code ?? error.signal) : 0, stdout, stderr }),
    )
  })
}

/** Runs the nats-py check script; resolves to its JSON output. */
export function natsPy(args, timeout = 20_000) {
  return new Promise((resolve, reject) => {
    execFile('python3', [PYTHON_CHECK, ...args], { timeout }, (error, stdout, stderr) => {
      if (error) return reject(new Error(`nats-py check failed (${error.code ?? error.signal}): ${stderr || stdout}`))
      try {
        resolve(JSON.parse(stdout))
      } catch {
        reject(new Error(`nats-py check printed no JSON: ${stdout}\n${stderr}`))
      }
    })
  })
}

/** Pids of the processes whose command line is exactly `command` (from /proc; Linux). */
export function processesRunning(command) {
  const found = []
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ') === command) found.push(pid)
    } catch {
      // the process ended while we looked
    }
  }
  return found
}

const CRLF = Buffer.from('\r\n')

/**
 * A NATS client written from the protocol text: CONNECT with headers, SUB, PUB, HPUB, PING/PONG,
 * and MSG/HMSG parsed from the byte stream. `messages` receives { subject, sid, reply, headers,
 * payload } (headers and payload as Buffers).
 */
export async function rawNats(port, { name = 'raw-conformance', connect = {} } = {}) {
  const socket = tcpConnect(port, '127.0.0.1')
  socket.setNoDelay(true)
  let buffer = Buffer.alloc(0)
  let info
  const subscriptions = new Map()
  const pongs = []
  const errors = []
  let gotInfo
  const infoReceived = new Promise((resolve, reject) => {
    gotInfo = resolve
    socket.once('error', reject)
  })

  function parse() {
    for (;;) {
      const end = buffer.indexOf(CRLF)
      if (end < 0) return
      const line = buffer.subarray(0, end).toString('latin1')
      const [op, ...args] = line.split(' ')
      if (op === 'MSG' || op === 'HMSG') {
        const total = Number(args.at(-1))
        const headerLength = op === 'HMSG' ? Number(args.at(-2)) : 0
        if (buffer.length < end + 2 + total + 2) return // wait for the rest
        const body = buffer.subarray(end + 2, end + 2 + total)
        const [subject, sid] = args
        const reply = args.length === (op === 'HMSG' ? 5 : 4) ? args[2] : undefined
        buffer = buffer.subarray(end + 2 + total + 2)
        subscriptions.get(sid)?.({
          subject,
          sid,
          reply,
          headers: body.subarray(0, headerLength),
          payload: body.subarray(headerLength),
        })
        continue
      }
      buffer = buffer.subarray(end + 2)
      if (op === 'INFO') {
        info = JSON.parse(line.slice(5))
        gotInfo(info)
      } else if (op === 'PING') {
        socket.write('PONG\r\n')
      } else if (op === 'PONG') {
        pongs.shift()?.()
      } else if (op === '-ERR') {
        errors.push(line)
      }
    }
  }
  socket.on('data', (chunk) => {
    buffer = buffer.length ? Buffer.concat([buffer, chunk]) : chunk
    parse()
  })
  await infoReceived
  const options = { verbose: false, pedantic: false, lang: 'raw', version: '0', name, protocol: 1, headers: true, no_responders: true, ...connect }
  socket.write(`CONNECT ${JSON.stringify(options)}\r\n`)

  let nextSid = 1
  const client = {
    info: () => info,
    errors,
    /** Writes bytes as they are. */
    write: (bytes) => new Promise((resolve) => socket.write(bytes, resolve)),
    /** PING, resolved at its PONG: everything sent before has been processed by the server. */
    flush() {
      return new Promise((resolve) => {
        pongs.push(resolve)
        socket.write('PING\r\n')
      })
    },
    subscribe(subject, callback) {
      const sid = String(nextSid++)
      subscriptions.set(sid, callback)
      socket.write(`SUB ${subject} ${sid}\r\n`)
      return sid
    },
    pubFrame(subject, reply, payload) {
      const body = Buffer.from(payload)
      return Buffer.concat([Buffer.from(`PUB ${subject}${reply ? ` ${reply}` : ''} ${body.length}\r\n`), body, CRLF])
    },
    hpubFrame(subject, reply, headerBlock, payload) {
      const header = Buffer.from(headerBlock)
      const body = Buffer.from(payload)
      return Buffer.concat([
        Buffer.from(`HPUB ${subject}${reply ? ` ${reply}` : ''} ${header.length} ${header.length + body.length}\r\n`),
        header,
        body,
        CRLF,
      ])
    },
    publish(subject, reply, payload) {
      return client.write(client.pubFrame(subject, reply, payload))
    },
    /** Sends one request and resolves to the parsed JSON reply (or rejects after `timeout`). */
    async request(subject, payload, { timeout = 5000, headers } = {}) {
      const inbox = `_RAW.${Math.random().toString(36).slice(2)}`
      const reply = new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no reply on ${subject} within ${timeout} ms`)), timeout)
        const sid = client.subscribe(inbox, (m) => {
          clearTimeout(timer)
          subscriptions.delete(sid)
          socket.write(`UNSUB ${sid}\r\n`)
          resolve(m)
        })
      })
      await client.write(headers ? client.hpubFrame(subject, inbox, headers, payload) : client.pubFrame(subject, inbox, payload))
      const m = await reply
      if (m.payload.length === 0 && /^NATS\/1\.0 503/.test(m.headers.toString('latin1'))) {
        throw new Error(`no responders on ${subject}`)
      }
      return JSON.parse(m.payload.toString('utf8'))
    },
    close: () =>
      new Promise((resolve) => {
        if (socket.destroyed) return resolve()
        socket.once('close', resolve)
        socket.end()
      }),
  }
  await client.flush()
  return client
}
