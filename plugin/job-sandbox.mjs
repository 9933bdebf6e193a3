// One throwaway sandbox per job. A sandboxed job turn runs in OpenClaw's docker sandbox with a
// workspace of its own, `<state dir>/pier/jobs/<session token>`, made empty for the job and
// mounted at /workspace, so nothing one job writes is visible to another. When the job ends
// (answered, failed, timed out, cancelled, or drained at a stop) its container, its workspace
// and OpenClaw's per-session skills copy are removed; what a gateway killed mid-job left is
// removed when it next starts. OpenClaw would keep session containers for a day (prune.idleHours)
// and has no plugin API to remove one, so this asks docker directly, by the labels OpenClaw
// puts on its containers.
import { execFile } from 'node:child_process'
import { mkdir, chown, lstat, readdir, rm, stat } from 'node:fs/promises'
import { dirname, join, relative, sep } from 'node:path'
import { promisify } from 'node:util'
import { confinementQuery, ownWorkspaceError, sandboxLimitsError } from './job-policy.mjs'

const run = promisify(execFile)
const docker = async (args) => (await run('docker', args, { timeout: 30_000, maxBuffer: 8 * 1024 * 1024 })).stdout

/**
 * The owner of a job's workspace when the gateway runs as root: nobody (65534). OpenClaw runs a
 * docker sandbox as its workspace's owner, so a root-owned workspace would make a stranger's
 * commands root in their container. A gateway of an ordinary user gives its own uid, already
 * unprivileged.
 */
const JOB_UID = 65534

/** Where sandboxed jobs' workspaces live: `jobs` beside the job agent's workspace. */
export function jobSandboxRoot(jobWorkspaceDir) {
  return join(dirname(jobWorkspaceDir), 'jobs')
}

/**
 * Makes the job's workspace and asks OpenClaw again whether the sandbox confines the job
 * (api.runtime.sandbox.resolveWorkspaceAuthority, for the job's own session: the config may
 * have changed since the account started). Resolves with `{ workspaceDir }`, or `{ refusal }`
 * saying why the job must not run; either way close() removes what was made.
 *
 * The container itself is made by the turn. One prepared beforehand (prepareWorkspaceAuthority)
 * differs from the turn's by its skill mounts, and OpenClaw then refuses to reuse it ("Sandbox
 * mounts changed"). A sandbox the turn cannot make fails the turn before the model is called
 * (sandboxUnavailable).
 */
export async function openJobSandbox(api, { cfg, agentId, sessionKey, offered, root, disk = jobDiskLimit() }) {
  const workspaceDir = join(root, sessionKey.split(':').pop())
  const box = { workspaceDir }
  // The container's scope key is the session key, and `:workspace:<hash>` after it when the
  // workspace is not the agent's own (always, here).
  const own = (key) => key === sessionKey || key.startsWith(`${sessionKey}:`)
  box.close = () => track(removeSandboxes({ own, stateDir: dirname(dirname(root)), dirs: [workspaceDir], unmount: box.mounted }))
  const sandbox = api.runtime?.sandbox
  if (typeof sandbox?.resolveWorkspaceAuthority !== 'function') return { ...box, refusal: 'this OpenClaw has no sandbox runtime' }
  try {
    await mkdir(root, { recursive: true, mode: 0o700 })
    await mkdir(workspaceDir, { mode: 0o700 })
    if (process.getuid?.() === 0) {
      await chown(workspaceDir, JOB_UID, JOB_UID)
      box.mounted = await mountJobDisk(workspaceDir, disk)
    }
    const authority = sandbox.resolveWorkspaceAuthority(confinementQuery(cfg, agentId, offered, sessionKey))
    if (!authority?.sandboxed) return { ...box, refusal: 'the job agent is no longer sandboxed' }
    const refusal = authority.confinementError ?? ownWorkspaceError(authority, agentId) ?? sandboxLimitsError(cfg, agentId)
    return refusal ? { ...box, refusal } : box
  } catch (error) {
    return { ...box, refusal: String(error?.message ?? error) }
  }
}

