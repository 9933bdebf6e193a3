// The published layout, built here the way the release pipeline builds it, for this platform
// only: a copy of the package with the built binary as the build job's artifact, `napi
// artifacts` (binary into npm/<platform>/) and `napi pre-publish --skip-optional-publish`
// (writes optionalDependencies, publishes nothing) with a napi config limited to this
// platform's target, as the CI smoke job does, then `npm pack` of the main and binary packages.
import { execFileSync } from 'node:child_process'
import { readFileSync, readdirSync, mkdtempSync, cpSync, mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseTriple } from '@napi-rs/cli'

/** The locally built binary (`pier-connector.<platform>.node` in the root) and its platform. */
export function builtBinary(root) {
  const file = readdirSync(root).find((f) => /^pier-connector\..+\.node$/.test(f))
  if (!file) throw new Error(`no pier-connector.<platform>.node in ${root}: run scripts/build.sh first`)
  return { file, platform: file.split('.')[1] }
}

export function buildPublishedLayout(root) {
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
  const { file, platform } = builtBinary(root)
  const triple = pkg.napi.targets.find((t) => parseTriple(t).platformArchABI === platform)
  if (!triple) throw new Error(`${platform} is not in napi.targets`)
  const napi = join(root, 'node_modules', '.bin', 'napi')
  const dir = mkdtempSync(join(tmpdir(), 'pier-published-'))
  const run = (cmd, args, cwd = dir) => execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
  try {
    // What the publish job checks out ...
    for (const f of [...pkg.files.filter((f) => !f.includes('*')), 'package.json', 'npm', 'scripts/check-publish.mjs']) {
      cpSync(join(root, f), join(dir, f), { recursive: true })
    }
    run('git', ['init', '-q'])
    run('git', ['-c', 'user.name=pier', '-c', 'user.email=pier@localhost', 'commit', '-q', '--allow-empty', '-m', pkg.version])
    // ... the build job's artifact, downloaded ...
    mkdirSync(join(dir, 'artifacts', `bindings-${triple}`), { recursive: true })
    cpSync(join(root, file), join(dir, 'artifacts', `bindings-${triple}`, file))
    // ... and napi's artifacts and pre-publish steps, for this one target (both refuse a partial
    // set of targets) and without publishing.
    writeFileSync(join(dir, 'napi.local.json'), JSON.stringify({ ...pkg.napi, targets: [triple] }))
    run(napi, ['artifacts', '-c', 'napi.local.json', '--output-dir', 'artifacts'])
    rmSync(join(dir, 'artifacts'), { recursive: true })
    // napi artifacts also copies each binary into the package root, where `files` would pack it
    // into the main package; the publish job removes them (check-publish.mjs refuses otherwise).
    rmSync(join(dir, file))
    run(napi, ['pre-publish', '-t', 'npm', '-c', 'napi.local.json', '--skip-optional-publish'])
    const dist = join(dir, 'dist')
    mkdirSync(dist)
    const pack = (cwd) => join(dist, run('npm', ['pack', '--silent', '--pack-destination', dist], cwd).trim().split('\n').pop())
    return {
      dir,
      dist,
      platform,
      binaryFile: file,
      main: pack(dir),
      binary: pack(join(dir, 'npm', platform)),
      cleanup: () => rmSync(dir, { recursive: true, force: true }),
    }
  } catch (error) {
    rmSync(dir, { recursive: true, force: true })
    throw error
  }
}

/** The files of a packed tarball, without the `package/` prefix. */
export function tarballFiles(tgz) {
  return execFileSync('tar', ['-tzf', tgz], { encoding: 'utf8' })
    .split('\n')
    .filter(Boolean)
    .map((f) => f.replace(/^package\//, ''))
}

/** The package.json inside a packed tarball. */
export function tarballManifest(tgz) {
  return JSON.parse(execFileSync('tar', ['-xzOf', tgz, 'package/package.json'], { encoding: 'utf8' }))
}
