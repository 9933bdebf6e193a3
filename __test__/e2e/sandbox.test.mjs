// End to end: jobs that do real work, in OpenClaw's docker sandbox. One real gateway (Node 24,
// openclaw@2026.9.6), a real nats-server, real docker (scripts/setup-docker.sh: dockerd and
// OpenClaw's default sandbox image) and the fake model in its obedient mode, which runs the
// `exec` a task asks for and then answers with everything it was sent, the command's output
// included. The job agent is set up as the README says (sandbox mode "all", scope "session",
// backend "docker", workspaceAccess "rw", and the memory, swap, process and CPU limits the plugin
// requires), and the account offers exec, read and write. `openclaw doctor` and the security
// audit, run on the same home, check docker, the image and the job agents' sandboxes.
//
// Where docker cannot run, the tests are reported skipped with the reason (never passed);
// PIER_REQUIRE_DOCKER=1 makes that a failure. PIER_E2E_KEEP=1 leaves the containers for a look.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { hostname } from 'node:os'
import { startNatsServer } from '../helpers/nats-server.mjs'
import { startFakeModel } from '../helpers/fake-model.mjs'
import { E2E_CACHE, OPENCLAW, createOpenClawHome, packPlugin } from '../helpers/openclaw.mjs'
import { askWithProgress, firstRequest, rawClient, request, waitFor } from '../helpers/addon.mjs'
import { SANDBOX_IMAGE, bridgeGateway, docker, dockerUnavailable, sandboxGatewayEnv, watchContainers } from '../helpers/docker.mjs'

const unavailable = dockerUnavailable()
const skip = unavailable && process.env.PIER_REQUIRE_DOCKER !== '1' ? `docker cannot run here: ${unavailable}` : false

let nats, nc, model, home, gateway, containers, listener, listenerHits, bridge, pluginDir

/** The job agent's limits (OpenClaw's sandbox.docker keys) and the job workspaces' (jobDiskMb). */
const LIMITS = { memory: '256m', memorySwap: '256m', pidsLimit: 64, cpus: 1 }
const DISK_MB = 64
const MiB = 1024 * 1024

/** A container's cgroup figure (v1 or v2 layout), or null when it is gone. */
function cgroupValue(id, v1, v2) {
  for (const path of [`/sys/fs/cgroup/${v1}/docker/${id}/${v2 ?? v1}`, `/sys/fs/cgroup/system.slice/docker-${id}.scope/${v2}`]) {
    try {
      return Number(readFileSync(path, 'utf8').trim())
    } catch {}
  }
  return null
}

/** Bytes allocated under `dir` (what du counts), 0 once it is gone. */
function allocated(dir) {
  let total = 0
  let entries = []
  try {
    entries = readdirSync(dir, { withFileTypes: true })
  } catch {
    return 0
  }
  for (const e of entries) {
    const path = join(dir, e.name)
    try {
      total += e.isDirectory() ? allocated(path) : statSync(path).blocks * 512
    } catch {}
  }
  return total
}

/** The accounts' status rows, once every account has one. */
async function pierAccounts(ids) {
  let last
  return waitFor(
    async () => {
      try {
        last = (await home.call('channels.status', {})).channelAccounts?.pier
      } catch {
        return null
      }
      return ids.every((id) => last?.find((a) => a.accountId === id && (a.connected || a.lifecycle === 'blocked'))) ? last : null
    },
    { timeout: 120_000, interval: 1000 },
  ).catch((error) => {
    throw new Error(`${error.message}: ${JSON.stringify(last?.map((a) => [a.accountId, a.lifecycle, a.connected, a.lastError]))}\n${gateway.log().slice(-4000)}`)
  })
}

/** `openclaw doctor --lint --json` (read-only) in this file's home: its Pier findings, `{ id, message }`. */
async function doctor() {
  const { stdout } = await promisify(execFile)(OPENCLAW, ['doctor', '--lint', '--json'], { env: home.env, timeout: 180_000, maxBuffer: 64 * 1024 * 1024 }).catch((error) => {
    // Exit 1: findings at the threshold; the report is on stdout all the same.
    if (!error.stdout) throw error
    return error
  })
  return JSON.parse(stdout).findings.filter((f) => f.requirement?.startsWith('channels.pier.')).map((f) => ({ id: f.requirement.slice('channels.pier.'.length), message: f.message }))
}

