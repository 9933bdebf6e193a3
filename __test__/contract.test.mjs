// The addon's contract as JS sees it: its errors, and a Rust Config that takes every key the
// manifest declares. (That the generated descriptions of the config are current is checked
// where they are generated: `node scripts/gen-config.mjs --check`, and the index.d.ts diff in
// scripts/test.sh.)
import { it } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { PierWorker } from './helpers/addon.mjs'

const manifest = JSON.parse(readFileSync(new URL('../openclaw.plugin.json', import.meta.url), 'utf8'))
const schemaKeys = Object.keys(manifest.configSchema.properties).sort()

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

it('the package entry exports at run time exactly the values its types declare (load-addon.d.ts, index.d.ts)', () => {
  const declared = ['../index.d.ts', '../load-addon.d.ts']
    .flatMap((file) => [...readFileSync(new URL(file, import.meta.url), 'utf8').matchAll(/^export declare (?:const|function|class) (\w+)/gm)])
    .map((m) => m[1])
  const entry = createRequire(import.meta.url)('../load-addon.js')
  assert.deepEqual(Object.keys(entry).sort(), declared.sort())
  for (const name of declared) assert.notEqual(entry[name], undefined, name)
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
    if (key === 'jobModel') value = 'vllm/fake-model'
    // A number the schema bounds from below (ledgerMaxBytes, progressIntervalMs): its minimum.
    const { minimum } = manifest.configSchema.properties[key]
    if (typeof value === 'number' && typeof minimum === 'number' && value < minimum) value = minimum
    const { enum: choices } = manifest.configSchema.properties[key]
    if (choices) value = choices[choices.length - 1] // delivery: jetstream, logFormat: json
    const extra = { user: { password: 'p' }, password: { user: 'u' }, tlsCertFile: { tlsKeyFile: 'k' }, tlsKeyFile: { tlsCertFile: 'c' } }[key]
    assert.doesNotThrow(() => new PierWorker({ [key]: value, ...extra }, async () => ''), key)
  }
  assert.throws(() => new PierWorker({ notAKey: 1 }, async () => ''), /PIER_CONFIG: invalid pier-connector config: notAKey: unknown field/)
})
