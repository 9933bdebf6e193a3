// `openclaw channels add --channel pier`: OpenClaw's generic setup flags (non-interactive) and
// the setup wizard (interactive) both end in `applyAccountConfig`, which writes the account
// under channels.pier (or channels.pier.accounts.<id>).
import { CHANNEL_ID, DEFAULT_ACCOUNT_ID, channelSection, legacySection, resolveAccount } from './config.mjs'

/** The env SecretRef `--use-env` writes: the token stays in the gateway's environment. */
export const ENV_TOKEN_REF = { source: 'env', provider: 'default', id: 'PIER_TOKEN' }

/** Setup input (generic flags / wizard keys) → Pier config keys. */
export function accountPatch(input = {}) {
  const patch = {}
  if (input.url || input.httpUrl) patch.natsUrl = String(input.url || input.httpUrl).trim()
  if (input.useEnv) patch.token = { ...ENV_TOKEN_REF }
  else if (input.token) patch.token = input.token
  if (input.userId) patch.user = String(input.userId)
  if (input.password) patch.password = input.password
  if (input.name) patch.name = String(input.name)
  // Wizard-only keys, named after the config keys they set.
  for (const key of ['workerId', 'walletAddress', 'subject']) {
    if (typeof input[key] === 'string' && input[key].trim()) patch[key] = input[key].trim()
  }
  return patch
}

export function validateInput({ input = {} }) {
  if (input.tokenFile) {
    return 'pier: --token-file is not supported; use --use-env (PIER_TOKEN) or a SecretRef for channels.pier.token'
  }
  if (input.token && input.useEnv) return 'pier: give either --token or --use-env, not both'
  const url = input.url || input.httpUrl
  if (url && !String(url).split(',').every((u) => /^(nats|tls|ws|wss):\/\/\S+$/i.test(u.trim()))) {
    return `pier: --url must be nats://, tls://, ws:// or wss:// URLs separated by commas`
  }
  return null
}

/** Writes one account, keeping everything else in channels.pier; drops the legacy config it replaces. */
export function applyAccountConfig({ cfg, accountId, input }) {
  const id = accountId || DEFAULT_ACCOUNT_ID
  const section = { ...(channelSection(cfg) ?? legacySection(cfg) ?? {}) }
  const patch = { ...accountPatch(input), enabled: true }
  if (id === DEFAULT_ACCOUNT_ID && !section.accounts) {
    Object.assign(section, patch)
  } else {
    section.accounts = { ...section.accounts, [id]: { ...section.accounts?.[id], ...patch } }
  }
  const next = { ...cfg, channels: { ...cfg.channels, [CHANNEL_ID]: section } }
  // The config moved to channels.pier: leave no second copy to drift from it.
  const entry = cfg.plugins?.entries?.['pier-connector']
  if (entry?.config && !channelSection(cfg)) {
    const { config: _moved, ...rest } = entry
    next.plugins = { ...cfg.plugins, entries: { ...cfg.plugins.entries, 'pier-connector': rest } }
  }
  return next
}

/** The interactive wizard: NATS URL, token (or PIER_TOKEN), worker id and wallet. */
export const setupWizard = {
  channel: CHANNEL_ID,
  status: {
    configuredLabel: 'configured',
    unconfiguredLabel: 'needs a NATS URL',
    configuredHint: 'takes Pier jobs with this agent',
    unconfiguredHint: 'take paid jobs from the Pier marketplace',
    resolveConfigured: ({ cfg }) => Boolean(channelSection(cfg) ?? legacySection(cfg)),
  },
  introNote: {
    title: 'Pier',
    lines: [
      'Pier hands out jobs over NATS; this agent answers them and earns the rewards.',
      'You need the NATS URL of your Pier server and, if it requires one, a token.',
      "Jobs are strangers' tasks: they run in an empty workspace of their own, with no tools, and never see your agent's files, notes or chats. channels.pier.toolsAllow adds tools (group:web is the safe opt-in).",
      'For a job agent of its own (its own memory, model and tool policy): openclaw agents add pier-jobs --workspace <state dir>/pier/job-workspace --non-interactive.',
    ],
  },
  stepOrder: 'text-first',
  credentials: [
    {
      inputKey: 'token',
      providerHint: 'pier',
      credentialLabel: 'NATS token',
      preferredEnvVar: 'PIER_TOKEN',
      envPrompt: 'PIER_TOKEN is set. Use it (stored as a reference, not a copy)?',
      keepPrompt: 'A Pier token is configured. Keep it?',
      inputPrompt: 'NATS token (leave empty if the server needs none)',
      inspect: ({ cfg, accountId }) => {
        const token = resolveAccount(cfg, accountId, {}).addonConfig.token
        return {
          accountConfigured: Boolean(channelSection(cfg)),
          hasConfiguredValue: token !== undefined,
          envValue: process.env.PIER_TOKEN || undefined,
        }
      },
      applyUseEnv: ({ cfg, accountId }) => applyAccountConfig({ cfg, accountId, input: { useEnv: true } }),
      // `value` is what the user chose: a SecretRef object (env/file/exec) or a typed token.
      // Store that, never `resolvedValue`, or a reference would land in the config as plain text.
      applySet: ({ cfg, accountId, value, resolvedValue }) => {
        const token = value && typeof value === 'object' ? value : value || resolvedValue
        return token ? applyAccountConfig({ cfg, accountId, input: { token } }) : cfg
      },
    },
  ],
  textInputs: [
    {
      inputKey: 'url',
      message: 'NATS URL of the Pier server',
      placeholder: 'wss://pier.gholl.com/nexus',
      required: true,
      currentValue: ({ cfg, accountId }) => resolveAccount(cfg, accountId, {}).addonConfig.natsUrl,
      validate: ({ value }) => validateInput({ input: { url: value } }) ?? undefined,
      applySet: ({ cfg, accountId, value }) => applyAccountConfig({ cfg, accountId, input: { url: value } }),
    },
    {
      inputKey: 'workerId',
      message: 'Worker id (shown to job publishers)',
      placeholder: 'agent-001',
      currentValue: ({ cfg, accountId }) => resolveAccount(cfg, accountId, {}).addonConfig.workerId,
      applySet: ({ cfg, accountId, value }) => applyAccountConfig({ cfg, accountId, input: { workerId: value } }),
    },
    {
      inputKey: 'walletAddress',
      message: 'Wallet address for rewards (optional)',
      placeholder: '0xABC123',
      currentValue: ({ cfg, accountId }) => resolveAccount(cfg, accountId, {}).addonConfig.walletAddress,
      applySet: ({ cfg, accountId, value }) => (value ? applyAccountConfig({ cfg, accountId, input: { walletAddress: value } }) : cfg),
    },
  ],
  completionNote: {
    title: 'Pier',
    lines: ['Restart the gateway (or let it reload) and check: openclaw channels status --probe'],
  },
}