/** What the obedient model was sent in a job's last request: the tools offered and the exec output. */
function obeyed(reply) {
  assert.equal(reply.type, 'task_result', JSON.stringify(reply).slice(0, 3000))
  assert.match(reply.result, /^obeyed: /)
  const { tools, messages } = JSON.parse(reply.result.slice('obeyed: '.length))
  const text = (m) => (typeof m.content === 'string' ? m.content : JSON.stringify(m.content ?? ''))
  const output = messages.filter((m) => m.role === 'tool').map(text).join('\n')
  return { tools, output }
}

/** `key=value` pairs a probe command printed. */
const field = (output, key) => new RegExp(`\\b${key}=(\\S+)`).exec(output)?.[1]

const stateDir = () => join(home.dir, 'state')
/** What a job leaves on disk while it runs: its workspace, and OpenClaw's skills copy for its session. */
const leftOnDisk = () =>
  [join(stateDir(), 'pier', 'jobs'), join(stateDir(), 'sandbox', 'skills-workspaces')].flatMap((dir) => (existsSync(dir) ? readdirSync(dir).map((f) => join(dir, f)) : []))

/** The job containers (agent pier-jobs) made since the `from`-th container creation of this file. */
const jobContainers = (from = 0) => containers.created().slice(from).filter((e) => e.labels['openclaw.sessionKey']?.startsWith('agent:pier-jobs:pier:'))

/** Containers of `made` that docker still has (`docker ps -a`, the truth, not the event stream). */
async function stillThere(made) {
  const ids = new Set((await docker(['ps', '-aq', '--no-trunc'])).split('\n').filter(Boolean))
  return made.filter((c) => ids.has(c.id))
}

/** Waits until every job container made since `from` is gone and no job file is left; returns them. */
async function sandboxesGone(from, { timeout = 30_000 } = {}) {
  let last
  return waitFor(
    async () => {
      const made = jobContainers(from)
      last = { made: made.map((c) => c.name), left: await stillThere(made), files: leftOnDisk() }
      return made.length && !last.left.length && !last.files.length ? made : null
    },
    { timeout, interval: 250 },
  ).catch((error) => {
    throw new Error(`${error.message}: ${JSON.stringify(last)}`)
  })
}

/** Resolves once a job container made since `from` runs (its exec has started or is about to). */
const jobContainerStarted = (from) =>
  waitFor(() => containers.events.find((e) => e.action === 'start' && jobContainers(from).some((c) => c.id === e.id)), { timeout: 60_000, interval: 100 })

/** The pids of a process and all its descendants (from /proc), deepest first. */
function processTree(pid) {
  const children = new Map()
  for (const entry of readdirSync('/proc').filter((f) => /^\d+$/.test(f))) {
    try {
      const ppid = Number(readFileSync(`/proc/${entry}/stat`, 'utf8').replace(/^.*\) /s, '').split(' ')[1])
      children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)])
    } catch {}
  }
  const out = []
  const visit = (p) => {
    for (const c of children.get(p) ?? []) visit(c)
    out.push(p)
  }
  visit(pid)
  return out
}

