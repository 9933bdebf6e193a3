// OpenClaw loads a plugin's addon again, from a new path, on every hot reload and in-process
// gateway restart, and never unloads the old copy (napi-rs links it NODELETE). An addon with
// initial-exec thread-locals (STATIC_TLS; mimalloc's default) takes glibc's small static TLS
// surplus each time and the next load fails: "cannot allocate memory in static TLS block".
// Here one process loads 20 copies, and each copy runs a worker that answers a job.
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

it('the addon loads 20 times in one process, from 20 paths, and every copy runs a worker', () => {
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
        const nc = await connect({ servers: process.env.URL })
        const copies = JSON.parse(process.env.COPIES)
        for (const [i, path] of copies.entries()) {
          const addon = { exports: {} }
          process.dlopen(addon, path)
          const worker = addon.exports.PierWorker.echo({ natsUrl: process.env.URL, subject: 'reload.' + i }, { logger: () => {} })
          await worker.start()
          const reply = JSON.parse(new TextDecoder().decode((await nc.request('reload.' + i, JSON.stringify({ id: 'r' + i, task: 'copy ' + i }), { timeout: 5000 })).data))
          if (reply.result !== 'copy ' + i) throw new Error('copy ' + i + ' answered ' + JSON.stringify(reply))
          await worker.stop()
        }
        await nc.close()
        console.log('loaded ' + copies.length)
      })().catch((e) => { console.error(e.message); process.exit(1) })`
    const run = spawnSync(process.execPath, ['-e', script], {
      encoding: 'utf8',
      env: { ...process.env, URL: nats.server.url, COPIES: JSON.stringify(copies) },
      timeout: 120_000,
    })
    assert.equal(run.status, 0, `${run.stdout}\n${run.stderr}`)
    assert.match(run.stdout, /loaded 20/)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})
