// The operator's side of jobs with tools (#33 item 4): the doctor's check of docker, the image and
// the job agent's sandbox (plugin/sandbox-doctor.mjs) with a stubbed docker, the one line it gives
// per missing thing, where status, /pier and the audit say a job's tools run, the setup wizard's
// note, and scripts/sandbox-image.sh's cache against a stand-in docker command.
// __test__/e2e/sandbox.test.mjs runs the same check against a real gateway's home and real docker.
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { IMAGE_SCRIPT, checkJobSandbox, configSandbox, dockerProbe, problemLine, sandboxProblems } from '../plugin/sandbox-doctor.mjs'
import { DEFAULT_SANDBOX_IMAGE, describeJobTools, jobToolPolicy, sandboxSettings } from '../plugin/job-policy.mjs'
import { createSecurityAdapter } from '../plugin/security.mjs'
import { snapshotOf } from '../plugin/status.mjs'
import { formatAccount } from '../plugin/command.mjs'
import { jobToolsNote } from '../plugin/setup.mjs'

const ROOT = fileURLToPath(new URL('..', import.meta.url))

/** The README's job agent: sandbox mode all, scope session, docker, its own workspace, the limits. */
const SANDBOX = { mode: 'all', scope: 'session', backend: 'docker', workspaceAccess: 'rw', docker: { memory: '1g', memorySwap: '1g', pidsLimit: 256, cpus: 1 } }
const config = (sandbox = SANDBOX, accounts = { box: { toolsAllow: ['exec', 'read', 'write'] } }) => ({
  agents: { entries: { main: { default: true }, 'pier-jobs': { sandbox } } },
  channels: { pier: { natsUrl: 'nats://h:4222', workerId: 'w', maxDailySpend: 5, accounts } },
})

/** A docker that answers as told, and records what it was asked. */
function stubDocker({ daemon = null, images = [DEFAULT_SANDBOX_IMAGE] } = {}) {
  const asked = []
  return {
    asked,
    daemon() {
      asked.push('daemon')
      return daemon
    },
    image(name) {
      asked.push(`image ${name}`)
      return images.includes(name) ? null : `Error: No such image: ${name}`
    },
  }
}
const settings = (cfg = config()) => sandboxSettings(cfg, 'pier-jobs')

