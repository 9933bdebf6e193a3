#!/usr/bin/env node
// Derives every description of the config from config.schema.json, which is generated from the
// Rust `Config` (src/config.rs, the one declaration): the manifest's configSchema, uiHints,
// secret inputs and channel config schema (openclaw.plugin.json), the `PierConfig` type of
// index.d.ts (through src/binding/pier_config.rs, which napi turns into TypeScript), the CLI's
// flags (cli/config-flags.json) and the configuration table of docs/configuration.md.
//
//   node scripts/gen-config.mjs          rewrite the generated files
//   node scripts/gen-config.mjs --check  fail (exit 1) when any of them is stale
import { readFileSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { join } from 'node:path'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const read = (file) => readFileSync(join(ROOT, file), 'utf8')

/** The config keys in declaration order, each with what every output needs. */
export function configKeys(schema = JSON.parse(read('config.schema.json'))) {
  return Object.entries(schema.properties).map(([key, p]) => {
    const [label, ...rest] = p.description.split('\n\n')
    const types = [p.type].flat().filter((t) => t !== 'null')
    return {
      key,
      label: label.trim(),
      help: rest.join(' ').replace(/\s*\n\s*/g, ' ').trim(),
      type: types[0],
      items: p.items?.type,
      enum: p.enum,
      default: p.default ?? undefined,
      minimum: p.minimum,
      example: p.examples?.[0],
      sensitive: p['x-sensitive'] === true,
      advanced: p['x-advanced'] === true,
      host: p['x-host'] === true,
    }
  })
}

// An OpenClaw SecretRef (docs/plugins/manifest/config-and-secrets.md): validated before it is
// resolved, so the schema must accept it where a secret string goes.
const SECRET_REF = {
  type: 'object',
  additionalProperties: false,
  required: ['source', 'provider', 'id'],
  properties: {
    source: { type: 'string', enum: ['env', 'file', 'exec'] },
    provider: { type: 'string' },
    id: { type: 'string' },
  },
}

function jsonSchemaOf(k) {
  const base = { type: k.type }
  if (k.items) base.items = { type: k.items }
  if (k.enum) base.enum = k.enum
  if (k.minimum !== undefined) base.minimum = k.minimum
  // No JSON Schema `default`: OpenClaw would write every default into the config it hands the
  // plugin, making an untouched install look configured. The Rust Config applies the defaults.
  const hasDefault = k.default !== undefined && k.default !== '' && !(Array.isArray(k.default) && k.default.length === 0)
  const described = { description: `${k.label}: ${k.help}${hasDefault ? ` Default: ${JSON.stringify(k.default)}.` : ''}` }
  if (k.sensitive) return { ...described, anyOf: [{ type: 'string' }, SECRET_REF] }
  return { ...base, ...described }
}

function manifest(keys) {
  const m = JSON.parse(read('openclaw.plugin.json'))
  const properties = Object.fromEntries(keys.map((k) => [k.key, jsonSchemaOf(k)]))
  m.configSchema = { type: 'object', additionalProperties: false, properties }
  const hints = Object.fromEntries(
    keys.map((k) => {
      const hint = { label: k.label, help: k.help }
      if (k.example !== undefined) hint.placeholder = String(k.example)
      if (k.sensitive) hint.sensitive = true
      if (k.advanced) hint.advanced = true
      return [k.key, hint]
    }),
  )
  m.uiHints = hints
  m.configContracts = {
    ...m.configContracts,
    secretInputs: { paths: keys.filter((k) => k.sensitive).map((k) => ({ path: k.key, expected: 'string' })) },
  }
  // channels.pier and channels.pier.accounts.<id>: the same keys, each account a worker of its own.
  const account = {
    type: 'object',
    additionalProperties: false,
    properties: { enabled: { type: 'boolean' }, name: { type: 'string' }, ...properties },
  }
  // channels.pier is where OpenClaw users configure a channel: same hints there, plus the
  // channel's own keys.
  const channelHints = {
    enabled: { label: 'Enabled', help: 'Run this Pier account (false keeps its config but stops its worker).' },
    name: { label: 'Account name', help: 'A display name for this account in status output.' },
    defaultAccount: { label: 'Default account', help: 'The account pier_publish and /pier use first when several are configured.', advanced: true },
    accounts: { label: 'Accounts', help: 'Further workers by account id, each with its own identity and connection; keys set here override the ones above.', advanced: true },
    ...hints,
  }
  m.channelConfigs = {
    ...m.channelConfigs,
    pier: {
      ...m.channelConfigs?.pier,
      label: 'Pier',
      description: 'Take paid jobs from the Pier marketplace (NATS) and answer them with this agent.',
      uiHints: channelHints,
      schema: {
        ...account,
        properties: {
          ...account.properties,
          defaultAccount: { type: 'string' },
          accounts: { type: 'object', additionalProperties: account },
        },
      },
    },
  }
  return JSON.stringify(m, null, 2) + '\n'
}

const RUST_TYPES = {
  string: 'String',
  integer: 'f64',
  number: 'f64',
  boolean: 'bool',
}

function rustField(k) {
  const name = k.key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)
  const type = k.type === 'array' ? `Vec<${RUST_TYPES[k.items]}>` : RUST_TYPES[k.type]
  const docs = [`${k.label}: ${k.host ? 'OpenClaw only: ' : ''}${k.help}`]
  if (k.default !== undefined && k.default !== '' && !(Array.isArray(k.default) && !k.default.length)) {
    docs.push(`Default: \`${JSON.stringify(k.default)}\`.`)
  }
  const ts = k.enum ? `    #[napi(ts_type = "${k.enum.map((v) => `'${v}'`).join(' | ')}")]\n` : ''
  return `${docs.map((d) => `    /// ${d}`).join('\n')}\n${ts}    pub ${name}: Option<${k.enum ? 'String' : type}>,`
}

