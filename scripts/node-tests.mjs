#!/usr/bin/env node
// Runs the node test files in two lanes, one file at a time each, so the suite takes the time of
// its longer half instead of its sum. The real-gateway files (__test__/e2e/) spend their time
// starting and driving OpenClaw (CPU); the others mostly wait on nats-server, worker processes
// and timers. One lane starts on the gateway files, the other on the rest; a lane that runs out
// takes the gateway files left, the longest first, so the two end close together. Each file's
// report is printed when it ends; the last line sums them all.
//
//   node scripts/node-tests.mjs [file ...]     (default: every __test__/**/*.test.mjs)
import { spawn } from 'node:child_process'
import { mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { packPlugin } from '../__test__/helpers/openclaw.mjs'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const TESTS = join(ROOT, '__test__')

const testFiles = (dir) =>
  readdirSync(dir)
    .filter((f) => f.endsWith('.test.mjs'))
    .sort()
    .map((f) => join(dir, f))

// Seconds each real-gateway file took in a full run on 2 cores (fresh machine, 2026-12-08): the
// longest go first, each lane taking the longest one left when it is free, so the lanes end
// close together (in name order the suite ended ~70 s later). A file not listed counts as 60 s.
const GATEWAY_SECONDS = { 'reload.test.mjs': 215, 'openclaw.test.mjs': 210, 'channel.test.mjs': 190, 'sandbox.test.mjs': 140, 'status.test.mjs': 95, 'economics.test.mjs': 90, 'wizard.test.mjs': 70, 'isolation.test.mjs': 60 }
const weight = (file) => GATEWAY_SECONDS[file.split('/').pop()] ?? 60
const gateway = testFiles(join(TESTS, 'e2e')).sort((a, b) => weight(b) - weight(a))
const others = testFiles(TESTS)
const chosen = process.argv.slice(2)
const pick = (files) => (chosen.length ? files.filter((f) => chosen.some((c) => f.endsWith(c))) : files)
const queue = { gateway: pick(gateway), others: pick(others) }
// Workers and clients made without an identityFile keep their key under XDG_CONFIG_HOME
// (~/.config by default): the tests' keys go to a directory of this run's own.
const configHome = mkdtempSync(join(tmpdir(), 'pier-tests-config-'))
process.once('exit', () => rmSync(configHome, { recursive: true, force: true }))
// The plugin packed once for every real-gateway file (helpers/openclaw.mjs packPlugin): an npm
// pack costs ~3 CPU-seconds, and the files only read it.
const packed = {}
if (queue.gateway.length) {
  const pack = mkdtempSync(join(tmpdir(), 'pier-tests-pack-'))
  process.once('exit', () => rmSync(pack, { recursive: true, force: true }))
  packPlugin(pack)
  packed.PIER_TEST_PACK = pack
}

function runFile(file) {
  const started = Date.now()
  return new Promise((resolve) => {
    // The cap only catches a hang. A real-gateway file runs one gateway and a dozen CLI commands
    // (6-20 s each on 2 busy cores): channel.test.mjs takes ~280 s there, too close to 300.
    const cap = file.includes('/e2e/') ? 480_000 : 300_000
    const child = spawn(process.execPath, ['--test', '--test-reporter=tap', `--test-timeout=${cap}`, file], {
      cwd: ROOT,
      env: { ...process.env, XDG_CONFIG_HOME: configHome, ...packed },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    child.stdout.on('data', (c) => (out += c))
    child.stderr.on('data', (c) => (out += c))
    child.once('exit', (code, signal) => {
      const count = (key) => Number(new RegExp(`^# ${key} (\\d+)$`, 'm').exec(out)?.[1] ?? 0)
      const seconds = (Date.now() - started) / 1000
      // A skipped test is no pass: counted apart, with the reason it gave (`# SKIP <reason>`).
      const skipReasons = [...new Set([...out.matchAll(/^\s*ok \d+ - .* # SKIP (.+)$/gm)].map((m) => m[1].trim()))]
      resolve({ file, out, code, signal, pass: count('pass'), fail: count('fail'), skipped: count('skipped'), skipReasons, seconds })
    })
  })
}

const results = []
/** Runs files one at a time, each the first of `queues` that has one left, until none has. */
async function lane(...queues) {
  for (;;) {
    const file = queues.find((q) => q.length)?.shift()
    if (!file) return
    const r = await runFile(file)
    results.push(r)
    process.stdout.write(`${r.out}\n`)
    const skipped = r.skipped ? `, ${r.skipped} skipped (${r.skipReasons.join('; ')})` : ''
    console.log(`== ${relative(ROOT, file)}: ${r.pass} passed, ${r.fail} failed${skipped} in ${r.seconds.toFixed(1)} s${r.code ? ` (exit ${r.code ?? r.signal})` : ''}`)
  }
}

const started = Date.now()
// Two lanes: two gateway files at once already keep both cores busy. A third lane for the other
// files ended no sooner (651 s against 653 s in full runs on 2 cores): the gateway files took
// that much longer beside it.
await Promise.all([lane(queue.gateway), lane(queue.others, queue.gateway)])
const failedFiles = results.filter((r) => r.code !== 0 || r.fail > 0)
console.log(`\n== node tests in ${((Date.now() - started) / 1000).toFixed(0)} s, by file:`)
for (const r of [...results].sort((a, b) => b.seconds - a.seconds)) {
  console.log(`   ${r.seconds.toFixed(1).padStart(6)} s  ${relative(ROOT, r.file)}${r.code !== 0 || r.fail ? '  FAILED' : ''}`)
}
const sum = (key) => results.reduce((n, r) => n + r[key], 0)
for (const r of results.filter((f) => f.skipped)) console.log(`   skipped: ${r.skipped} in ${relative(ROOT, r.file)}: ${r.skipReasons.join('; ')}`)
console.log(`node: ${sum('pass')} passed, ${sum('fail') + failedFiles.filter((r) => r.fail === 0).length} failed${sum('skipped') ? `, ${sum('skipped')} skipped` : ''}`)
process.exit(failedFiles.length ? 1 : 0)
