// `openclaw channels add --channel pier`: OpenClaw's generic setup flags (non-interactive) and
// the setup wizard (interactive) both end in `applyAccountConfig`, which writes the account
// under channels.pier (or channels.pier.accounts.<id>).
import { randomBytes } from 'node:crypto'
import { CHANNEL_ID, DEFAULT_ACCOUNT_ID, channelSection, legacySection, resolveAccount, isSecretRef } from './config.mjs'
import { classifyTools, describeJobTools } from './job-policy.mjs'
import { checkJobSandbox, problemLine } from './sandbox-doctor.mjs'

/** The public Pier server (the config's natsUrl default). */
const DEFAULT_NATS_URL = 'wss://pier.gholl.com/nexus'

/** The env SecretRef `--use-env` writes: the token stays in the gateway's environment. */
const ENV_TOKEN_REF = { source: 'env', provider: 'default', id: 'PIER_TOKEN' }

/** The variable a signingSeed reference names unless the operator picks another. */
const SIGNING_SEED_VAR = 'PIER_SIGNING_SEED'

/** Setup input (generic flags / wizard keys) → Pier config keys. */
function accountPatch(input = {}) {
  const patch = {}
  if (input.url || input.httpUrl) patch.natsUrl = String(input.url || input.httpUrl).trim()
  if (input.useEnv) patch.token = { ...ENV_TOKEN_REF }
  else if (input.token) patch.token = input.token
  if (input.userId) patch.user = String(input.userId)
  if (input.password) patch.password = input.password
  if (input.name) patch.name = String(input.name)
  // A signing seed is a secret: only ever written as a SecretRef, never as its value.
  if (isSecretRef(input.signingSeed)) patch.signingSeed = { ...input.signingSeed }
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
  return url ? natsUrlProblem(url) : null
}

const NATS_SCHEMES = new Set(['nats:', 'tls:', 'ws:', 'wss:'])

/**
 * What is wrong with a server list (URLs separated by commas), or null. Each must parse as a
 * URL of a NATS scheme with a host, and hold no second URL: a prompt's pre-filled value with
 * another typed after it (`wss://…/nexusnats://my-server:4222`) is two URLs run together. The
 * URLs are never echoed: they may carry a login.
 */
