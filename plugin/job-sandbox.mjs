// One throwaway sandbox per job. A sandboxed job turn runs in OpenClaw's docker sandbox with a
// workspace of its own, `<state dir>/pier/jobs/<session token>`, made empty for the job and
// mounted at /workspace, so nothing one job writes is visible to another; the workspace is
// removed when the job ends.
import { mkdir, chown, rm } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { confinementQuery, ownWorkspaceError } from './job-policy.mjs'

/**
 * The owner of a job's workspace when the gateway runs as root: nobody (65534). OpenClaw runs a
 * docker sandbox as its workspace's owner, so a root-owned workspace would make a stranger's
 * commands root in their container. A gateway of an ordinary user gives its own uid, already
 * unprivileged.
 */
export const JOB_UID = 65534

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
export async function openJobSandbox(api, { cfg, agentId, sessionKey, offered, root }) {
  const workspaceDir = join(root, sessionKey.split(':').pop())
  const box = { workspaceDir }
  box.close = () => rm(workspaceDir, { recursive: true, force: true })
  const sandbox = api.runtime?.sandbox
  if (typeof sandbox?.resolveWorkspaceAuthority !== 'function') return { ...box, refusal: 'this OpenClaw has no sandbox runtime' }
  try {
    await mkdir(root, { recursive: true, mode: 0o700 })
    await mkdir(workspaceDir, { mode: 0o700 })
    if (process.getuid?.() === 0) await chown(workspaceDir, JOB_UID, JOB_UID)
    const authority = sandbox.resolveWorkspaceAuthority(confinementQuery(cfg, agentId, offered, sessionKey))
    if (!authority?.sandboxed) return { ...box, refusal: 'the job agent is no longer sandboxed' }
    const refusal = authority.confinementError ?? ownWorkspaceError(authority, agentId)
    return refusal ? { ...box, refusal } : box
  } catch (error) {
    return { ...box, refusal: String(error?.message ?? error) }
  }
}

/** OpenClaw's error when a turn failed because it could not make its sandbox (no docker, no image, …), else null. */
export function sandboxUnavailable(error) {
  for (let e = error, depth = 0; e && depth < 8; e = e.cause, depth++) {
    if (e.name === 'SandboxProvisioningError' || e.code === 'sandbox_provisioning') return e
  }
  return null
}
