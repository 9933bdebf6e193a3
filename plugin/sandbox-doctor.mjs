// What an operator must have before jobs with tools can run, and the one command that fixes each
// missing piece: docker (its command and a daemon that answers), the job agent's sandbox image,
// and a sandbox config the plugin accepts. OpenClaw runs a channel's security warnings in
// `openclaw doctor` and `openclaw security audit` (security.mjs), and the setup wizard shows the
// same lines (setup.mjs). Those run in the CLI, where OpenClaw gives a plugin no sandbox runtime
// to ask, so the sandbox config is judged from the config (configSandbox); the gateway asks
// OpenClaw's own check when an account starts and again for every job.
import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { DEFAULT_SANDBOX_IMAGE, expandTools, jobToolPolicy, sandboxSettings } from './job-policy.mjs'

/** The operator's image setup, shipped in the package: OpenClaw's documented build, idempotent. */
export const IMAGE_SCRIPT = fileURLToPath(new URL('../scripts/sandbox-image.sh', import.meta.url))

/**
 * The tools OpenClaw 2026.9.6 counts as confined to a sandbox's workspace (its
 * WORKSPACE_CONFINED_SANDBOX_TOOLS, those a job can be offered): any other in a job's sandbox
 * (`ls`, x_search of group:web) makes it refuse the sandbox as unconfined.
 */
const CONFINED_TOOLS = new Set(['apply_patch', 'edit', 'exec', 'process', 'read', 'write', 'web_fetch', 'web_search'])

const DANGEROUS_DOCKER_KEYS = ['dangerouslyAllowExternalBindSources', 'dangerouslyAllowReservedContainerTargets', 'dangerouslyAllowContainerNamespaceJoin']

/**
 * A stand-in for api.runtime.sandbox where OpenClaw gives none (doctor, audit, setup wizard):
 * resolveWorkspaceAuthority judged by the rules the config shows, in OpenClaw 2026.9.6's words
 * (resolveSandboxWorkspaceAuthority), so jobToolPolicy names the same fix the gateway would.
 * Its other rules (elevated exec, exec host, browser control, session visibility, the agent's
 * own tool policy) are left to the gateway's own check.
 */
export const configSandbox = {
  resolveWorkspaceAuthority({ config, agentId, sessionKey }) {
    const s = sandboxSettings(config, agentId)
    const sandboxed = s.mode === 'all' || (s.mode === 'non-main' && sessionKey !== `agent:${agentId}:main`)
    if (!sandboxed) return { sandboxed: false, workspaceAccess: s.workspaceAccess }
    const backend = s.backend.toLowerCase()
    const docker = [config?.agents?.defaults?.sandbox?.docker, s.scope === 'shared' ? undefined : config?.agents?.entries?.[agentId]?.sandbox?.docker]
    let confinementError
    if (backend !== 'docker' && backend !== 'podman') confinementError = 'target sandbox backend does not provide local workspace confinement.'
    else if (s.scope !== 'session') confinementError = 'target sandbox is not exclusive to this worker session.'
    else if (docker.some((d) => DANGEROUS_DOCKER_KEYS.some((key) => d?.[key] === true))) confinementError = 'target sandbox enables dangerous Docker isolation overrides.'
    else {
      // confinementQuery gives the job agent's sandbox exactly the tools a job is offered.
      const offered = config?.agents?.entries?.[agentId]?.tools?.sandbox?.tools?.allow ?? []
      const unconfined = offered.find((entry) => [...expandTools([entry])].some((name) => !CONFINED_TOOLS.has(name)))
      if (unconfined) confinementError = `target sandbox allows unclassified tool surface ${unconfined}.`
    }
    return { sandboxed: true, workspaceAccess: s.workspaceAccess, ...(confinementError ? { confinementError } : {}) }
  },
}

