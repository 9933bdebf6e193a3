// Install-and-load smoke test of packed packages, as a user gets them: installs every tarball in
// DIR (the main package and this platform's binary package) into an empty project with npm
// --offline, then requires the package, runs the CLI's --version and makes native calls.
// Usage: node scripts/smoke.mjs DIR. Run by the CI smoke job on each platform and by
// __test__/release.test.mjs here.
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readdirSync, writeFileSync, rmSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { createRequire } from 'node:module'
import assert from 'node:assert/strict'

const dist = resolve(process.argv[2] ?? 'dist')
const tarballs = readdirSync(dist).filter((f) => f.endsWith('.tgz')).map((f) => join(dist, f))
assert.ok(tarballs.some((f) => /[\\/]pier-connector-\d[^\\/]*\.tgz$/.test(f)), `no pier-connector-*.tgz in ${dist}`)

const project = mkdtempSync(join(tmpdir(), 'pier-smoke-'))
try {
  writeFileSync(join(project, 'package.json'), '{"private":true}\n')
  const npm = (args) =>
    execFileSync('npm', args, { cwd: project, stdio: 'inherit', shell: process.platform === 'win32' })
  npm(['install', '--offline', '--no-audit', '--no-fund', '--loglevel=error', ...tarballs])

  const pkgDir = join(project, 'node_modules', 'pier-connector')
  const version = createRequire(join(pkgDir, 'package.json'))('./package.json').version
  const require = createRequire(join(project, 'package.json'))
  const { PierWorker, PierClient } = require('pier-connector')
  assert.equal(typeof PierWorker, 'function')
  assert.equal(typeof PierClient, 'function')
  // Native calls: config validation in Rust, and a worker object built in Rust.
  assert.throws(() => new PierClient({ noSuchKey: 1 }), /^Error: PIER_CONFIG/)
  const echo = PierWorker.echo({ natsUrl: 'nats://127.0.0.1:4222' })
  assert.equal(echo.status().state, 'stopped')

  const cli = join(pkgDir, 'cli', 'pier-connector.js')
  const out = execFileSync(process.execPath, [cli, '--version'], { encoding: 'utf8' })
  assert.equal(out.trim(), `pier-connector ${version}`)

  const platformBinary = readdirSync(pkgDir).some((f) => f.endsWith('.node'))
  const from = platformBinary ? 'the main package (local build)' : 'its per-platform package'
  assert.ok(platformBinary || existsSync(join(project, 'node_modules', '@pier-connector')))
  console.log(`smoke: pier-connector ${version} installed offline and loaded on ${process.platform}-${process.arch}; binary from ${from}`)
} finally {
  rmSync(project, { recursive: true, force: true })
}
