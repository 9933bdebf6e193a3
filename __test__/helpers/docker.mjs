// Docker for the sandbox end-to-end tests: whether it can run here (and if not, why: the tests
// then report themselves skipped with that reason), the docker CLI, the containers created while
// a test watches, and the gateway environment these machines need (their stray /.dockerenv).
// scripts/setup-docker.sh starts dockerd and builds the image.
import { execFile, execFileSync, spawn } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { waitFor } from './wait.mjs'

/** OpenClaw's default sandbox image (scripts/setup-docker.sh builds it). */
export const SANDBOX_IMAGE = 'openclaw-sandbox:bookworm-slim'

const STATE = join(process.env.PIER_E2E_CACHE ?? join(homedir(), '.cache', 'pier-e2e'), 'docker')
const run = promisify(execFile)

/** Runs `docker ...args` and resolves with its stdout. */
export async function docker(args, { timeout = 60_000 } = {}) {
  const { stdout } = await run('docker', args, { timeout, maxBuffer: 16 * 1024 * 1024 })
  return stdout
}

/**
 * Why the sandbox tests cannot run here, or null when they can: a docker daemon answers, the
 * sandbox image is there and a container starts.
 */
export function dockerUnavailable() {
  const setup = existsSync(join(STATE, 'unavailable')) ? ` (scripts/setup-docker.sh: ${readFileSync(join(STATE, 'unavailable'), 'utf8').trim()})` : ''
  const check = (args, what) => {
    try {
      execFileSync('docker', args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: 30_000 })
      return null
    } catch (error) {
      const why = String(error.stderr ?? '').trim().split('\n').pop() || error.code || error.message
      return `${what}: ${why}${setup}`
    }
  }
  return (
    check(['info', '--format', '{{.ServerVersion}}'], 'no docker daemon answers') ??
    check(['image', 'inspect', SANDBOX_IMAGE], `the image ${SANDBOX_IMAGE} is missing (bash scripts/setup-docker.sh builds it)`) ??
    check(['run', '--rm', '--network', 'none', SANDBOX_IMAGE, 'true'], 'a container does not start')
  )
}

/**
 * Whether this machine carries a /.dockerenv though it is no container: OpenClaw would then
 * refuse every sandbox (helpers/no-dockerenv.mjs). A real container shows in /proc/1/cgroup
 * (OpenClaw's own test of it).
 */
export function strayDockerenv() {
  if (!existsSync('/.dockerenv')) return false
  let cgroup = ''
  try {
    cgroup = readFileSync('/proc/1/cgroup', 'utf8')
  } catch {}
  return !/\/docker\/|cri-containerd-[0-9a-f]|containerd\/[0-9a-f]{64}|\/kubepods[/.]|\blxc\b/.test(cgroup)
}

/** Environment for a gateway that runs sandboxes: on a machine with a stray /.dockerenv, hides it from that gateway alone. */
export function sandboxGatewayEnv(env = process.env) {
  if (!strayDockerenv()) return {}
  const preload = `--import=${fileURLToPath(new URL('./no-dockerenv.mjs', import.meta.url))}`
  return { NODE_OPTIONS: [env.NODE_OPTIONS, preload].filter(Boolean).join(' ') }
}

/**
 * The gateway address of docker's default bridge network: where a container with network reaches
 * this host. Some daemons (dockerd 20.10 here, started fresh) leave it out of the network's IPAM
 * config; then it is the address of the bridge's interface on this host (docker0, from `ip`).
 */
export async function bridgeGateway() {
  const [gateway, option] = (await docker(['network', 'inspect', 'bridge', '--format', '{{range .IPAM.Config}}{{.Gateway}}{{end}}|{{index .Options "com.docker.network.bridge.name"}}'])).trim().split('|')
  // The same fresh daemon had no options either (`<no value>`): docker0, its default name.
  const name = /^[\w.-]+$/.test(option) ? option : 'docker0'
  // Node's networkInterfaces() leaves out a bridge no container uses yet (not running): ask ip.
  const address = gateway || /\binet (\d+\.\d+\.\d+\.\d+)\//.exec((await run('ip', ['-4', '-o', 'addr', 'show', 'dev', name]).catch(() => ({}))).stdout ?? '')?.[1]
  if (!address) throw new Error(`docker's bridge network has no gateway address (interface ${name})`)
  return address
}

/**
 * Records docker's container events from now on (`docker events`): `events` holds `{ action,
 * id, name, labels, at }` in order (`at`: when, in ms since the epoch); `stop()` ends the watch.
 */
export async function watchContainers() {
  const child = spawn('docker', ['events', '--filter', 'type=container', '--format', '{{json .}}'], { stdio: ['ignore', 'pipe', 'pipe'] })
  const events = []
  let buffered = ''
  child.stdout.on('data', (chunk) => {
    buffered += chunk
    for (let i; (i = buffered.indexOf('\n')) >= 0; ) {
      const line = buffered.slice(0, i)
      buffered = buffered.slice(i + 1)
      try {
        const e = JSON.parse(line)
        const { name, ...labels } = e.Actor?.Attributes ?? {}
        events.push({ action: e.Action ?? e.status, id: e.Actor?.ID ?? e.id, name, labels, at: Number(e.timeNano) / 1e6 })
      } catch {}
    }
  })
  // docker events prints nothing until an event: wait until it is connected (a container it
  // must see), so no event of the test can come before the watch.
  const probe = `pier-events-probe-${process.pid}-${Date.now()}`
  await docker(['run', '--rm', '--network', 'none', '--name', probe, SANDBOX_IMAGE, 'true'])
  await waitFor(() => events.some((e) => e.name === probe && e.action === 'destroy'), { timeout: 30_000, interval: 50 }).catch(() => {
    throw new Error('docker events showed no event of a container run to test it')
  })
  return {
    events,
    /** Containers created since the watch began, from their create events. */
    created: () => events.filter((e) => e.action === 'create' && e.name !== probe),
    stop: () => child.kill(),
  }
}