/**
 * The most a job's workspace may hold. It is a directory of this host mounted into the container
 * (the rest of the container is a read-only root and tmpfs mounts, which count against its memory
 * limit), and docker has no size limit for a bind mount, so the plugin measures it while the job
 * runs and ends the job when it holds more: the account's jobDiskMb (1024 MiB by default), and at
 * most 100 000 files and directories (a filler of empty files takes inodes).
 */
export function jobDiskLimit(mb = 1024) {
  return { bytes: (Number.isInteger(mb) && mb > 0 ? mb : 1024) * 1024 * 1024, entries: 100_000 }
}

/**
 * On Linux, a gateway run as root gives each job's workspace a filesystem of its own: a tmpfs of
 * the disk limit's size and file count (owned by the job's user), so a filler gets "No space left
 * on device" at the limit instead of taking this host's disk. Its pages count against the
 * writer's memory (the container's limit). Resolves true when mounted; false where mount is not
 * possible (not root, no CAP_SYS_ADMIN, not Linux): the measuring below is then the bound.
 */
async function mountJobDisk(dir, limit = jobDiskLimit()) {
  if (process.platform !== 'linux' || process.getuid?.() !== 0) return false
  const options = `size=${limit.bytes},nr_inodes=${limit.entries + 1},mode=0700,uid=${JOB_UID},gid=${JOB_UID},nosuid,nodev`
  return run('mount', ['-t', 'tmpfs', '-o', options, 'pier-job', dir], { timeout: 10_000 }).then(
    () => true,
    () => false,
  )
}

/** Unmounts a job workspace's tmpfs (lazily: a process still in it cannot keep it). */
const unmountJobDisk = (dir) => run('umount', ['-l', dir], { timeout: 10_000 }).catch(() => {})

/**
 * What `dir` holds: allocated bytes (a sparse file counts what it really takes) and entries,
 * stopping once at `limit` (either figure: a full workspace tmpfs holds exactly its size).
 */
export async function diskUsage(dir, limit = { bytes: Infinity, entries: Infinity }) {
  let bytes = 0
  let entries = 0
  const stack = [dir]
  while (stack.length) {
    const names = await readdir(stack.pop(), { withFileTypes: true }).then(
      (list) => list,
      () => [],
    )
    for (const entry of names) {
      entries++
      const path = join(entry.parentPath ?? entry.path, entry.name)
      bytes += await lstat(path).then(
        (st) => st.blocks * 512,
        () => 0,
      )
      if (entry.isDirectory()) stack.push(path)
      if (bytes >= limit.bytes || entries >= limit.entries) return { bytes, entries, over: true }
    }
  }
  return { bytes, entries, over: false }
}

/**
 * Measures a job's workspace every `interval` ms (each walk after the last one ended) and calls
 * `onOver(usage)` once it holds `limit` or more; returns stop(). What a job can write between
 * two walks is the overshoot (sandbox.test.mjs measures it).
 */
export function watchJobDisk(dir, { limit = jobDiskLimit(), interval = 250, onOver }) {
  let stopped = false
  let timer = null
  const tick = async () => {
    if (stopped) return
    const usage = await diskUsage(dir, limit).catch(() => ({ over: false }))
    if (stopped) return
    if (usage.over) {
      stopped = true
      onOver(usage)
      return
    }
    timer = setTimeout(tick, interval)
  }
  timer = setTimeout(tick, interval)
  return () => {
    stopped = true
    clearTimeout(timer)
  }
}

/** OpenClaw's error when a turn failed because it could not make its sandbox (no docker, no image, …), else null. */
export function sandboxUnavailable(error) {
  for (let e = error, depth = 0; e && depth < 8; e = e.cause, depth++) {
    if (e.name === 'SandboxProvisioningError' || e.code === 'sandbox_provisioning') return e
  }
  return null
}

const pending = new Set()
function track(promise) {
  pending.add(promise)
  const done = () => pending.delete(promise)
  promise.then(done, done)
  return promise
}

