// The `pier` channel: accounts from channels.pier (see config.mjs), each run as a worker through
// the channel account lifecycle (account.mjs), with setup (setup.mjs), status (status.mjs) and
// SecretRef support for its credentials. Outbound text addressed to a job id answers that job.
import { pierSecretContract } from './secrets.mjs'
import { CHANNEL_ID, PLUGIN_ID, listAccountIds, defaultAccountId, resolveAccount } from './config.mjs'
import { jobTurnForTarget } from './jobs.mjs'
import { startAccount } from './account.mjs'
import { runningAccounts } from './accounts.mjs'
import { applyAccountConfig, validateInput, setupWizard } from './setup.mjs'
import { buildAccountSnapshot, probeAccount, collectStatusIssues } from './status.mjs'
import { createSecurityAdapter } from './security.mjs'

/**
 * Outbound text on channel pier answers the job whose reply handle it is addressed to. Only
 * the job's own turn is told that handle (jobs.mjs), so nobody else can answer the job.
 */
export async function sendJobReply({ to, text }) {
  const turn = jobTurnForTarget(to)
  if (!turn) throw new Error("not an open Pier job's reply handle: only a job's own turn can answer it")
  turn.answer(String(text ?? ''))
  return { messageId: `${turn.handle}:reply` }
}

/**
 * @param {object} sdk `createChatChannelPlugin`, `createChannelPluginBase` and
 *   `createSimpleChannelSecretContract` from the host's SDK (passed in so tests need no host)
 * @param {object} runtime `getDeps()` → `{ api, log }` once registerFull has run
 */
export function createPierChannel(sdk, runtime = {}) {
  const { createChatChannelPlugin, createChannelPluginBase, createSimpleChannelSecretContract } = sdk
  const plugin = createChatChannelPlugin({
    base: createChannelPluginBase({
      id: CHANNEL_ID,
      meta: {
        id: CHANNEL_ID,
        label: 'Pier',
        selectionLabel: 'Pier (NATS job marketplace)',
        blurb: 'Take paid jobs from the Pier marketplace and answer them with this agent.',
        docsPath: '/channels/pier',
        aliases: [PLUGIN_ID],
      },
      capabilities: { chatTypes: ['direct'] },
      config: {
        listAccountIds,
        defaultAccountId,
        resolveAccount: (cfg, accountId) => resolveAccount(cfg, accountId),
        inspectAccount: (cfg, accountId) => {
          const a = resolveAccount(cfg, accountId)
          return { accountId: a.accountId, name: a.name, enabled: a.enabled, configured: a.configured, credentialSource: a.credentialSource }
        },
        isEnabled: (account) => account.enabled,
        isConfigured: (account) => account.configured,
        unconfiguredReason: () => 'no channels.pier config: run openclaw channels add --channel pier --url <nats-url>',
        disabledReason: () => 'disabled in channels.pier',
      },
      setup: { applyAccountConfig, validateInput },
      setupWizard,
    }),
    outbound: {
      attachedResults: { channel: CHANNEL_ID, sendText: sendJobReply },
    },
  })
  // createChannelPluginBase does not carry these adapters through: set them on the result.
  plugin.setupWizard ??= setupWizard
  // token/password/nkeySeed are SecretRef-capable (the same contract as secret-contract-api.mjs).
  if (createSimpleChannelSecretContract) plugin.secrets = pierSecretContract(createSimpleChannelSecretContract)
  plugin.status = { buildAccountSnapshot, probeAccount, collectStatusIssues }
  // A change under channels.pier restarts the changed accounts (each drains its jobs, then
  // starts with the new config) instead of replacing the whole plugin, which OpenClaw refuses
  // while any agent turn (a job) runs. Accounts share nothing but the addon, and an account's
  // stop settles all its work, so only the changed account restarts.
  plugin.reload = { configPrefixes: [`channels.${CHANNEL_ID}`], accountScopedRestart: true }
  plugin.security = createSecurityAdapter(() => runtime.getDeps?.()?.api?.runtime?.sandbox)
  // A target on this channel is a job id, and Pier has no directory of names. Without
  // looksLikeId, OpenClaw (2026.9.6, target-resolver resolveMessagingTarget) treats an id that
  // is not `user:…`, `#…`, `@…` or 6+ digits as a name, finds no directory entry and fails the
  // message tool with `Unknown target "<jobId>" for Pier.` before sendText is ever called.
  //
  // resolveOutboundSessionRoute → null: no session route for a job. Without it, a message tool
  // send gets OpenClaw's fallback route (outbound-session resolveFallbackSession), a direct
  // peer <jobId>, whose session with the default session.dmScope "main" is the agent's main
  // session (with the other scopes, a new stored session per job id): after delivery OpenClaw
  // appends the answer to that session's transcript and makes pier/<jobId> its delivery
  // context (its "last" route, a job long finished). A job's answer goes to its requester
  // over NATS; no conversation of the agent's should keep it.
  plugin.messaging = {
    targetResolver: { looksLikeId: () => true, hint: '<job reply handle>' },
    resolveOutboundSessionRoute: () => null,
  }
  plugin.gateway = {
    startAccount: async (ctx) => {
      const deps = runtime.getDeps?.()
      if (!deps) throw new Error('pier: the plugin runtime is not registered (registerFull did not run)')
      return startAccount(ctx, deps)
    },
    stopAccount: async (ctx) => {
      await runningAccounts.get(ctx.accountId)?.stop()
    },
  }
  return plugin
}
