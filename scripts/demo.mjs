// Demo: nats-server (with websocket) on loopback → CLI worker over ws:// → CLI publish.
import { spawn, execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { fileURLToPath } from 'node:url'
import { startNatsServer } from '../__test__/helpers/nats-server.mjs'

const CLI = fileURLToPath(new URL('../cli/pier-connector.js', import.meta.url))
const run = promisify(execFile)
const say = (text) => process.stdout.write(`\n\x1b[1m${text}\x1b[0m\n`)

const server = await startNatsServer({ websocket: true, name: 'pier-demo' })
say(`nats-server ${server.url} (websocket ${server.wsUrl})`)

// The worker's "agent" is a shell command here: it counts the task's words, and dawdles on
// tasks that say "slow" so the deadline shows.
const AGENT = 't=$(cat); case "$t" in *slow*) sleep 5;; esac; ' +
  'printf "%s words%s" "$(printf %s "$t" | wc -w)" "${PIER_SYSTEM_PROMPT:+ (system prompt: $PIER_SYSTEM_PROMPT)}"'
const worker = spawn(
  process.execPath,
  [CLI, 'worker', '--nats-url', server.wsUrl, '--worker-id', 'demo-worker', '--wallet-address', '0xDEMO',
    '--max-concurrent-jobs', '2', '--exec', AGENT],
  { stdio: ['ignore', 'pipe', 'pipe'] },
)
let workerOut = ''
worker.stdout.on('data', (c) => (workerOut += c))
worker.stderr.on('data', (c) => process.stderr.write(`  worker| ${c}`))
await new Promise((resolve, reject) => {
  worker.stderr.on('data', (c) => /subscribed to/.test(String(c)) && resolve())
  worker.once('exit', (code) => reject(new Error(`worker exited with ${code}`)))
})

const publish = async (args) => {
  const { stdout } = await run(process.execPath, [CLI, 'publish', ...args, '--nats-url', server.url, '--publish-subject', 'jobs.worker'])
    .catch((e) => e)
  return stdout.trim()
}
try {
  for (const [task, extra] of [
    ['Summarize the Pier protocol in one line', []],
    ['Translate hello to French', ['--system-prompt', 'answer in French']],
    ['A task with a price', ['--meta', '{"sender":"demo-user","price":50}']],
    ['A slow task with a 500 ms deadline', ['--timeout-ms', '500']],
  ]) {
    say(`publish: ${task}`)
    console.log(await publish([task, '--timeout-ms', '5000', ...extra]))
  }
  say('status (SIGUSR2 to the worker)')
  worker.kill('SIGUSR2')
  await new Promise((r) => setTimeout(r, 300))
  console.log(workerOut.trim().split('\n').pop())
} finally {
  say('stopping the worker (SIGTERM drains it) and the server')
  worker.kill('SIGTERM')
  await new Promise((r) => worker.once('exit', r))
  console.log(`final status: ${workerOut.trim().split('\n').pop()}`)
  await server.stop()
}
