// Where the native addon cannot load: one line naming the platform, the supported ones and how
// to build from source, in the CLI (exit 2), from require('pier-connector') and in the plugin
// (through the service health), never napi's stack trace. The platform is simulated with
// fixtures/fake-platform.cjs (process.platform / process.arch overridden before anything loads).
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { readFileSync, mkdtempSync, writeFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseTriple } from '@napi-rs/cli'
import { useNats } from './helpers/addon.mjs'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const CLI = join(ROOT, 'cli', 'pier-connector.js')
const FAKE = join(ROOT, '__test__', 'fixtures', 'fake-platform.cjs')
const PLUGIN = join(ROOT, '__test__', 'fixtures', 'plugin-on-platform.mjs')
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'))
const SUPPORTED = pkg.napi.targets.map((t) => parseTriple(t).platformArchABI)

/** Runs node with the fake platform preloaded. */
function runAs(platform, args, env = {}) {
  const result = spawnSync(process.execPath, ['--require', FAKE, ...args], {
    encoding: 'utf8',
    env: { ...process.env, PIER_FAKE_PLATFORM: platform, ...env },
    timeout: 30_000,
  })
  return { code: result.status, stdout: result.stdout, stderr: result.stderr }
}

/** The one-line contract: no napi text, no stack frames, the platform and every supported one. */
function assertClearLine(text, platform) {
  const lines = text.trimEnd().split('\n')
  assert.equal(lines.length, 1, `expected one line, got:\n${text}`)
  assert.doesNotMatch(text, /npm has a bug|Cannot find native binding|\n\s+at /)
  assert.match(text, new RegExp(`\\b${platform}\\b`))
  assert.match(text, /build from source: install Rust, clone https:\/\/github\.com\/\S+\/pier-connector, run `npm ci && npm run build`/)
}

const nats = useNats()

describe('unsupported platform', () => {
  it('the CLI prints one line naming the platform, the supported list and how to build, and exits 2', () => {
    const r = runAs('linux-riscv64', [CLI, 'status', '--nats-url', 'nats://127.0.0.1:1'])
    assert.equal(r.code, 2, r.stderr)
    assert.equal(r.stdout, '')
    assertClearLine(r.stderr, 'linux-riscv64-gnu')
    assert.match(r.stderr, /^pier-connector: PIER_UNSUPPORTED_PLATFORM: no prebuilt pier-connector binary for linux-riscv64-gnu/)
    assert.match(r.stderr, new RegExp(`supported: ${SUPPORTED.join(', ')}\\)`))
    assert.equal(SUPPORTED.length, 7)
  })

  it('--version and --help still work there', () => {
    const version = runAs('freebsd-x64', [CLI, '--version'])
    assert.equal(version.code, 0, version.stderr)
    assert.equal(version.stdout, `pier-connector ${pkg.version}\n`)
    const help = runAs('freebsd-x64', [CLI, '--help'])
    assert.equal(help.code, 0)
    assert.match(help.stdout, /--version/)
  })

  it("require('pier-connector') loads nothing; its first use throws the same one line, with a stable code and no napi stack", () => {
    const script = `const addon = require(${JSON.stringify(ROOT)}); try { addon.PierWorker } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message, stack: e.stack, cause: e.cause === undefined, napi: /Cannot find native binding/.test(e.napiError?.message) })) }`
    const r = runAs('win32-ia32', ['-e', script])
    const error = JSON.parse(r.stdout)
    assert.equal(error.code, 'PIER_UNSUPPORTED_PLATFORM')
    assertClearLine(error.message, 'win32-ia32-msvc')
    assert.equal(error.stack, error.message)
    // No `cause`: hosts print cause chains (OpenClaw appends them to the service health line).
    assert.equal(error.cause, true)
    assert.equal(error.napi, true, 'napi\'s error stays reachable for debugging')
  })

  it('a supported platform whose binary package is missing says so, naming the package', () => {
    const r = runAs('darwin-arm64', [CLI, 'status'])
    assert.equal(r.code, 2)
    assertClearLine(r.stderr, 'darwin-arm64')
    assert.match(r.stderr, /PIER_ADDON_MISSING: the pier-connector binary for darwin-arm64 is not installed \(package @pier-connector\/binding-darwin-arm64/)
  })

  it('a binary that exists but cannot load is named with the loader\'s reason', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pier-broken-'))
    try {
      const broken = join(dir, 'pier-connector.linux-x64-gnu.node')
      writeFileSync(broken, 'not an ELF file')
      const r = runAs('', [CLI, 'status'], { NAPI_RS_NATIVE_LIBRARY_PATH: broken })
      assert.equal(r.code, 2)
      assert.equal(r.stderr.trimEnd().split('\n').length, 1, r.stderr)
      assert.match(r.stderr, /PIER_ADDON_LOAD: the pier-connector binary for linux-x64-gnu failed to load: .*(invalid ELF header|file too short)/)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('the plugin still registers; its service start fails with the one line, reported through serviceHealth', () => {
    const r = runAs('linux-riscv64', [PLUGIN], { PIER_NATS_URL: nats.server.url })
    assert.equal(r.code, 0, r.stderr)
    const seen = JSON.parse(r.stdout)
    assert.match(seen.addonLoadError, /^PIER_UNSUPPORTED_PLATFORM: /)
    assert.deepEqual(seen.services, ['pier-connector'])
    assert.deepEqual(seen.tools, ['pier_publish'])
    assert.equal(seen.commands, 1)
    assert.equal(seen.start.ok, false)
    assertClearLine(seen.start.message, 'linux-riscv64-gnu')
    assert.equal(seen.start.stack, seen.start.message)
    assert.deepEqual(seen.health, [{ reportFailure: seen.start.message }])
    assert.ok(seen.lines.includes(`error [pier-connector] worker failed to start: ${seen.start.message}`), seen.lines.join('\n'))
    assert.match(seen.tool.error.message, /pier_publish failed: PIER_UNSUPPORTED_PLATFORM: /)
  })

  it('on this (supported) platform the same plugin loads the real addon', () => {
    const r = runAs('', [PLUGIN], { PIER_NATS_URL: nats.server.url })
    assert.equal(r.code, 0, r.stderr)
    const seen = JSON.parse(r.stdout)
    assert.equal(seen.addonLoadError, null)
    assert.deepEqual(seen.start, { ok: true })
    assert.deepEqual(seen.health, [{ clearFailure: true }])
    // The tool reached NATS through the real addon. Workers run through the channel's accounts
    // (not this service), so nobody listens on the subject.
    assert.equal(seen.tool.ok, false)
    assert.equal(seen.tool.error.code, 'PIER_NO_RESPONDERS')
  })
})