function bindingType(keys) {
  return `// Generated by scripts/gen-config.mjs from config.schema.json (the Rust \`Config\`): do not edit.
//! \`PierConfig\` for index.d.ts. The config crosses as JSON into the Rust \`Config\`, which
//! validates it; this struct only declares its TypeScript type.

use napi_derive::napi;

/// The worker's and client's config: every key is optional. Unknown or ill-typed keys are a
/// \`PIER_CONFIG\` error naming the key.
#[napi(object)]
#[allow(dead_code)] // declared for index.d.ts only
pub struct PierConfig {
${keys.map(rustField).join('\n')}
}
`
}

const kebab = (key) => key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)

function cliFlags(keys) {
  const flags = keys
    .filter((k) => !k.host)
    .map((k) => {
      const kind =
        k.type === 'boolean' ? (k.default === true ? 'negated' : 'boolean') : k.type === 'array' ? 'list' : k.type === 'integer' || k.type === 'number' ? 'number' : 'string'
      return { flag: kind === 'negated' ? `no-${kebab(k.key)}` : kebab(k.key), key: k.key, kind, help: k.label }
    })
  return JSON.stringify(flags, null, 2) + '\n'
}

function configTable(keys) {
  const cell = (v) => (v === undefined || v === '' || (Array.isArray(v) && !v.length) ? '–' : `\`${JSON.stringify(v).replace(/^"|"$/g, '')}\``)
  const rows = keys.map((k) => {
    const what = `${k.host ? 'OpenClaw only: ' : ''}${k.help}${k.sensitive ? ' (secret: string or SecretRef)' : ''}`
    return `| \`${k.key}\` | ${cell(k.default)} | ${what.replace(/\|/g, '\\|')} |`
  })
  return ['| key | default | meaning |', '| --- | --- | --- |', ...rows].join('\n')
}

const START = '<!-- config-table: generated by scripts/gen-config.mjs -->'
const END = '<!-- /config-table -->'
/** The page whose table is generated, between the two markers. */
const CONFIG_DOC = 'docs/configuration.md'

function configDoc(keys) {
  const text = read(CONFIG_DOC)
  const a = text.indexOf(START)
  const b = text.indexOf(END)
  if (a < 0 || b < a) throw new Error(`${CONFIG_DOC} needs the markers ${START} … ${END}`)
  return `${text.slice(0, a + START.length)}\n${configTable(keys)}\n${text.slice(b)}`
}

export function generatedFiles() {
  const keys = configKeys()
  return {
    'openclaw.plugin.json': manifest(keys),
    'src/binding/pier_config.rs': bindingType(keys),
    'cli/config-flags.json': cliFlags(keys),
    [CONFIG_DOC]: configDoc(keys),
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const check = process.argv.includes('--check')
  const stale = []
  for (const [file, text] of Object.entries(generatedFiles())) {
    let current = ''
    try {
      current = read(file)
    } catch {}
    if (current === text) continue
    if (check) stale.push(file)
    else writeFileSync(join(ROOT, file), text)
  }
  if (stale.length) {
    console.error(`stale generated config files: ${stale.join(', ')}\nrun: bash scripts/gen-config.sh`)
    process.exit(1)
  }
}