// Each test is skipped on its own (a skipped suite would count no test at all), with the reason.
describe('jobs with tools run in a throwaway docker sandbox', () => {
  before(async () => {
    if (skip) return
    if (unavailable) throw new Error(`PIER_REQUIRE_DOCKER=1 and docker cannot run here: ${unavailable}`)
    containers = await watchContainers()
    // A listener where a container with network would reach this host (docker's bridge), so the
    // job's network probe could succeed, and its failure means something.
    bridge = await bridgeGateway()
    listenerHits = 0
    listener = createServer((req, res) => {
      listenerHits++
      res.end('net-reached')
    })
    await new Promise((resolve) => listener.listen(0, bridge, resolve))
    nats = await startNatsServer({ name: 'pier-sandbox-e2e' })
    nc = await rawClient(nats.url)
    model = await startFakeModel()
    home = await createOpenClawHome({ modelBaseUrl: model.baseUrl, registryUrl: 'http://127.0.0.1:9/', env: sandboxGatewayEnv() })
    pluginDir = packPlugin().dir
    await home.cli(['plugins', 'install', '--link', pluginDir, '--force', '--accept-capabilities'])
    const config = home.readConfig()
    const jobWorkspace = join(home.dir, 'state', 'pier', 'job-workspace')
    config.agents.entries = {
      main: { default: true },
      // The README's setup: the job agent in OpenClaw's sandbox, its tool list as OpenClaw makes it.
      'pier-jobs': { workspace: jobWorkspace, sandbox: { mode: 'all', scope: 'session', backend: 'docker', workspaceAccess: 'rw', docker: LIMITS } },
      // The same without limits: a stranger's job could take the host's memory, processes, cores.
      'pier-bare': { workspace: jobWorkspace, sandbox: { mode: 'all', scope: 'session', backend: 'docker', workspaceAccess: 'rw' } },
      // One container for all of an agent's sessions: jobs would share it.
      'pier-shared': { workspace: jobWorkspace, sandbox: { mode: 'all', scope: 'agent', backend: 'docker', workspaceAccess: 'rw' } },
      // OpenClaw's own copy of the workspace per session (its default): outlives the job.
      'pier-copy': { workspace: jobWorkspace, sandbox: { mode: 'all', scope: 'session', backend: 'docker' } },
    }
    config.channels = {
      pier: {
        natsUrl: nats.url,
        jobTimeoutMs: 90_000,
        accounts: {
          // A small disk limit for its job workspaces (the default is 1024 MiB): the disk filler's.
          box: { subject: 'sb.box', workerId: 'sb-box', toolsAllow: ['exec', 'read', 'write'], drainTimeoutMs: 3000, jobDiskMb: DISK_MB },
          // ls moves into the sandbox, but OpenClaw does not count it as confined.
          ls: { subject: 'sb.ls', workerId: 'sb-ls', toolsAllow: ['exec', 'ls'] },
          shared: { subject: 'sb.shared', workerId: 'sb-shared', agentId: 'pier-shared', toolsAllow: ['exec'] },
          copy: { subject: 'sb.copy', workerId: 'sb-copy', agentId: 'pier-copy', toolsAllow: ['exec'] },
          bare: { subject: 'sb.bare', workerId: 'sb-bare', agentId: 'pier-bare', toolsAllow: ['exec'] },
        },
      },
    }
    home.writeConfig(config)
    const validated = JSON.parse(await home.cli(['config', 'validate', '--json']))
    assert.equal(validated.valid, true, JSON.stringify(validated))
    gateway = await home.startGateway()
  })

  after(async () => {
    if (skip) return
    if (process.env.PIER_E2E_LOG && gateway) writeFileSync(process.env.PIER_E2E_LOG, gateway.log())
    await gateway?.stop()
    await nc?.close()
    await nats?.stop()
    await model?.close()
    containers?.stop()
    listener?.close()
    // Whatever a failed run left: this gateway's containers carry its session keys.
    if (!process.env.PIER_E2E_KEEP) for (const e of containers?.created() ?? []) await docker(['rm', '-f', e.id]).catch(() => {})
    home?.cleanup()
  })

  it('the documented setup takes jobs; a sandbox that does not confine a job is refused with the one fix it needs', { skip }, async () => {
    const accounts = await pierAccounts(['box', 'ls', 'shared', 'copy', 'bare'])
    const row = (id) => accounts.find((a) => a.accountId === id)
    assert.equal(row('box').connected, true, JSON.stringify(row('box')))
    assert.equal(row('box').lastError ?? null, null)
    assert.equal(row('ls').lifecycle, 'blocked')
    assert.match(row('ls').lastError, /^PIER_HOST_TOOLS: toolsAllow gives job turns host tools \(exec, ls\), and agent pier-jobs's sandbox does not confine a job: target sandbox allows unclassified tool surface ls\. Fix: remove ls from toolsAllow/)
    assert.equal(row('shared').lifecycle, 'blocked')
    assert.match(row('shared').lastError, /sandbox does not confine a job: target sandbox is not exclusive to this worker session\. Fix: set agents\.entries\.pier-shared\.sandbox\.scope to "session"/)
    assert.equal(row('copy').lifecycle, 'blocked')
    assert.match(row('copy').lastError, /workspaceAccess "none"\), which outlives the job and belongs to the gateway's user\. Fix: set agents\.entries\.pier-copy\.sandbox\.workspaceAccess to "rw"/)
    assert.equal(row('bare').lifecycle, 'blocked')
    assert.equal(
      row('bare').lastError.split('; then ')[0],
      "PIER_HOST_TOOLS: toolsAllow gives job turns host tools (exec), and agent pier-bare's sandbox sets no memory, memorySwap, pidsLimit, cpus limit: a stranger's job could take this host's memory, processes or every core. " +
        `Fix: openclaw config set agents.entries.pier-bare.sandbox.docker '{"memory":"1g","memorySwap":"1g","pidsLimit":256,"cpus":1}' --strict-json --merge`,
    )
    for (const id of ['ls', 'shared', 'copy']) assert.doesNotMatch(row(id).lastError, /mode "all", scope "session", backend "docker"/, 'no fix that names the setup already there')
  })

  it("openclaw doctor and the audit, run on this home, say what jobs with tools lack here in one line with its fix (nothing, with docker and the image here; the image, when the config names one docker lacks), the gateway's fix for each refused sandbox, and where the tools run; status and /pier say it too", { skip }, async (t) => {
    const accounts = await pierAccounts(['box', 'ls', 'shared', 'copy', 'bare'])
    const image = 'openclaw-sandbox:bookworm-slim'
    const where = `exec, read, write in a docker sandbox (agent pier-jobs, image ${image})`
    assert.equal(accounts.find((a) => a.accountId === 'box').pier?.jobTools, where)
    // The doctor: docker and the image are here, so nothing about them; each refused sandbox is
    // named with the fix the gateway gave (the doctor runs in the CLI, which judges the sandbox by
    // its config, OpenClaw giving a plugin no sandbox runtime there).
    let started = Date.now()
    const ready = await doctor()
    t.diagnostic(`openclaw doctor --lint --json: ${Date.now() - started} ms`)
    const seen = (list) => JSON.stringify(list, null, 1)
    const docker = (list) => list.filter((f) => /^jobs\.(docker_|image_)/.test(f.id))
    assert.deepEqual(docker(ready), [], seen(ready))
    assert.ok(ready.some((f) => f.id === 'jobs.sandboxed_tools' && /^Pier account box: /.test(f.message)), seen(ready))
    for (const id of ['ls', 'shared', 'copy', 'bare']) {
      const fix = accounts.find((a) => a.accountId === id).lastError.split('; then ')[0].replace(/^PIER_HOST_TOOLS: /, '')
      assert.ok(ready.some((f) => f.id === 'jobs.host_tools' && f.message.startsWith(`Pier account ${id}: `) && f.message.endsWith(fix)), `${id}: ${fix}\n${seen(ready)}`)
    }
    // The audit (the doctor's warnings and its own summaries), with a copy of the config whose job
    // agent names an image docker lacks: that one thing, for the one account it stops, and where
    // that account's tools would run.
    const absent = `pier-absent:doctor-${process.pid}`
    const copy = join(home.dir, 'openclaw.absent-image.json')
    const config = home.readConfig()
    config.agents.entries['pier-jobs'].sandbox.docker.image = absent
    writeFileSync(copy, JSON.stringify(config, null, 2))
    started = Date.now()
    const audit = await promisify(execFile)(OPENCLAW, ['security', 'audit', '--json'], { env: { ...home.env, OPENCLAW_CONFIG_PATH: copy }, timeout: 180_000, maxBuffer: 64 * 1024 * 1024 }).catch((error) => error)
    t.diagnostic(`openclaw security audit --json: ${Date.now() - started} ms`)
    const findings = JSON.parse(audit.stdout).findings.filter((f) => f.checkId.startsWith('channels.pier.'))
    assert.deepEqual(
      findings.filter((f) => /^channels\.pier\.jobs\.(docker_|image_)/.test(f.checkId)).map((f) => ({ checkId: f.checkId, title: f.title, detail: f.detail })),
      [
        {
          checkId: 'channels.pier.jobs.image_missing',
          title: `Pier account box: jobs with tools cannot run here (image ${absent})`,
          detail: `the image ${absent} (agents.entries.pier-jobs.sandbox.docker.image) is missing. Fix: docker pull ${absent} (or build it), or use OpenClaw's default image: openclaw config unset agents.entries.pier-jobs.sandbox.docker.image`,
        },
      ],
      seen(findings),
    )
    const reach = findings.find((f) => f.checkId === 'channels.pier.jobs.reach' && /account box:/.test(f.title))
    assert.ok(reach?.detail.includes(`Tools offered: ${where.replace(image, absent)}.`), seen(findings))
    // /pier in a chat says where they run as well.
    await home.call('chat.send', { sessionKey: 'agent:main:main', message: '/pier', idempotencyKey: `sb-pier-${Date.now()}` })
    await waitFor(async () => JSON.stringify(await home.call('chat.history', { sessionKey: 'agent:main:main', limit: 6 })).includes(`job tools: ${where}`), { timeout: 30_000, interval: 500 })
    // The fix for OpenClaw's default image, as the plugin ships it: with the image there, it
    // does nothing, at once.
    const script = join(pluginDir, 'scripts', 'sandbox-image.sh')
    started = Date.now()
    const { stdout } = await promisify(execFile)('bash', [script], { env: { ...process.env, OPENCLAW_PACKAGE: join(E2E_CACHE, 'openclaw', 'node_modules', 'openclaw') } })
    assert.match(stdout, new RegExp(`${image} is up to date .*; nothing to do`))
    assert.ok(Date.now() - started < 5000, `${Date.now() - started} ms`)
  })

  it("a job's command runs in a container of its own, as an unprivileged user, without network, offered exactly its tools; its output is the result", { skip }, async (t) => {
    // The control: the same probe from a container with network reaches the listener.
    const control = await docker(['run', '--rm', '--network', 'bridge', SANDBOX_IMAGE, 'curl', '-sS', '-m', '5', `http://${bridge}:${listener.address().port}/`])
    assert.equal(control, 'net-reached')
    assert.equal(listenerHits, 1)
    const canary = `/tmp/pier-sb-canary-${process.pid}`
    const probe = [
      'echo calc=$((6*7)) uid=$(id -u) user=$(id -un) host=$(hostname) caps=$(grep CapEff /proc/self/status | tr -d [:space:])',
      `(touch /pier-root-probe 2>/dev/null && echo root=writable || echo root=readonly)`,
      `(curl -sS -m 5 http://${bridge}:${listener.address().port}/ >/dev/null 2>&1 && echo net=reached || echo net=blocked)`,
      `touch ${canary} && echo canary=written`,
    ].join(' && ')
    const sent = Date.now()
    const reply = await firstRequest(nc, 'sb.box', { id: 'sb-Job-1', task: `PIEROBEY sb-1 PIEREXEC:${probe};` }, { timeout: 90_000 })
    const answered = Date.now()
    const { tools, output } = obeyed(reply)
    assert.deepEqual([...tools].sort(), ['exec', 'read', 'write'], 'offered exactly toolsAllow: no apply_patch, no Tool Search')
    for (const r of model.requests.filter((q) => q.messages.includes('sb-1'))) assert.deepEqual([...r.tools].sort(), ['exec', 'read', 'write'])
    assert.equal(field(output, 'calc'), '42', `the command ran: ${output}`)
    assert.notEqual(field(output, 'uid'), '0', 'not root in the container')
    assert.equal(field(output, 'user'), 'nobody')
    assert.equal(field(output, 'caps'), 'CapEff:0000000000000000', 'no capabilities')
    assert.equal(field(output, 'root'), 'readonly')
    assert.equal(field(output, 'net'), 'blocked')
    assert.equal(listenerHits, 1, 'nothing from the job reached the listener')
    assert.equal(field(output, 'canary'), 'written')
    assert.equal(existsSync(canary), false, 'what the job wrote is not on this host')
    // The host the command saw is a container the gateway made for this job's session: one.
    const host = field(output, 'host')
    assert.notEqual(host, hostname())
    const made = containers.created().filter((e) => e.labels['openclaw.sessionKey']?.startsWith('agent:pier-jobs:pier:'))
    assert.equal(made.length, 1, JSON.stringify(containers.created()))
    assert.equal(made[0].id.slice(0, 12), host)
    assert.match(made[0].name, /^openclaw-sbx-/)
    // What a sandbox of its own costs a job (a cold one: the first of this gateway).
    const started = containers.events.find((e) => e.id === made[0].id && e.action === 'start')
    t.diagnostic(`sent to container created ${Math.round(made[0].at - sent)} ms, started ${Math.round(started.at - sent)} ms, answered ${answered - sent} ms`)
  })

  it('nothing one job writes is visible to the next; its container, workspace and skills copy are removed when it ends', { skip }, async (t) => {
    const from = containers.created().length
    const sentA = Date.now()
    const replyA = await request(nc, 'sb.box', { id: 'sb-a', task: "PIEROBEY sb-a PIEREXEC:echo secret-a > /workspace/token-a && echo wrote=$(cat /workspace/token-a) at=$(pwd);" }, 90_000)
    const answeredA = Date.now()
    const a = obeyed(replyA)
    assert.equal(field(a.output, 'wrote'), 'secret-a', a.output)
    assert.equal(field(a.output, 'at'), '/workspace')
    const [madeA] = await sandboxesGone(from)
    const destroyedA = await waitFor(() => containers.events.find((e) => e.id === madeA.id && e.action === 'destroy'), { timeout: 10_000, interval: 50 })
    t.diagnostic(`job sb-a: container created ${Math.round(madeA.at - sentA)} ms after the job was sent (a warm gateway), removed ${Math.round(destroyedA.at - answeredA)} ms after its answer`)
    const b = obeyed(await request(nc, 'sb.box', { id: 'sb-b', task: "PIEROBEY sb-b PIEREXEC:echo seen=$(cat /workspace/token-a 2>/dev/null || echo none) files=$(ls -A /workspace | paste -sd, -);" }, 90_000))
    assert.equal(field(b.output, 'seen'), 'none', b.output)
    assert.doesNotMatch(field(b.output, 'files') ?? '', /token-a/)
    const made = await sandboxesGone(from)
    assert.equal(made.length, 2, 'one container per job')
    assert.notEqual(made[1].id, madeA.id)
  })

  it('a job cut off at its deadline is answered TIMEOUT, and its container (the command still running in it) is removed', { skip }, async () => {
    const from = containers.created().length
    const reply = await request(nc, 'sb.box', { id: 'sb-slow', task: 'PIEROBEY sb-slow PIEREXEC:sleep 1000;', timeoutMs: 6000 }, 60_000)
    assert.equal(reply.type, 'task_error', JSON.stringify(reply))
    assert.equal(reply.error.code, 'TIMEOUT')
    const [made] = await sandboxesGone(from)
    assert.ok(containers.events.some((e) => e.id === made.id && e.action === 'start'), 'the command had started in it')
  })

  it('a fork bomb, a memory hog and a disk filler each end with their job answered; the limits held, the gateway and the next job are unharmed', { skip }, async (t) => {
    // The three at once (`sleep 1000`, a job that outlives its wall time, is the TIMEOUT test above).
    const from = containers.created().length
    const peak = { pids: 0, memory: 0, disk: 0 }
    const limits = new Map()
    let sampling = true
    const sampler = (async () => {
      while (sampling) {
        for (const c of jobContainers(from)) {
          const pids = cgroupValue(c.id, 'pids', 'pids.current')
          const memory = cgroupValue(c.id, 'memory', 'memory.max_usage_in_bytes') ?? cgroupValue(c.id, 'memory', 'memory.peak')
          if (pids !== null) peak.pids = Math.max(peak.pids, pids)
          if (memory !== null) peak.memory = Math.max(peak.memory, memory)
          if (!limits.has(c.id) && pids !== null) limits.set(c.id, await docker(['inspect', '-f', '{{.HostConfig.PidsLimit}} {{.HostConfig.Memory}} {{.HostConfig.MemorySwap}} {{.HostConfig.NanoCpus}}', c.id]).catch(() => null))
        }
        peak.disk = Math.max(peak.disk, allocated(join(stateDir(), 'pier', 'jobs')))
        await new Promise((resolve) => setTimeout(resolve, 100))
      }
    })()
    const timed = async (id, command) => {
      const sent = Date.now()
      const reply = await request(nc, 'sb.box', { id, task: `PIEROBEY ${id} PIEREXEC:${command};`, timeoutMs: 20_000 }, 60_000)
      return { reply, ms: Date.now() - sent }
    }
    const [bomb, hog, filler] = await Promise.all([
      timed('sb-forkbomb', "bash -c 'bomb() { bomb | bomb & } && bomb'"),
      // tail keeps a line without newlines whole in memory: 2000 MiB of it.
      timed('sb-memhog', 'head -c 2000m /dev/zero | tail && echo survived=yes'),
      // 2000 MiB into the workspace, a host directory (a tmpfs of 64 MiB here: the gateway runs as root).
      timed('sb-diskfill', 'dd if=/dev/zero of=/workspace/fill bs=1M count=2000 && echo filled=yes'),
    ]).finally(() => (sampling = false))
    await sampler
    const code = (r) => (r.type === 'task_result' ? 'task_result' : r.error?.code)
    t.diagnostic(`fork bomb: ${code(bomb.reply)} in ${bomb.ms} ms; memory hog: ${code(hog.reply)} in ${hog.ms} ms; disk filler: ${code(filler.reply)} in ${filler.ms} ms`)
    for (const [name, r] of [['fork bomb', bomb], ['memory hog', hog], ['disk filler', filler]]) t.diagnostic(`${name} answered: ${JSON.stringify(r.reply.result ? obeyed(r.reply).output : r.reply.error).slice(0, 300)}`)
    t.diagnostic(`peaks: ${peak.pids} processes in a job container, ${Math.round(peak.memory / MiB)} MiB of memory, ${Math.round(peak.disk / MiB)} MiB in the job workspaces`)
    // Every job container had the agent's limits.
    assert.equal(limits.size, 3, JSON.stringify([...limits]))
    for (const l of limits.values()) assert.equal(l?.trim(), `64 ${256 * MiB} ${256 * MiB} 1000000000`)
    // The fork bomb filled its process table and no more; the job ended at its deadline (the
    // shell waits for children that never end) or answered with the shell's complaint.
    assert.ok(['TIMEOUT', 'task_result', 'EXECUTION_FAILED'].includes(code(bomb.reply)), JSON.stringify(bomb.reply).slice(0, 500))
    assert.ok(peak.pids <= 64, `at most pidsLimit processes: ${peak.pids}`)
    assert.equal(peak.pids, 64, `the bomb filled the process table: ${peak.pids}`)
    // The memory hog was killed at the memory limit (docker's oom event), and its job answered.
    const hogKilled = containers.events.some((e) => e.action === 'oom' && jobContainers(from).some((c) => c.id === e.id))
    assert.ok(hogKilled, 'an oom kill in a job container')
    assert.ok(peak.memory <= 256 * MiB, `memory within the limit: ${peak.memory}`)
    if (code(hog.reply) === 'task_result') assert.equal(field(obeyed(hog.reply).output, 'survived'), undefined, 'the hog did not survive')
    else assert.ok(['EXECUTION_FAILED', 'TIMEOUT'].includes(code(hog.reply)), JSON.stringify(hog.reply))
    // The disk filler got no further than the workspace limit: ended at it (the plugin measures the
    // workspace), or refused past it (its tmpfs, on a gateway run as root) and answered.
    if (code(filler.reply) === 'EXECUTION_FAILED') {
      assert.equal(filler.reply.error.message, `the job wrote more than its workspace may hold (${DISK_MB} MiB, 100000 files)`)
      assert.match(gateway.log(), /job sb-diskfill ended: its workspace held \d+ MiB in \d+ entries when measured, at the limit of 64 MiB/)
    } else {
      assert.equal(code(filler.reply), 'task_result', JSON.stringify(filler.reply))
      assert.match(obeyed(filler.reply).output, /No space left on device/)
    }
    if (filler.reply.result) assert.equal(field(obeyed(filler.reply).output, 'filled'), undefined, 'dd did not finish')
    if (process.getuid() === 0) assert.ok(peak.disk <= DISK_MB * MiB, `at most the limit on disk: ${peak.disk}`)
    else assert.ok(peak.disk < 2000 * MiB, `stopped before the end: ${peak.disk}`)
    // Nothing of the three is left; the gateway still answers, and so does the next job.
    await sandboxesGone(from, { timeout: 60_000 })
    assert.equal(gateway.child.exitCode, null, 'the gateway runs')
    await pierAccounts(['box'])
    const next = obeyed(await request(nc, 'sb.box', { id: 'sb-next', task: 'PIEROBEY sb-next PIEREXEC:echo next=ok procs=$(ls /proc | grep -c [0-9]);' }, 60_000))
    assert.equal(field(next.output, 'next'), 'ok', next.output)
  })

  it('a job its requester cancels is answered CANCELLED, and its container (the command still running in it) is removed', { skip }, async () => {
    const from = containers.created().length
    const { seen, answer, stop } = askWithProgress(nc, 'sb.box', { type: 'task_request', id: 'sb-cancel', task: 'PIEROBEY sb-cancel PIEREXEC:sleep 1000;', timeoutMs: 60_000 })
    await jobContainerStarted(from)
    const accepted = await waitFor(() => seen.find((p) => p.state === 'accepted'), { timeout: 10_000 })
    nc.publish(accepted.cancel.subject, JSON.stringify({ version: '1.1', type: 'task_cancel', id: 'sb-cancel', token: accepted.cancel.token }))
    const answered = await answer
    stop()
    assert.equal(answered.error?.code, 'CANCELLED', JSON.stringify(answered))
    await sandboxesGone(from)
  })

  it('a gateway killed mid-job has that job\'s sandbox removed when it starts again', { skip }, async () => {
    // Killed (SIGKILL, the gateway and every process it started): nothing runs to clean up.
    const from = containers.created().length
    // Never answered: its worker dies with the gateway.
    request(nc, 'sb.box', { id: 'sb-kill', task: 'PIEROBEY sb-kill PIEREXEC:sleep 1000;', timeoutMs: 60_000 }, 5000).catch(() => {})
    await jobContainerStarted(from)
    for (const pid of processTree(gateway.child.pid)) {
      try {
        process.kill(pid, 'SIGKILL')
      } catch {}
    }
    await gateway.exited
    const made = jobContainers(from)
    assert.equal((await stillThere(made)).length, 1, 'the killed gateway left its job container')
    assert.ok(leftOnDisk().length > 0, 'and its files')
    // Started again: the leftovers of the earlier run are removed.
    gateway = await home.startGateway()
    await pierAccounts(['box'])
    await sandboxesGone(from, { timeout: 60_000 })
    await waitFor(() => /removed 1 job sandbox containers and 1 job workspaces an earlier gateway run left behind/.test(gateway.log()), { timeout: 30_000, interval: 250 })
  })

  it('a gateway stopped mid-job leaves no sandbox behind', { skip }, async () => {
    // Stopped (SIGTERM): OpenClaw 2026.9.6 lets agent turns in flight run on (its drain, up to
    // 315 s) before it stops the channels, so the job ends at its deadline; its sandbox is
    // removed before the gateway exits. (The last test: the gateway stays stopped.)
    const from = containers.created().length
    const stopped = request(nc, 'sb.box', { id: 'sb-stop', task: 'PIEROBEY sb-stop PIEREXEC:sleep 1000;', timeoutMs: 15_000 }, 60_000)
    await jobContainerStarted(from)
    const exit = gateway.stop()
    const reply = await stopped
    assert.ok(['TIMEOUT', 'SHUTTING_DOWN'].includes(reply.error?.code), JSON.stringify(reply))
    await exit
    const made = jobContainers(from)
    assert.equal(made.length, 1, JSON.stringify(made.map((c) => [c.name, c.labels['openclaw.sessionKey'], Math.round(c.at - Date.now())])))
    assert.deepEqual(await stillThere(made), [], 'removed before the gateway exited')
    assert.deepEqual(leftOnDisk(), [])
  })
})
