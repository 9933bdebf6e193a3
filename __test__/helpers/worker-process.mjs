// A worker in a process of its own (__test__/fixtures/cluster-worker.mjs), for the cluster
// tests and the scale benchmark: it can be killed with SIGKILL like a crashed gateway.
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { waitFor } from './wait.mjs'

const FIXTURE = fileURLToPath(new URL('../fixtures/cluster-worker.mjs', import.meta.url))

/**
 * @param {object} config the worker's config
 * @param {number} delayMs how long each job takes
 */
export function startWorkerProcess(config, delayMs) {
  const child = spawn(process.execPath, [FIXTURE, JSON.stringify(config), String(delayMs)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  let err = ''
  child.stdout.on('data', (c) => (out += c))
  child.stderr.on('data', (c) => (err += c))
  const exited = new Promise((resolve) => child.once('exit', resolve))
  const starts = () => [...out.matchAll(/^got (\S+) (\d+)$/gm)].map((m) => ({ id: m[1], at: Number(m[2]) }))
  return {
    child,
    out: () => out,
    err: () => err,
    /** Each job's start, in order: `{ id, at }` (Unix ms). */
    starts,
    /** The ids of the jobs it started. */
    got: () => starts().map((s) => s.id),
    ready: waitFor(() => out.includes('ready'), { timeout: 30_000 }),
    async kill() {
      child.kill('SIGKILL')
      await exited
    },
  }
}