function natsUrlProblem(list) {
  for (const text of String(list).split(',').map((u) => u.trim())) {
    let url
    try {
      url = new URL(text)
    } catch {
      return 'pier: --url must be nats://, tls://, ws:// or wss:// URLs separated by commas'
    }
    if (!NATS_SCHEMES.has(url.protocol) || !url.hostname || /\s/.test(text)) {
      return 'pier: --url must be nats://, tls://, ws:// or wss:// URLs separated by commas'
    }
    if (/[a-z][a-z0-9+.-]*:\/\//i.test(text.slice(url.protocol.length + 2))) {
      return 'pier: that is two URLs run together (a pre-filled value with another typed after it): clear the field and type one URL, or separate several with commas'
    }
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

/** A channels.pier account without `key` (the wizard's "no token", "a key of its own"). */
function withoutKey(cfg, accountId, key) {
  const id = accountId || DEFAULT_ACCOUNT_ID
  const section = { ...channelSection(cfg) }
  if (id === DEFAULT_ACCOUNT_ID && !section.accounts) {
    delete section[key]
  } else if (section.accounts?.[id]) {
    const { [key]: _removed, ...account } = section.accounts[id]
    section.accounts = { ...section.accounts, [id]: account }
  }
  return { ...cfg, channels: { ...cfg.channels, [CHANNEL_ID]: section } }
}

const withoutToken = (cfg, accountId) => withoutKey(cfg, accountId, 'token')

const isEnvRef = (value, name) => value && typeof value === 'object' && value.source === 'env' && (!name || value.id === name)

/** How a stored token or seed is shown: never its value. */
function describeToken(token) {
  if (token && typeof token === 'object') return `a reference to ${token.source === 'env' ? `the environment variable ${token.id}` : `${token.source}:${token.id}`}`
  return 'stored in the config'
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/

/**
 * The signing key, after the token. By default none is configured: the account makes a key of
 * its own on its first start and keeps it under the state dir (mode 0600), never in
 * openclaw.json. A signingSeed the operator brings is stored as a SecretRef to an environment
 * variable, never as typed text; a seed stored in plain text can be moved out.
 */
async function signingStep({ cfg, accountId, prompter }) {
  const stored = resolveAccount(cfg, accountId, {}).addonConfig.signingSeed
  const options = []
  if (isSecretRef(stored)) options.push({ value: 'keep', label: 'Keep the stored signing seed', hint: describeToken(stored) })
  options.push({
    value: 'own',
    label: stored === undefined ? 'A key of its own, made on first start (recommended)' : 'A key of its own instead: remove the stored signing seed',
    hint: 'kept under the state dir (mode 0600), never in openclaw.json; openclaw pier identity shows it',
  })
  options.push({ value: 'env', label: 'A signing seed from an environment variable', hint: `stored as a SecretRef (${SIGNING_SEED_VAR} unless you name another), not a copy` })
  if (stored !== undefined && !isSecretRef(stored)) {
    options.push({ value: 'keep', label: 'Keep the seed stored in plain text', hint: 'openclaw secrets audit flags it; better moved to an environment variable' })
  }
  const choice = await prompter.select({ message: 'Pier signing key (signs results and paid requests)', options, initialValue: options[0].value })
  switch (choice) {
    case 'own':
      return stored === undefined ? cfg : withoutKey(cfg, accountId, 'signingSeed')
    case 'env': {
      const name = await prompter.text({
        message: "Environment variable that holds the signing seed (in the gateway's environment)",
        initialValue: SIGNING_SEED_VAR,
        validate: (v) => (ENV_NAME.test(String(v ?? '').trim()) ? undefined : 'A variable name: letters, digits and _'),
      })
      return applyAccountConfig({ cfg, accountId, input: { signingSeed: { source: 'env', provider: 'default', id: name.trim() } } })
    }
    default:
      return cfg
  }
}

/** A worker id to offer: Enter takes it (anonymous-worker would earn for nobody). */
const suggestedWorkerId = () => `agent-${randomBytes(3).toString('hex')}`
let suggestion

/**
 * Esc goes back one step. OpenClaw's channel setup already goes back with ← (its prompt
 * navigation); Esc would cancel the whole setup. While the wizard runs, an Esc keypress is
 * turned into ← before the prompt sees it (listeners share the key object).
 */
const ESC_BACK = Symbol.for('pier-connector.setup-esc-back')
function escGoesBack(on) {
  const stdin = process.stdin
  if (!on) {
    globalThis[ESC_BACK]?.()
    return
  }
  if (globalThis[ESC_BACK] || !stdin?.isTTY) return
  const onKey = (_text, key) => {
    if (key?.name === 'escape' && !key.ctrl) key.name = 'left'
  }
  stdin.prependListener('keypress', onKey)
  globalThis[ESC_BACK] = () => {
    stdin.off('keypress', onKey)
    delete globalThis[ESC_BACK]
  }
}

/**
 * The token, last: keep the stored one (a re-run), use PIER_TOKEN when it is set (stored as a
 * reference), another environment variable, a typed token, or none (servers without auth).
 */
async function tokenStep({ cfg, accountId, prompter }) {
  const stored = resolveAccount(cfg, accountId, {}).addonConfig.token
  const env = process.env.PIER_TOKEN
  const options = []
  if (stored !== undefined) options.push({ value: 'keep', label: 'Keep the stored token', hint: describeToken(stored) })
  if (env && !isEnvRef(stored, 'PIER_TOKEN')) {
    options.push({ value: 'env', label: 'Use PIER_TOKEN (set in this shell)', hint: 'stored as a reference, not a copy: the gateway reads it from its own environment' })
  }
  options.push({ value: 'none', label: stored !== undefined ? 'No token: remove it (the server needs none)' : 'No token: the server needs none' })
  options.push({ value: 'type', label: 'Type a token', hint: 'stored in the config as typed; openclaw secrets audit flags it' })
  options.push({ value: 'var', label: 'Read it from another environment variable', hint: 'stored as a reference' })
  const choice = await prompter.select({ message: 'NATS token', options, initialValue: options[0].value })
  switch (choice) {
    case 'env':
      return applyAccountConfig({ cfg, accountId, input: { useEnv: true } })
    case 'none':
      return withoutToken(cfg, accountId)
    case 'type': {
      const token = await prompter.text({ message: 'NATS token', sensitive: true, validate: (v) => (String(v ?? '').trim() ? undefined : 'Type the token, or go back (Esc) and pick another way') })
      return applyAccountConfig({ cfg, accountId, input: { token: token.trim() } })
    }
    case 'var': {
      const name = await prompter.text({ message: 'Environment variable that holds the token (in the gateway\'s environment)', validate: (v) => (ENV_NAME.test(String(v ?? '').trim()) ? undefined : 'A variable name: letters, digits and _') })
      return applyAccountConfig({ cfg, accountId, input: { token: { source: 'env', provider: 'default', id: name.trim() } } })
    }
    default:
      return cfg
  }
}

/**
 * An account whose jobs have host tools (toolsAllow): the doctor's lines (sandbox-doctor.mjs),
 * what docker and the job agent's sandbox still need here, each with its fix, or where the jobs'
 * tools run when nothing is missing. Nothing for an account without them.
 */
export async function jobToolsNote({ cfg, accountId, prompter }, probe) {
  const account = resolveAccount(cfg, accountId, {})
  if (!classifyTools(account.toolsAllow).reachesHost.length) return
  const { policy, error, sandbox, problems } = checkJobSandbox(cfg, account, { probe })
  const lines = error ? [error.message] : problems.length ? problems.map(problemLine) : [`Job tools: ${describeJobTools(policy, sandbox)}${policy.sandboxed ? '; docker and the image are ready' : ''}`]
  await prompter.note?.(lines.join('\n'), 'Pier: jobs with tools')
}

/**
 * The interactive wizard (`openclaw channels add --channel pier` in a terminal): NATS URL
 * (Enter takes the public server), worker id (Enter takes a fresh one), wallet (optional),
 * then the token (optional; PIER_TOKEN offered when set; a re-run keeps the stored one), then
 * the signing key (a key of its own by default; a signingSeed only as a SecretRef); for an account
 * whose jobs have host tools, what their docker sandbox still needs (jobToolsNote).
 */
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
      "Jobs are strangers' tasks: they run in an empty workspace of their own, with no tools, and never see your agent's files, notes or chats. channels.pier.toolsAllow adds tools (group:web is the safe opt-in; exec and file tools need a docker sandbox, which openclaw doctor checks).",
      'For a job agent of its own (its own memory, model and tool policy): openclaw agents add pier-jobs --workspace <state dir>/pier/job-workspace --non-interactive.',
      'Enter takes the value shown; Esc goes back one step.',
    ],
  },
  prepare: () => {
    escGoesBack(true)
  },
  stepOrder: 'text-first',
  // The token is asked in finalize (tokenStep): OpenClaw's credential step cannot be left empty.
  credentials: [],
  textInputs: [
    // The defaults are placeholders, not pre-filled text: what a person types is the whole value
    // (typed into a pre-filled field it was appended: "wss://pier.gholl.com/nexusnats://…"),
    // and Enter on the empty field takes the default shown.
    {
      inputKey: 'url',
      message: 'NATS URL of the Pier server (Enter: the public marketplace)',
      placeholder: DEFAULT_NATS_URL,
      required: false,
      applyEmptyValue: true,
      currentValue: ({ cfg, accountId }) => resolveAccount(cfg, accountId, {}).addonConfig.natsUrl,
      validate: ({ value }) => (value ? validateInput({ input: { url: value } }) ?? undefined : undefined),
      applySet: ({ cfg, accountId, value }) => applyAccountConfig({ cfg, accountId, input: { url: value || DEFAULT_NATS_URL } }),
    },
    {
      inputKey: 'workerId',
      message: 'Worker id, shown to job publishers',
      required: false,
      applyEmptyValue: true,
      // One suggestion per process: the one shown is the one Enter takes.
      get placeholder() {
        return (suggestion ??= suggestedWorkerId())
      },
      currentValue: ({ cfg, accountId }) => resolveAccount(cfg, accountId, {}).addonConfig.workerId,
      applySet: ({ cfg, accountId, value }) => applyAccountConfig({ cfg, accountId, input: { workerId: value || (suggestion ??= suggestedWorkerId()) } }),
    },
    {
      inputKey: 'walletAddress',
      message: 'Wallet address for rewards (optional: Enter skips)',
      required: false,
      currentValue: ({ cfg, accountId }) => resolveAccount(cfg, accountId, {}).addonConfig.walletAddress,
      applySet: ({ cfg, accountId, value }) => (value ? applyAccountConfig({ cfg, accountId, input: { walletAddress: value } }) : cfg),
    },
  ],
  finalize: async ({ cfg, accountId, prompter }) => {
    const next = await signingStep({ cfg: await tokenStep({ cfg, accountId, prompter }), accountId, prompter })
    escGoesBack(false)
    await jobToolsNote({ cfg: next, accountId, prompter })
    return { cfg: next }
  },
  completionNote: {
    title: 'Pier',
    lines: ['Restart the gateway (or let it reload) and check: openclaw channels status --probe'],
  },
}
