// The config keys have three readers (Rust `Config`, the manifest's configSchema for OpenClaw,
// `PierConfig` in index.d.ts), all generated from the Rust `Config` (scripts/gen-config.mjs):
// this checks the generated outputs agree with the Rust reader.
import { it } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { PierWorker } from './helpers/addon.mjs'

const root = new URL('../', import.meta.url)
const manifest = JSON.parse(readFileSync(new URL('openclaw.plugin.json', root), 'utf8'))
const dts = readFileSync(new URL('index.d.ts', root), 'utf8')
const SHIM_ONLY = []

const schemaKeys = Object.keys(manifest.configSchema.properties).filter((k) => !SHIM_ONLY.includes(k)).sort()
const typeKeys = [.../export interface PierConfig \{([^}]*)\}/.exec(dts)[1].matchAll(/^\s+(\w+)\?:/gm)].map((m) => m[1]).sort()

it('index.d.ts PierConfig and the manifest configSchema list the same keys', () => {
  assert.deepEqual(typeKeys, schemaKeys)
})

it('errors are Error objects whose code property is the stable code (message keeps it as prefix)', async () => {
  const error = (() => {
    try {
      new PierWorker({ maxConcurrentJobs: 'many' }, async () => '')
    } catch (e) {
      return e
    }
  })()
  assert.ok(error instanceof Error)
  assert.equal(error.code, 'PIER_CONFIG')
  assert.match(error.message, /^PIER_CONFIG: .*maxConcurrentJobs/)
  const worker = new PierWorker({}, async () => '')
  const rejected = await worker.publish('x').catch((e) => e)
  assert.ok(rejected instanceof Error)
  assert.equal(rejected.code, 'PIER_NOT_RUNNING')
  assert.match(rejected.message, /^PIER_NOT_RUNNING: /)
})

it('the Rust config accepts every key the manifest declares, with its schema type', () => {
  const sample = { string: 'x', integer: 5, number: 1.5, boolean: false, array: ['a'] }
  for (const key of schemaKeys) {
    // A secret is a string or an OpenClaw SecretRef (anyOf); the addon takes the string.
    const { type = 'string' } = manifest.configSchema.properties[key]
    let value = sample[type]
    if (key === 'natsUrl') value = 'nats://127.0.0.1:4222'
    if (key === 'servers') value = ['nats://127.0.0.1:4222']
    // Keys are checked when the config is read: the README's test vector seed and key.
    if (key === 'signingSeed') value = 'SUAAOBYHA4DQOBYHA4DQOBYHA4DQOBYHA4DQOBYHA4DQOBYHA4DQOBZ5FE'
    if (key === 'trustedWorkers') value = ['UDVEU3DD4KOFECV66VIHWEZOYX4ZKR3WV27L464SIIPOU2IUI3JCYSJF']
    const { enum: choices } = manifest.configSchema.properties[key]
    if (choices) value = choices[choices.length - 1] // delivery: jetstream, logFormat: json
    const extra = { user: { password: 'p' }, password: { user: 'u' }, tlsCertFile: { tlsKeyFile: 'k' }, tlsKeyFile: { tlsCertFile: 'c' } }[key]
    assert.doesNotThrow(() => new PierWorker({ [key]: value, ...extra }, async () => ''), key)
  }
  assert.throws(() => new PierWorker({ notAKey: 1 }, async () => ''), /PIER_CONFIG: invalid pier-connector config: notAKey: unknown field/)
})
