// The `pier` channel: one account from the plugin config; outbound text addressed to a job id
// answers that job while it runs.
import { CHANNEL_ID, PLUGIN_ID } from './config.mjs'
import { openJobs } from './jobs.mjs'

export function pierAccount(cfg, accountId) {
  const config = cfg?.plugins?.entries?.[PLUGIN_ID]?.config ?? {}
  return {
    accountId: accountId ?? 'default',
    enabled: cfg?.plugins?.entries?.[PLUGIN_ID]?.enabled !== false,
    workerId: config.workerId || 'anonymous-worker',
    subject: config.subject || 'jobs.worker',
  }
}

export async function sendJobReply({ to, text }) {
  const job = openJobs.get(String(to ?? '').replace(/^pier:/, ''))
  if (!job) throw new Error(`no open Pier job ${to}`)
  job.answer(String(text ?? ''))
  return { messageId: `${job.id}:reply` }
}

export function createPierChannel({ createChatChannelPlugin, createChannelPluginBase }) {
  return createChatChannelPlugin({
    base: createChannelPluginBase({
      id: CHANNEL_ID,
      meta: {
        id: CHANNEL_ID,
        label: 'Pier',
        selectionLabel: 'Pier (NATS job marketplace)',
        blurb: 'Take paid jobs from the Pier marketplace and answer them with this agent.',
        aliases: [PLUGIN_ID],
      },
      capabilities: { chatTypes: ['direct'] },
      config: {
        listAccountIds: () => ['default'],
        resolveAccount: pierAccount,
        inspectAccount: (cfg, accountId) => {
          const account = pierAccount(cfg, accountId)
          return { enabled: account.enabled, configured: true }
        },
      },
      setup: { applyAccountConfig: ({ cfg }) => cfg },
    }),
    outbound: {
      attachedResults: { channel: CHANNEL_ID, sendText: sendJobReply },
    },
  })
}