/** A path as one shell word (quoted when it holds anything but plain characters). */
const shellWord = (text) => (/^[\w./+-]+$/.test(text) ? text : `'${text.replace(/'/g, `'\\''`)}'`)

const lastLine = (text) => String(text ?? '').trim().split('\n').pop()

/** Runs `docker ...args`: its stdout, or throws with `code` (ENOENT: no docker command) and `stderr`. */
const runDocker = (args) => execFileSync('docker', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 })

/**
 * Asks docker, synchronously: the security adapter's collectWarnings answers with an array, which
 * callers read at once (docker answers these in milliseconds; 10 s bounds a daemon that hangs). `daemon()` → null when
 * a daemon answers, else `{ missing: 'cli' | 'access' | 'daemon', reason }`; `image(name)` →
 * null when the image is there, else the reason.
 */
export function dockerProbe(run = runDocker) {
  return {
    daemon() {
      try {
        run(['version', '--format', '{{.Server.Version}}'])
        return null
      } catch (error) {
        const reason = lastLine(error.stderr) || error.message
        if (error.code === 'ENOENT') return { missing: 'cli', reason: 'no docker command on PATH' }
        return { missing: /permission denied/i.test(reason) ? 'access' : 'daemon', reason }
      }
    },
    image(name) {
      try {
        run(['image', 'inspect', '--format', '{{.Id}}', name])
        return null
      } catch (error) {
        return lastLine(error.stderr) || error.message
      }
    },
  }
}

/**
 * What a docker sandbox of the job agent still needs here: `[{ checkId, missing, fix }]`, in
 * order, the first of docker's own problems only (no image can be looked at without a daemon).
 * `sandbox` is sandboxSettings' answer; `probe` dockerProbe's (a stub in tests).
 */
export function sandboxProblems(sandbox, probe = dockerProbe(), { script = IMAGE_SCRIPT } = {}) {
  if (String(sandbox.backend).toLowerCase() !== 'docker') return []
  const daemon = probe.daemon()
  if (daemon?.missing === 'cli') {
    return [{ checkId: 'docker_missing', missing: 'docker is not installed (no docker command on PATH)', fix: 'install it: Linux: sudo apt-get install docker.io; macOS: Docker Desktop (brew install --cask docker), then start it' }]
  }
  if (daemon?.missing === 'access') {
    return [{ checkId: 'docker_access', missing: `this user may not use docker (${daemon.reason})`, fix: 'sudo usermod -aG docker "$USER", then log in again (the gateway must run as a user docker lets in)' }]
  }
  if (daemon) {
    return [{ checkId: 'docker_down', missing: `no docker daemon answers (${daemon.reason})`, fix: 'start it: Linux: sudo systemctl start docker; macOS: open -a Docker' }]
  }
  const absent = probe.image(sandbox.image)
  if (!absent) return []
  if (sandbox.image === DEFAULT_SANDBOX_IMAGE && !sandbox.imageKey) {
    return [{ checkId: 'image_missing', missing: `OpenClaw's sandbox image ${sandbox.image} is missing (agent ${sandbox.agentId}'s sandbox runs it)`, fix: `bash ${shellWord(script)} (OpenClaw's documented build, docs/gateway/sandboxing/images-and-setup.md)` }]
  }
  return [{ checkId: 'image_missing', missing: `the image ${sandbox.image} (${sandbox.imageKey}) is missing`, fix: `docker pull ${sandbox.image} (or build it), or use OpenClaw's default image: openclaw config unset ${sandbox.imageKey}` }]
}

/** A problem as one line: what is missing and the command that fixes it. */
export const problemLine = (p) => `${p.missing}. Fix: ${p.fix}`

/**
 * An account's jobs with tools, checked: `{ policy }` or `{ error }` (jobToolPolicy's, with
 * OpenClaw's sandbox runtime when given, else configSandbox), `sandbox` (the job agent's
 * settings) and `problems` (sandboxProblems, for an account whose job turns run in the sandbox;
 * none asked of docker with `probe: false`).
 */
export function checkJobSandbox(cfg, account, { sandbox = configSandbox, probe } = {}) {
  const settings = sandboxSettings(cfg, account.agentId)
  try {
    const policy = jobToolPolicy(account, { cfg, sandbox })
    return { policy, sandbox: settings, problems: policy.sandboxed && probe !== false ? sandboxProblems(settings, probe) : [] }
  } catch (error) {
    return { error, sandbox: settings, problems: [] }
  }
}
