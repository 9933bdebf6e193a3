// End to end: jobs that do real work, in OpenClaw's docker sandbox. One real gateway (Node 24,
// openclaw@2026.9.6), a real nats-server, real docker (scripts/setup-docker.sh: dockerd and
// OpenClaw's default sandbox image) and the fake model in its obedient mode, which runs the
// `exec` a task asks for and then answers with everything it was sent, the command's output
// included. The job agent is set up as the README says (sandbox mode "all", scope "session",
// backend "docker", nothing else), and the account offers exec, read and write.
//
// Where docker cannot run, the tests are reported skipped with the reason (never passed);
// PIER_REQUIRE_DOCKER=1 makes that a failure. PIER_E2E_KEEP=1 leaves the containers for a look.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import { existsSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { hostname } from 'node:os'
import { startNatsServer } from '../helpers/nats-server.mjs'
import { startFakeModel } from '../helpers/fake-model.mjs'
import { createOpenClawHome, packPlugin } from '../helpers/openclaw.mjs'
import { firstRequest, rawClient, waitFor } from '../helpers/addon.mjs'
import { SANDBOX_IMAGE, bridgeGateway, docker, dockerUnavailable, sandboxGatewayEnv, watchContainers } from '../helpers/docker.mjs'

const unavailable = dockerUnavailable()
const skip = unavailable && process.env.PIER_REQUIRE_DOCKER !== '1' ? `docker cannot run here: ${unavailable}` : false

let nats, nc, model, home, gateway, containers, listener, listenerHits, bridge

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
    await home.cli(['plugins', 'install', '--link', packPlugin().dir, '--force', '--accept-capabilities'])
    const config = home.readConfig()
    const jobWorkspace = join(home.dir, 'state', 'pier', 'job-workspace')
    config.agents.entries = {
      main: { default: true },
      // The README's setup: the job agent in OpenClaw's sandbox, its tool list as OpenClaw makes it.
      'pier-jobs': { workspace: jobWorkspace, sandbox: { mode: 'all', scope: 'session', backend: 'docker', workspaceAccess: 'rw' } },
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
          box: { subject: 'sb.box', workerId: 'sb-box', toolsAllow: ['exec', 'read', 'write'] },
          // ls moves into the sandbox, but OpenClaw does not count it as confined.
          ls: { subject: 'sb.ls', workerId: 'sb-ls', toolsAllow: ['exec', 'ls'] },
          shared: { subject: 'sb.shared', workerId: 'sb-shared', agentId: 'pier-shared', toolsAllow: ['exec'] },
          copy: { subject: 'sb.copy', workerId: 'sb-copy', agentId: 'pier-copy', toolsAllow: ['exec'] },
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
    const accounts = await pierAccounts(['box', 'ls', 'shared', 'copy'])
    const row = (id) => accounts.find((a) => a.accountId === id)
    assert.equal(row('box').connected, true, JSON.stringify(row('box')))
    assert.equal(row('box').lastError ?? null, null)
    assert.equal(row('ls').lifecycle, 'blocked')
    assert.match(row('ls').lastError, /^PIER_HOST_TOOLS: toolsAllow gives job turns host tools \(exec, ls\), and agent pier-jobs's sandbox does not confine a job: target sandbox allows unclassified tool surface ls\. Fix: remove ls from toolsAllow/)
    assert.equal(row('shared').lifecycle, 'blocked')
    assert.match(row('shared').lastError, /sandbox does not confine a job: target sandbox is not exclusive to this worker session\. Fix: set agents\.entries\.pier-shared\.sandbox\.scope to "session"/)
    assert.equal(row('copy').lifecycle, 'blocked')
    assert.match(row('copy').lastError, /workspaceAccess "none"\), which outlives the job and belongs to the gateway's user\. Fix: set agents\.entries\.pier-copy\.sandbox\.workspaceAccess to "rw"/)
    for (const id of ['ls', 'shared', 'copy']) assert.doesNotMatch(row(id).lastError, /mode "all", scope "session", backend "docker"/, 'no fix that names the setup already there')
  })

  it("a job's command runs in a container of its own, as an unprivileged user, without network, offered exactly its tools; its output is the result", { skip }, async () => {
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
    const reply = await firstRequest(nc, 'sb.box', { id: 'sb-Job-1', task: `PIEROBEY sb-1 PIEREXEC:${probe};` }, { timeout: 90_000 })
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
  })
})
