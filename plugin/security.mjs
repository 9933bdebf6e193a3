// The channel's security adapter: what `openclaw security audit` (and doctor) say about Pier.
// A Pier account runs strangers' tasks, so the findings are about what such a task can reach.
// collectWarnings feeds doctor and the audit; collectAuditFindings only the full audit. An account
// whose jobs have tools in a docker sandbox gets one warning per thing missing here (docker, its
// daemon, the image), each with the command that fixes it.
import { JOB_AGENT_ID, CHANNEL_ID, resolveAccount } from './config.mjs'
import { describeJobTools } from './job-policy.mjs'
import { checkJobSandbox, configSandbox, problemLine } from './sandbox-doctor.mjs'
import { IDENTITY_FIX } from './status.mjs'

const USER_KEY = /^U[A-Z2-7]{55}$/

const finding = (checkId, severity, title, detail, remediation) => ({ checkId: `channels.${CHANNEL_ID}.${checkId}`, severity, title, detail, ...(remediation ? { remediation } : {}) })

/**
 * `getSandbox()` is OpenClaw's sandbox runtime in the gateway; the doctor and the audit run in
 * the CLI, which has none, and judge the job agent's sandbox by its config (configSandbox).
 * `probe` asks docker (sandbox-doctor.mjs; a stub in tests).
 */
export function createSecurityAdapter(getSandbox = () => undefined, { probe } = {}) {
  const check = (cfg, account, options) => checkJobSandbox(cfg, account, { sandbox: getSandbox() ?? configSandbox, ...options })
  return {
    // The audit hands over the inspected account (inspectAccount: no config); resolve it whole.
    collectWarnings({ cfg, accountId, account: inspected }) {
      const account = resolveAccount(cfg, accountId ?? inspected?.accountId)
      const out = []
      const id = account.accountId
      // In `openclaw doctor` too: what jobs with tools still need here (docker, the image).
      const { policy, error, sandbox, problems } = check(cfg, account, { probe })
      const host = policy?.tools.reachesHost ?? []
      if (error?.code === 'PIER_CONFIG') {
        out.push(finding('jobs.agent_missing', 'warn', `Pier account ${id}: its job agent is not configured`, error.message.replace(/^PIER_CONFIG: /, ''), 'Add the job agent to agents.entries (the account takes no jobs until then)'))
      } else if (error) {
        out.push(finding('jobs.host_tools', 'critical', `Pier account ${id}: job turns would get host tools`, error.message.replace(/^PIER_HOST_TOOLS: /, ''), `Remove them from channels.${CHANNEL_ID}.toolsAllow (the account takes no jobs until then)`))
      } else if (policy.unsafe) {
        out.push(finding('jobs.unsafe_host_tools', 'critical', `Pier account ${id}: strangers' jobs run host tools on this host`, `unsafeHostTools is set and toolsAllow gives job turns ${host.join(', ')} without a sandbox: anyone on the Pier marketplace can run commands and read or write files on this machine.`, `Remove unsafeHostTools and the host tools from toolsAllow, or run agent ${account.agentId} in OpenClaw's sandbox`))
      } else if (policy.sandboxed) {
        out.push(finding('jobs.sandboxed_tools', 'warn', `Pier account ${id}: job turns get sandboxed host tools`, `toolsAllow gives job turns ${host.join(', ')}, confined to agent ${account.agentId}'s sandbox.`, 'Keep the sandbox without network and workspace access unless a job needs them'))
      }
      for (const p of problems) out.push(finding(`jobs.${p.checkId}`, 'warn', `Pier account ${id}: jobs with tools cannot run here (image ${sandbox.image})`, problemLine(p)))
      if (account.agentId !== JOB_AGENT_ID) {
        out.push(finding('jobs.shared_agent', 'warn', `Pier account ${id}: jobs run as agent ${account.agentId}`, `Strangers' jobs run as agent ${account.agentId}, which may also serve your own chats. Job turns still get an empty workspace of their own, no bootstrap files, no owner rights and only the tools toolsAllow lists, but the agent's tool policy, model credentials and memory index are shared with it.`, `Give jobs an agent of their own: openclaw agents add ${JOB_AGENT_ID} --workspace <state dir>/pier/job-workspace --non-interactive, and leave channels.${CHANNEL_ID}.agentId unset (with a second agent, unscoped gateway calls name their agent)`))
      }
      const { maxDailySpend, maxDailyTokens, minJobPrice } = account.addonConfig
      if (account.configured && account.enabled && !(maxDailySpend > 0) && !(maxDailyTokens > 0) && !(minJobPrice > 0)) {
        out.push(finding('spend.unbounded', 'warn', `Pier account ${id}: no daily budget and no price floor`, `Neither maxDailySpend, maxDailyTokens nor minJobPrice is set: any stranger's job, paid or not, reaches the model, and nothing stops the day's jobs from costing more than they earn.`, `Set a daily budget (openclaw config set channels.${CHANNEL_ID}.maxDailySpend 5, in the model's cost unit; maxDailyTokens for a model without a cost config) and/or a price floor (channels.${CHANNEL_ID}.minJobPrice)`))
      }
      const names = (account.addonConfig.allowedSenders ?? []).filter((s) => !USER_KEY.test(String(s)))
      if (names.length) {
        out.push(finding('senders.self_declared', 'warn', `Pier account ${id}: allowedSenders matches self-declared names`, `allowedSenders lists ${names.length} name(s) that are matched against the job's meta.sender, which any requester can write: it keeps out nobody who knows a listed name.`, 'List requesters by their signing keys (U…) instead of names'))
      }
      return out
    },
    collectAuditFindings({ cfg, accountId, account: inspected }) {
      const account = resolveAccount(cfg, accountId ?? inspected?.accountId)
      const { policy, sandbox } = check(cfg, account, { probe: false })
      const out = []
      const { workerId, walletAddress } = account.addonConfig
      if (account.configured && account.enabled && !workerId && !walletAddress) {
        out.push(finding('identity.anonymous', 'info', `Pier account ${account.accountId}: paid jobs with nobody to pay`, `The worker answers as anonymous-worker with no walletAddress: requesters pay for its jobs and nothing names who earns them.`, IDENTITY_FIX))
      }
      return [
        ...out,
        finding(
          'jobs.reach',
          'info',
          `Pier account ${account.accountId}: what a stranger's job can reach`,
          `Jobs run as agent ${account.agentId} ${policy?.sandboxed ? 'each in a workspace of its own (<state dir>/pier/jobs/<job>, /workspace in its container; removed when the job ends)' : 'in the job workspace (<state dir>/pier/job-workspace)'}, without bootstrap files, as a non-owner, file access kept to that workspace, marked as external input. Tools offered: ${describeJobTools(policy, sandbox)}. pier_publish: never. Channel ${CHANNEL_ID}: only the job's own answer.`,
        ),
      ]
    },
  }
}