/** Resolves once every removal under way has ended (a drain waits for it). */
export async function sandboxesIdle() {
  while (pending.size) await Promise.allSettled([...pending])
}

/** OpenClaw's sandbox containers as `{ id, key, createdAtMs }` (its labels). */
async function sandboxContainers() {
  const out = await docker(['ps', '-a', '--filter', 'label=openclaw.sandbox=1', '--format', '{{.ID}}\t{{.Label "openclaw.sessionKey"}}\t{{.Label "openclaw.createdAtMs"}}'])
  return out
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [id, key, created] = line.split('\t')
      return { id, key: key ?? '', createdAtMs: Number(created) || 0 }
    })
}

const inside = (root, path) => {
  const rel = relative(root, path)
  return rel !== '' && !rel.startsWith('..') && !rel.startsWith(sep)
}

/**
 * Removes the sandbox containers whose scope key `own(key)` accepts (and `mounts(sources)`,
 * when given), OpenClaw's skills copy each one mounted from under the state dir, and `dirs`.
 */
async function removeSandboxes({ own, mounts = () => true, stateDir, dirs = [], unmount = false }) {
  const skillsRoot = join(stateDir, 'sandbox', 'skills-workspaces')
  const copies = new Set()
  try {
    // No docker answering: it has no container of the job's to remove (a later start's sweep
    // takes any it had), and the job was already answered RUNTIME_UNAVAILABLE if it needed one.
    const candidates = (await sandboxContainers().catch(() => [])).filter((c) => own(c.key))
    if (!candidates.length) return { containers: 0, dirs: dirs.length }
    const inspected = JSON.parse(await docker(['inspect', ...candidates.map((c) => c.id)]))
    const doomed = inspected.filter((c) => mounts((c.Mounts ?? []).map((m) => m.Source)))
    for (const c of doomed) {
      for (const m of c.Mounts ?? []) if (inside(skillsRoot, m.Source)) copies.add(join(skillsRoot, relative(skillsRoot, m.Source).split(sep)[0]))
    }
    // A removal racing this one (the job's end, its turn's end) may have taken one already.
    if (doomed.length) await docker(['rm', '-f', ...doomed.map((c) => c.Id)]).catch((error) => {
      if (!/No such container/i.test(String(error?.stderr ?? error?.message))) throw error
    })
    return { containers: doomed.length, dirs: dirs.length }
  } finally {
    // The files go whether or not docker answered (a workspace's tmpfs with them).
    if (unmount) for (const dir of dirs) await unmountJobDisk(dir)
    for (const dir of [...dirs, ...copies]) await rm(dir, { recursive: true, force: true })
  }
}

const swept = new Set()

/**
 * Removes what an earlier gateway process left of its jobs' sandboxes (killed mid-job): the
 * containers of this agent's job sessions that mount a workspace under `root`, and the
 * workspaces there, made before this process started, so no job in flight here is touched,
 * nor another gateway's (its workspaces are elsewhere). Once per root and process.
 */
export async function sweepJobSandboxes({ agentId, root, since = Date.now() - process.uptime() * 1000 }) {
  if (swept.has(root)) return { containers: 0, dirs: 0 }
  swept.add(root)
  const prefix = `agent:${agentId}:pier:`.toLowerCase()
  const dirs = []
  for (const name of await readdir(root).catch(() => [])) {
    const dir = join(root, name)
    if ((await stat(dir)).mtimeMs < since) dirs.push(dir)
  }
  const listed = await sandboxContainers().catch(() => [])
  const old = new Set(listed.filter((c) => c.key.startsWith(prefix) && c.createdAtMs < since).map((c) => c.key))
  const unmount = process.getuid?.() === 0
  if (!old.size) return track(Promise.all(dirs.map(async (dir) => (unmount && (await unmountJobDisk(dir)), rm(dir, { recursive: true, force: true })))).then(() => ({ containers: 0, dirs: dirs.length })))
  return track(removeSandboxes({ own: (key) => old.has(key), mounts: (sources) => sources.some((s) => inside(root, s)), stateDir: dirname(dirname(root)), dirs, unmount }))
}
