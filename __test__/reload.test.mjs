// OpenClaw loads a plugin's addon again, from a new path, on every hot reload and in-process
// gateway restart, and never unloads the old copy (napi-rs links it NODELETE). An addon with
// initial-exec thread-locals (STATIC_TLS; mimalloc's default) takes glibc's small static TLS
// surplus each time and the next load fails: "cannot allocate memory in static TLS block".
// Here one process loads 20 copies, and each copy runs a worker that answers a job; once it
// stops, releaseRuntime() ends that copy's runtime threads, so the process's thread count stays
// where one copy puts it (without it, every copy left its runtime's threads behind).
import { it } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { copyFileSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { useNats } from './helpers/addon.mjs'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const ADDON = readdirSync(ROOT).find((f) => /^pier-connector\..*\.node$/.test(f))
const nats = useNats()

it('the addon loads 20 times in one process, from 20 paths, every copy runs a worker, and a retired copy leaves no thread', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pier-reload-'))
  try {
    const copies = Array.from({ length: 20 }, (_, i) => {
      const path = join(dir, `copy-${i}.node`)
      copyFileSync(join(ROOT, ADDON), path)
      return path
    })
    // A child process of its own: each copy stays mapped for the life of the process.
    const script = `
      const { connect } = require(${JSON.stringify(join(ROOT, 'node_modules/@nats-io/transport-node'))})
      ;(async () => {
        const threads = () => require('node:fs').readdirSync('/proc/self/task').length
        const nc = await connect({ servers: process.env.URL })
        const copies = JSON.parse(process.env.COPIES)
        const counts = []
        for (const [i, path] of copies.entries()) {
          const addon = { exports: {} }
          process.dlopen(addon, path)
          const worker = addon.exports.PierWorker.echo({ natsUrl: process.env.URL, subject: 'reload.' + i }, { logger: () => {} })
          const ask = async (n) => {
            const reply = JSON.parse(new TextDecoder().decode((await nc.request('reload.' + i, JSON.stringify({ id: 'r' + i + '-' + n, task: 'copy ' + i }), { timeout: 5000 })).data))
            if (reply.result !== 'copy ' + i) throw new Error('copy ' + i + ' answered ' + JSON.stringify(reply))
          }
          await worker.start()
          await ask(1)
          if (addon.exports.releaseRuntime() !== false) throw new Error('released the runtime of a running worker')
          await worker.stop()
          if (addon.exports.releaseRuntime() !== true) throw new Error('copy ' + i + ' kept its runtime')
          if (i === 0) {
            // A released copy starts its runtime again when it is used again.
            await worker.start()
            await ask(2)
            await worker.stop()
            addon.exports.releaseRuntime()
          }
          counts.push(threads())
        }
        await nc.close()
        console.log('threads ' + counts.join(' '))
        console.log('loaded ' + copies.length)
      })().catch((e) => { console.error(e.message); process.exit(1) })`
    const run = spawnSync(process.execPath, ['-e', script], {
      encoding: 'utf8',
      env: { ...process.env, URL: nats.server.url, COPIES: JSON.stringify(copies) },
      timeout: 120_000,
    })
    assert.equal(run.status, 0, `${run.stdout}\n${run.stderr}`)
    assert.match(run.stdout, /loaded 20/)
    const counts = run.stdout.match(/threads (.*)/)[1].split(' ').map(Number)
    t.diagnostic(`threads after each retired copy: ${counts.join(' ')}`)
    // Node's own threads plus at most a few still winding down; 20 live runtimes were ~40 more.
    assert.ok(Math.max(...counts) - counts[0] <= 3, counts.join(' '))
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})