describe("the doctor's check of a job sandbox: one line per missing thing, with its fix", () => {
  it('nothing is missing when docker answers and the image is there', () => {
    const docker = stubDocker()
    assert.deepEqual(sandboxProblems(settings(), docker), [])
    assert.deepEqual(docker.asked, ['daemon', `image ${DEFAULT_SANDBOX_IMAGE}`])
  })

  it('no docker command: install it (and nothing else is asked)', () => {
    const docker = stubDocker({ daemon: { missing: 'cli', reason: 'no docker command on PATH' } })
    const problems = sandboxProblems(settings(), docker)
    assert.deepEqual(problems.map((p) => p.checkId), ['docker_missing'])
    assert.equal(problemLine(problems[0]), 'docker is not installed (no docker command on PATH). Fix: install it: Linux: sudo apt-get install docker.io; macOS: Docker Desktop (brew install --cask docker), then start it')
    assert.deepEqual(docker.asked, ['daemon'], 'no image is looked at without a daemon')
  })

  it('a daemon that does not answer, or a user it does not let in: the command that starts it, or lets the user in', () => {
    const down = sandboxProblems(settings(), stubDocker({ daemon: { missing: 'daemon', reason: 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?' } }))
    assert.equal(down.length, 1)
    assert.equal(problemLine(down[0]), 'no docker daemon answers (Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?). Fix: start it: Linux: sudo systemctl start docker; macOS: open -a Docker')
    const access = sandboxProblems(settings(), stubDocker({ daemon: { missing: 'access', reason: 'permission denied while trying to connect to the Docker daemon socket' } }))
    assert.deepEqual(access.map((p) => p.checkId), ['docker_access'])
    assert.match(problemLine(access[0]), /^this user may not use docker \(permission denied.*\)\. Fix: sudo usermod -aG docker "\$USER", then log in again/)
  })

  it("OpenClaw's default image missing: the image setup this package ships, which exists", () => {
    const [missing, ...more] = sandboxProblems(settings(), stubDocker({ images: [] }))
    assert.deepEqual(more, [])
    assert.equal(missing.checkId, 'image_missing')
    assert.equal(problemLine(missing), `OpenClaw's sandbox image openclaw-sandbox:bookworm-slim is missing (agent pier-jobs's sandbox runs it). Fix: bash ${IMAGE_SCRIPT} (OpenClaw's documented build, docs/gateway/sandboxing/images-and-setup.md)`)
    assert.equal(IMAGE_SCRIPT, join(ROOT, 'scripts', 'sandbox-image.sh'))
    assert.ok(JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).files.includes('scripts/sandbox-image.sh'), 'the script is in the package the fix points into')
    // A path with a space is one shell word.
    assert.match(sandboxProblems(settings(), stubDocker({ images: [] }), { script: '/opt/my plugins/s.sh' })[0].fix, /^bash '\/opt\/my plugins\/s\.sh' /)
  })

  it('an image the config names and docker lacks: the key that names it, docker pull, or back to the default', () => {
    const cfg = config({ ...SANDBOX, docker: { ...SANDBOX.docker, image: 'acme/jobs:1' } })
    const [missing] = sandboxProblems(settings(cfg), stubDocker())
    assert.equal(problemLine(missing), "the image acme/jobs:1 (agents.entries.pier-jobs.sandbox.docker.image) is missing. Fix: docker pull acme/jobs:1 (or build it), or use OpenClaw's default image: openclaw config unset agents.entries.pier-jobs.sandbox.docker.image")
    // Named in agents.defaults: that key.
    const inherited = config()
    inherited.agents.defaults = { sandbox: { docker: { image: 'acme/all:2' } } }
    assert.match(problemLine(sandboxProblems(settings(inherited), stubDocker())[0]), /the image acme\/all:2 \(agents\.defaults\.sandbox\.docker\.image\) is missing/)
    assert.deepEqual(sandboxProblems(settings(cfg), stubDocker({ images: ['acme/jobs:1'] })), [])
  })

  it('another backend than docker is not asked about docker', () => {
    const docker = stubDocker({ daemon: { missing: 'cli', reason: 'x' } })
    assert.deepEqual(sandboxProblems(settings(config({ ...SANDBOX, backend: 'podman' })), docker), [])
    assert.deepEqual(docker.asked, [])
  })

  it('dockerProbe reads docker: no command, a daemon that is down, a socket it may not use, an absent image', () => {
    const failing = (error) => () => {
      throw Object.assign(new Error('Command failed'), error)
    }
    assert.deepEqual(dockerProbe(failing({ code: 'ENOENT' })).daemon(), { missing: 'cli', reason: 'no docker command on PATH' })
    assert.deepEqual(dockerProbe(failing({ status: 1, stderr: 'Client: ...\nCannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?\n' })).daemon(), {
      missing: 'daemon',
      reason: 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?',
    })
    assert.equal(dockerProbe(failing({ status: 1, stderr: 'Got permission denied while trying to connect to the Docker daemon socket' })).daemon().missing, 'access')
    assert.equal(dockerProbe(failing({ status: 1, stderr: 'Error: No such image: x:1\n' })).image('x:1'), 'Error: No such image: x:1')
    const calls = []
    const ok = dockerProbe((args) => (calls.push(args.join(' ')), '24.0.7\n'))
    assert.equal(ok.daemon(), null)
    assert.equal(ok.image('openclaw-sandbox:bookworm-slim'), null)
    assert.deepEqual(calls, ['version --format {{.Server.Version}}', 'image inspect --format {{.Id}} openclaw-sandbox:bookworm-slim'])
  })
})

describe("the job agent's sandbox, judged from the config where OpenClaw gives no sandbox runtime (doctor, audit, wizard)", () => {
  const policy = (sandbox, toolsAllow = ['exec']) => jobToolPolicy({ agentId: 'pier-jobs', toolsAllow }, { cfg: config(sandbox), sandbox: configSandbox })

  it("the README's setup is sandboxed; the settings it lacks are named with the fix the gateway gives", () => {
    assert.equal(policy(SANDBOX).sandboxed, true)
    assert.throws(() => policy({ ...SANDBOX, mode: 'off' }), /agent pier-jobs has no sandbox: .* Fix: remove them from toolsAllow/)
    assert.throws(() => policy({ ...SANDBOX, scope: 'agent' }), /not exclusive to this worker session\. Fix: set agents\.entries\.pier-jobs\.sandbox\.scope to "session"/)
    assert.throws(() => policy({ ...SANDBOX, backend: 'ssh' }), /Fix: set agents\.entries\.pier-jobs\.sandbox\.backend to "docker"/)
    assert.throws(() => policy({ ...SANDBOX, docker: { ...SANDBOX.docker, dangerouslyAllowContainerNamespaceJoin: true } }), /dangerous Docker isolation overrides\. Fix: remove the dangerouslyAllow/)
    assert.throws(() => policy(SANDBOX, ['exec', 'ls']), /unclassified tool surface ls\. Fix: remove ls from toolsAllow/)
    assert.throws(() => policy(SANDBOX, ['exec', 'group:fs']), /unclassified tool surface group:fs\. Fix: remove group:fs from toolsAllow/)
    assert.equal(policy(SANDBOX, ['exec', 'process', 'read', 'write', 'edit', 'apply_patch', 'web_search']).sandboxed, true)
    assert.throws(() => policy({ ...SANDBOX, workspaceAccess: 'none' }), /Fix: set agents\.entries\.pier-jobs\.sandbox\.workspaceAccess to "rw"/)
    assert.throws(() => policy({ ...SANDBOX, docker: {} }), /sets no memory, memorySwap, pidsLimit, cpus limit.* Fix: openclaw config set agents\.entries\.pier-jobs\.sandbox\.docker/)
    // A job's session is never the agent's main one: non-main sandboxes it too.
    assert.equal(policy({ ...SANDBOX, mode: 'non-main' }).sandboxed, true)
  })

  it("agents.defaults.sandbox counts as OpenClaw counts it: the agent's key first, then the defaults', then OpenClaw's default", () => {
    const cfg = { agents: { defaults: { sandbox: { mode: 'all', scope: 'session', workspaceAccess: 'rw', docker: SANDBOX.docker } }, entries: { 'pier-jobs': {} } } }
    assert.deepEqual(sandboxSettings(cfg, 'pier-jobs'), { agentId: 'pier-jobs', mode: 'all', backend: 'docker', scope: 'session', workspaceAccess: 'rw', image: DEFAULT_SANDBOX_IMAGE, imageKey: null })
    assert.equal(jobToolPolicy({ agentId: 'pier-jobs', toolsAllow: ['exec'] }, { cfg, sandbox: configSandbox }).sandboxed, true)
    assert.deepEqual(sandboxSettings({}, 'x'), { agentId: 'x', mode: 'off', backend: 'docker', scope: 'agent', workspaceAccess: 'none', image: DEFAULT_SANDBOX_IMAGE, imageKey: null })
    // A shared sandbox ignores the agent's docker keys, its image among them.
    assert.equal(sandboxSettings({ agents: { entries: { a: { sandbox: { scope: 'shared', docker: { image: 'own:1' } } } } } }, 'a').image, DEFAULT_SANDBOX_IMAGE)
  })

  it('checkJobSandbox asks docker only for an account whose job turns run in the sandbox', () => {
    const docker = stubDocker({ images: [] })
    const cfg = config(SANDBOX, { none: {}, web: { toolsAllow: ['group:web'] }, box: { toolsAllow: ['exec'] }, blocked: { toolsAllow: ['message'] } })
    const check = (id) => checkJobSandbox(cfg, { agentId: 'pier-jobs', ...cfg.channels.pier.accounts[id] }, { probe: docker })
    assert.deepEqual(check('none').problems, [])
    assert.deepEqual(check('web').problems, [])
    assert.match(check('blocked').error.message, /^PIER_HOST_TOOLS: .*message cannot be confined/)
    assert.deepEqual(docker.asked, [], 'no docker asked for accounts without sandboxed tools')
    assert.deepEqual(check('box').problems.map((p) => p.checkId), ['image_missing'])
    assert.deepEqual(checkJobSandbox(cfg, { agentId: 'pier-jobs', toolsAllow: ['exec'] }, { probe: false }).problems, [], 'probe: false asks nothing')
  })
})

describe('status, /pier and the audit say whether jobs have tools and where they run', () => {
  const sandbox = settings()

  it('describeJobTools: none, web tools, a docker sandbox with its agent and image, ON THE HOST, blocked', () => {
    const tools = (toolsAllow, extra = {}) => jobToolPolicy({ agentId: 'pier-jobs', toolsAllow, ...extra }, { cfg: config(), sandbox: configSandbox })
    assert.equal(describeJobTools(tools([]), sandbox), 'none')
    assert.equal(describeJobTools(tools(['group:web']), sandbox), 'group:web')
    assert.equal(describeJobTools(tools(['exec', 'read', 'write']), sandbox), 'exec, read, write in a docker sandbox (agent pier-jobs, image openclaw-sandbox:bookworm-slim)')
    assert.equal(describeJobTools(tools(['exec', 'message'], { unsafeHostTools: true }), sandbox), 'exec, message ON THE HOST (unsafeHostTools)')
    assert.equal(describeJobTools(null, sandbox), 'none: the account is blocked (host tools)')
  })

  it("the account's status snapshot and /pier carry it", () => {
    const stats = { inFlight: 0, received: 0, completed: 0, failed: 0, rejected: 0, timedOut: 0, connectAttempts: 0 }
    const policy = jobToolPolicy({ agentId: 'pier-jobs', toolsAllow: ['exec'] }, { cfg: config(), sandbox: configSandbox })
    const run = { accountId: 'box', account: { addonConfig: {} }, activity: {}, jobAgent: { agentId: 'pier-jobs', policy, sandbox } }
    const s = { state: 'connected', servers: 'nats://h:4222', workerId: 'w', stats }
    assert.equal(snapshotOf(run, s).pier.jobTools, 'exec in a docker sandbox (agent pier-jobs, image openclaw-sandbox:bookworm-slim)')
    const none = { ...run, jobAgent: { agentId: 'pier-jobs', policy: jobToolPolicy({ agentId: 'pier-jobs', toolsAllow: [] }, { cfg: config() }), sandbox } }
    assert.equal(snapshotOf(none, s).pier.jobTools, 'none')
    const status = { ...s, stats: { ...stats, reconnects: 0, disconnects: 0, earned: 0, spent: 0, tokensIn: 0, tokensOut: 0 }, subject: 'jobs', queueGroup: 'q', publishSubject: 'jobs', maxConcurrentJobs: 1, uptimeMs: 1000 }
    assert.match(formatAccount('box', status, { jobTools: 'exec in a docker sandbox (agent pier-jobs, image i)' }), /\n {2}takes jobs on jobs \(queue q\), publishes to jobs\n {2}job tools: exec in a docker sandbox \(agent pier-jobs, image i\)\n/)
  })

  it('the audit: its info finding says where the tools run; doctor and audit warn once per missing thing, with the one line', () => {
    const cfg = config(SANDBOX, { box: { toolsAllow: ['exec', 'read', 'write'] }, plain: {} })
    const run = (docker) => {
      const adapter = createSecurityAdapter(undefined, { probe: docker })
      return Object.fromEntries(['box', 'plain'].map((accountId) => [accountId, [...adapter.collectWarnings({ cfg, accountId }), ...adapter.collectAuditFindings({ cfg, accountId })]]))
    }
    const ready = run(stubDocker())
    const ids = (list) => list.map((f) => `${f.severity} ${f.checkId}`).sort()
    assert.deepEqual(ids(ready.box), ['info channels.pier.jobs.reach', 'warn channels.pier.jobs.sandboxed_tools'], 'the CLI judges the sandbox by its config: no "has no sandbox"')
    const reach = ready.box.find((f) => f.checkId === 'channels.pier.jobs.reach')
    assert.match(reach.detail, /each in a workspace of its own .* Tools offered: exec, read, write in a docker sandbox \(agent pier-jobs, image openclaw-sandbox:bookworm-slim\)\. pier_publish: never/)
    assert.match(ready.plain.find((f) => f.checkId === 'channels.pier.jobs.reach').detail, /in the job workspace \(<state dir>\/pier\/job-workspace\).* Tools offered: none\./)
    const missing = run(stubDocker({ images: [] }))
    assert.deepEqual(ids(missing.box), ['info channels.pier.jobs.reach', 'warn channels.pier.jobs.image_missing', 'warn channels.pier.jobs.sandboxed_tools'])
    const image = missing.box.find((f) => f.checkId === 'channels.pier.jobs.image_missing')
    assert.equal(image.title, 'Pier account box: jobs with tools cannot run here (image openclaw-sandbox:bookworm-slim)')
    assert.equal(image.detail, `OpenClaw's sandbox image openclaw-sandbox:bookworm-slim is missing (agent pier-jobs's sandbox runs it). Fix: bash ${IMAGE_SCRIPT} (OpenClaw's documented build, docs/gateway/sandboxing/images-and-setup.md)`)
    assert.doesNotMatch(image.detail, /\n/, 'one line')
    assert.deepEqual(ids(missing.plain), ids(ready.plain), 'an account without tools: nothing about docker')
    // In the gateway, OpenClaw's own sandbox check has the last word.
    const refusing = createSecurityAdapter(() => ({ resolveWorkspaceAuthority: () => ({ sandboxed: true, workspaceAccess: 'rw', confinementError: 'target sandbox allows unclassified tool surface ls.' }) }), { probe: stubDocker() })
    assert.match(refusing.collectWarnings({ cfg, accountId: 'box' }).find((f) => f.checkId === 'channels.pier.jobs.host_tools').detail, /unclassified tool surface ls\. Fix: remove ls from toolsAllow/)
  })
})

describe('the setup wizard shows the same lines for an account whose jobs have host tools', () => {
  const note = async (cfg, accountId, docker) => {
    const notes = []
    await jobToolsNote({ cfg, accountId, prompter: { note: async (message, title) => notes.push({ title, message }) } }, docker)
    return notes
  }

  it("what is missing with its fix; ready when nothing is; nothing for an account without host tools", async () => {
    const cfg = config(SANDBOX, { box: { toolsAllow: ['exec'] }, web: { toolsAllow: ['group:web'] }, host: { toolsAllow: ['exec'], agentId: 'main' } })
    const [missing] = await note(cfg, 'box', stubDocker({ daemon: { missing: 'daemon', reason: 'Cannot connect' } }))
    assert.equal(missing.title, 'Pier: jobs with tools')
    assert.equal(missing.message, 'no docker daemon answers (Cannot connect). Fix: start it: Linux: sudo systemctl start docker; macOS: open -a Docker')
    const [ready] = await note(cfg, 'box', stubDocker())
    assert.equal(ready.message, 'Job tools: exec in a docker sandbox (agent pier-jobs, image openclaw-sandbox:bookworm-slim); docker and the image are ready')
    const [refused] = await note(cfg, 'host', stubDocker())
    assert.match(refused.message, /^PIER_HOST_TOOLS: toolsAllow gives job turns host tools \(exec\), and agent main has no sandbox/)
    assert.deepEqual(await note(cfg, 'web', stubDocker({ daemon: { missing: 'cli', reason: 'x' } })), [])
  })
})

describe('scripts/sandbox-image.sh: cached by the Dockerfile it was built from', () => {
  // A stand-in `docker` that records its calls and answers `image inspect` with the label given.
  function fakeDocker(label) {
    const dir = mkdtempSync(join(tmpdir(), 'pier-fake-docker-'))
    const log = join(dir, 'calls')
    const docs = join(dir, 'openclaw', 'docs', 'gateway', 'sandboxing')
    execFileSync('mkdir', ['-p', docs])
    writeFileSync(join(docs, 'images-and-setup.md'), "    ```bash\n    docker build -t openclaw-sandbox:bookworm-slim - <<'DOCKERFILE'\n    FROM debian:bookworm-slim\n    USER sandbox\n    DOCKERFILE\n    ```\n")
    const answer = label === undefined ? 'echo "Error: No such image" >&2; exit 1' : `echo '${label}'`
    writeFileSync(
      join(dir, 'docker'),
      `#!/bin/sh\necho "$*" >> '${log}'\ncase "$1 $2" in\n  "image inspect") ${answer} ;;\n  "build "*) cat > '${dir}/built' ;;\nesac\nexit 0\n`,
    )
    chmodSync(join(dir, 'docker'), 0o755)
    const run = () => execFileSync('bash', [join(ROOT, 'scripts', 'sandbox-image.sh'), join(dir, 'openclaw')], { encoding: 'utf8', env: { ...process.env, PATH: `${dir}:${process.env.PATH}` } })
    const calls = () => readFileSync(log, 'utf8').trim().split('\n')
    return { dir, run, calls, cleanup: () => rmSync(dir, { recursive: true, force: true }) }
  }
  const sha = execFileSync('sh', ['-c', "printf 'FROM debian:bookworm-slim\\nUSER sandbox\\n' | sha256sum | cut -c1-16"], { encoding: 'utf8' }).trim()

  it("builds when the image is missing, labelled with its Dockerfile's hash; does nothing when that image is there", () => {
    const missing = fakeDocker(undefined)
    try {
      assert.match(missing.run(), /building openclaw-sandbox:bookworm-slim .*\n.*built openclaw-sandbox:bookworm-slim in \d+ s/)
      assert.ok(missing.calls().includes(`build --label pier.dockerfile=${sha} -t openclaw-sandbox:bookworm-slim -`), missing.calls().join('\n'))
      assert.equal(readFileSync(join(missing.dir, 'built'), 'utf8'), 'FROM debian:bookworm-slim\nUSER sandbox\n', "OpenClaw's Dockerfile, unindented")
    } finally {
      missing.cleanup()
    }
    const cached = fakeDocker(sha)
    try {
      assert.match(cached.run(), /is up to date .*; nothing to do/)
      assert.ok(!cached.calls().some((c) => c.startsWith('build')), cached.calls().join('\n'))
    } finally {
      cached.cleanup()
    }
  })

  it("rebuilds an image it built from another Dockerfile, and leaves one it did not build alone", () => {
    const stale = fakeDocker('0123456789abcdef')
    try {
      stale.run()
      assert.ok(stale.calls().some((c) => c.startsWith('build')))
    } finally {
      stale.cleanup()
    }
    const foreign = fakeDocker('<no value>')
    try {
      assert.match(foreign.run(), /was not built by this script: left as it is/)
      assert.ok(!foreign.calls().some((c) => c.startsWith('build')))
    } finally {
      foreign.cleanup()
    }
  })
})
