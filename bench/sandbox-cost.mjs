// What a sandbox of its own costs a job with tools (#33): one real gateway (OpenClaw 2026.9.6),
// real docker and OpenClaw's sandbox image (scripts/setup-docker.sh), the fake model in its
// obedient mode. Two accounts in the one gateway, their jobs sent one at a time and interleaved
// (A/B): `box` offers exec in a docker sandbox of the job's own (created for the job, removed
// when it ends), `plain` offers no tools. For each job: the time from sending it to its answer,
// for box jobs also to its container's creation and to its command running inside (the command
// prints the host clock), and the CPU the whole machine spent meanwhile (/proc/stat: gateway,
// dockerd, containerd, the container, the model). The difference between the two kinds is what
// the sandbox costs. Prints a markdown section for bench/RESULTS.md.
//
//   node bench/sandbox-cost.mjs        (about a minute; PIER_SANDBOX_JOBS=12 for more per kind)
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { startNatsServer } from '../__test__/helpers/nats-server.mjs'
import { startFakeModel } from '../__test__/helpers/fake-model.mjs'
import { createOpenClawHome, packPlugin } from '../__test__/helpers/openclaw.mjs'
import { firstRequest, rawClient, request } from '../__test__/helpers/addon.mjs'
import { docker, dockerUnavailable, sandboxGatewayEnv, watchContainers } from '../__test__/helpers/docker.mjs'

const JOBS = Number(process.env.PIER_SANDBOX_JOBS ?? 8)
const unavailable = dockerUnavailable()
if (unavailable) {
  console.error(`docker cannot run here: ${unavailable} (bash scripts/setup-docker.sh)`)
  process.exit(2)
}

/** Busy and total CPU time of the machine so far, in seconds (all cores, /proc/stat). */
function cpu() {
  const [, ...fields] = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/)
  const ticks = fields.map(Number)
  const idle = ticks[3] + ticks[4] // idle + iowait
  const total = ticks.slice(0, 8).reduce((a, b) => a + b, 0)
  return { busy: (total - idle) / 100, total: total / 100 }
}

/** The first job container (agent pier-jobs) created since `since`. */
const jobContainer = (since) => containers.created().find((e) => e.at >= since && e.labels['openclaw.sessionKey']?.startsWith('agent:pier-jobs:pier:'))

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]
const mean = (values) => values.reduce((a, b) => a + b, 0) / values.length

const containers = await watchContainers()
const nats = await startNatsServer({ name: 'pier-sandbox-bench' })
const nc = await rawClient(nats.url)
const model = await startFakeModel()
const home = await createOpenClawHome({ modelBaseUrl: model.baseUrl, registryUrl: 'http://127.0.0.1:9/', env: sandboxGatewayEnv() })
let gateway
try {
  await home.cli(['plugins', 'install', '--link', packPlugin().dir, '--force', '--accept-capabilities'])
  const config = home.readConfig()
  config.agents.entries = {
    main: { default: true },
    // README "Jobs with tools": the job agent in OpenClaw's sandbox, with limits.
    'pier-jobs': {
      workspace: join(home.dir, 'state', 'pier', 'job-workspace'),
      sandbox: { mode: 'all', scope: 'session', backend: 'docker', workspaceAccess: 'rw', docker: { memory: '256m', memorySwap: '256m', pidsLimit: 64, cpus: 1 } },
    },
  }
  config.channels = {
    pier: {
      natsUrl: nats.url,
      jobTimeoutMs: 60_000,
      accounts: {
        box: { subject: 'bench.box', workerId: 'bench-box', toolsAllow: ['exec'] },
        // Agent main, not sandboxed: no container at all.
        plain: { subject: 'bench.plain', workerId: 'bench-plain', agentId: 'main' },
      },
    },
  }
  home.writeConfig(config)
  gateway = await home.startGateway()
  // Both accounts answer once before anything is measured (the first sandbox of a gateway also
  // loads OpenClaw's sandbox code).
  const job = (kind, id) =>
    kind === 'box'
      ? { type: 'task_request', id, task: `PIEROBEY ${id} PIEREXEC:echo ran=$(date +%s%3N);` }
      : { type: 'task_request', id, task: `PIERQ:${id}` }
  for (const kind of ['box', 'plain']) {
    const reply = await firstRequest(nc, `bench.${kind}`, job(kind, `warm-${kind}`))
    if (reply.type !== 'task_result') throw new Error(`${kind}: ${JSON.stringify(reply).slice(0, 500)}`)
  }

  const rows = { box: [], plain: [] }
  for (let i = 0; i < JOBS; i++) {
    for (const kind of i % 2 ? ['plain', 'box'] : ['box', 'plain']) {
      const id = `${kind}-${i}`
      const before = cpu()
      const sent = Date.now()
      const reply = await request(nc, `bench.${kind}`, job(kind, id), 120_000)
      const answered = Date.now()
      // The container is removed a moment after the answer: its CPU counts too.
      if (kind === 'box') {
        const made = jobContainer(sent)
        const until = Date.now() + 20_000
        while (made && !containers.events.some((e) => e.action === 'destroy' && e.id === made.id) && Date.now() < until) await new Promise((r) => setTimeout(r, 50))
      }
      const after = cpu()
      if (reply.type !== 'task_result') throw new Error(`${id}: ${JSON.stringify(reply).slice(0, 500)}`)
      const ran = Number(/ran=(\d{13})/.exec(reply.result)?.[1])
      const made = kind === 'box' ? jobContainer(sent) : null
      rows[kind].push({
        answerMs: answered - sent,
        createdMs: made ? made.at - sent : null,
        toolMs: ran ? ran - sent : null,
        cpuS: after.busy - before.busy,
      })
    }
  }
  const box = rows.box
  const plain = rows.plain
  const cpuBox = mean(box.map((r) => r.cpuS))
  const cpuPlain = mean(plain.map((r) => r.cpuS))
  const all = new Set((await docker(['ps', '-aq', '--no-trunc'])).split('\n').filter(Boolean))
  const leftover = containers.created().filter((e) => e.labels['openclaw.sessionKey'] && all.has(e.id)).length
  console.log(`## A sandbox of its own per job (bench/sandbox-cost.mjs)

${JOBS} jobs of each kind, one at a time, interleaved, in one gateway on ${(await import('node:os')).cpus().length} cores; docker ${(await docker(['version', '--format', '{{.Server.Version}}'])).trim()}.

| | job with exec in its own sandbox | job without tools | difference |
| --- | --- | --- | --- |
| sent → answered, median | ${median(box.map((r) => r.answerMs))} ms | ${median(plain.map((r) => r.answerMs))} ms | ${median(box.map((r) => r.answerMs)) - median(plain.map((r) => r.answerMs))} ms |
| sent → container created, median | ${Math.round(median(box.map((r) => r.createdMs)))} ms | – | |
| sent → its command runs (first tool call), median | ${median(box.map((r) => r.toolMs))} ms | – | |
| machine CPU per job, mean (until the container is removed) | ${cpuBox.toFixed(2)} s | ${cpuPlain.toFixed(2)} s | ${(cpuBox - cpuPlain).toFixed(2)} s |

Job containers still there after the last answer: ${leftover}.`)
  console.error(JSON.stringify(rows))
} finally {
  await gateway?.stop()
  containers.stop()
  for (const e of containers.created()) await docker(['rm', '-f', e.id]).catch(() => {})
  await nc.close()
  await nats.stop()
  await model.close()
  home.cleanup()
}
