#!/usr/bin/env node
// Regenerates build/hot-text.ld: the linker script (Linux, glibc targets; build.rs passes it)
// that lays out every function a worker runs from loading to its first jobs in one section,
// `.text.pier_hot`, in the order they first run. Linux maps a file's code 64 KB around each
// page a process touches, so start-up code scattered over the addon's 4 MB made ~2.6 MB of it
// resident in an idle worker; laid out together it is ~1 MB (bench/RESULTS.md, memory).
//
//   node scripts/hot-text.mjs          # needs Rust, a C compiler, readelf, openssl, nats-server
//
// How: an unstripped release build (target/hot-text/) runs a workload under an LD_AUDIT library
// (scripts/hot-text/trap.c) that puts a breakpoint on every function of the addon and records
// the first hit of each. Phases, in this order in the script: start (a worker connects over
// nats:// and idles), jobs (jobs, a malformed one, discovery, a publisher), tls (workers over
// tls:// and wss://, the default server's scheme, then stopped).
// Names: Rust's legacy mangling ends each name in a hash of the crate's build settings, which
// differ between this build and the shipped one (napi's --target, stripping), so a Rust function
// is listed by its path with any hash (`…17h*`), which also takes the same function after a
// toolchain or dependency update, with its other instantiations; std's and C functions by name.
// Recording needs x86_64 (trap.c reads the instruction pointer) and a writable text mapping.
// The script notes how many bytes its patterns select (section-bytes);
// __test__/hot-text.test.mjs fails when the built addon's section holds much less, i.e. when the
// names have gone stale: run this script again then.
import { execFileSync, spawn } from 'node:child_process'
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const PHASES = ['start', 'jobs', 'tls']

if (process.argv[2] === '--workload') await workload(process.argv[3])
else await generate()

async function generate() {
  const dir = mkdtempSync(join(tmpdir(), 'pier-hot-text-'))
  try {
    const target = join(ROOT, 'target', 'hot-text')
    execFileSync('cargo', ['build', '--release', '--lib', '--features', 'addon'], {
      cwd: ROOT,
      stdio: 'inherit',
      env: { ...process.env, CARGO_TARGET_DIR: target, CARGO_PROFILE_RELEASE_STRIP: 'none' },
    })
    const addon = join(dir, 'pier-connector.node')
    copyFileSync(join(target, 'release', 'libpier_connector.so'), addon)
    const trap = join(dir, 'trap.so')
    execFileSync('cc', ['-O2', '-fPIC', '-shared', '-o', trap, join(ROOT, 'scripts', 'hot-text', 'trap.c')])

    const { names, all } = functions(addon)
    writeFileSync(join(dir, 'funcs.txt'), [...names.keys()].map((o) => o.toString(16)).join('\n') + '\n')
    const child = spawn(process.execPath, [fileURLToPath(import.meta.url), '--workload', addon], {
      stdio: 'inherit',
      env: {
        ...process.env,
        LD_AUDIT: trap,
        HOT_TEXT_ADDON: 'pier-connector.node',
        HOT_TEXT_FUNCS: join(dir, 'funcs.txt'),
        HOT_TEXT_OUT: join(dir, 'hits'),
      },
    })
    const code = await new Promise((resolve) => child.once('exit', resolve))
    if (code !== 0) throw new Error(`the workload exited with ${code}`)

    // Each dump holds every function hit so far, in the order of first hit.
    // A dump can catch a hit whose slot is not written yet (0): only known starts count.
    const hits = PHASES.map((_, i) =>
      readFileSync(join(dir, `hits.${i}`), 'utf8')
        .split('\n')
        .map((o) => Number.parseInt(o, 16))
        .filter((o) => names.has(o)),
    )
    const phases = PHASES.map((phase, i) => ({ phase, names: hits[i].flatMap((o) => names.get(o)) }))
    const startBytes = hits[0].reduce((sum, o) => sum + all.get(names.get(o)[0]), 0)
    const out = join(ROOT, 'build', 'hot-text.ld')
    writeFileSync(out, script(phases, all, startBytes))
    const counts = PHASES.map((phase, i) => `${phase} ${hits[i].length}`)
    console.log(`wrote ${out}: functions run by phase (cumulative): ${counts.join(', ')}`)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

/** The addon's functions: start offset -> every name at it; name -> size (all). */
function functions(file) {
  const names = new Map()
  // readelf lists .dynsym and .symtab: an exported name appears twice.
  const all = new Map()
  for (const line of execFileSync('readelf', ['-sW', file], { encoding: 'utf8', maxBuffer: 1 << 28 }).split('\n')) {
    const f = line.trim().split(/\s+/)
    // Num: Value Size Type Bind Vis Ndx Name
    if (f.length < 8 || f[3] !== 'FUNC' || f[6] === 'UND' || Number(f[2]) === 0) continue
    const offset = Number.parseInt(f[1], 16)
    if (!names.has(offset)) names.set(offset, [])
    if (!names.get(offset).includes(f[7])) names.get(offset).push(f[7])
    all.set(f[7], Number(f[2]))
  }
  return { names, all }
}

/** Rust's legacy mangling ends in a 16-digit hash: the name with any hash. */
function glob(name) {
  const m = /^(_ZN.*17h)[0-9a-f]{16}E$/.exec(name)
  return m ? `${m[1]}*` : null
}

function script(phases, all, startBytes) {
  const lines = []
  const seen = new Set()
  // Functions the `ctor` crate registers to run at load (napi's class registrations) sit in a
  // plain .text.startup.
  lines.push('    *(.text.startup)')
  for (const { names } of phases) {
    for (const name of names) {
      const pattern = glob(name) ?? name
      if (seen.has(pattern)) continue
      seen.add(pattern)
      // `.text.*.` also takes what LLVM put in .text.unlikely. (cold) or .text.startup.
      lines.push(`    *(.text.${pattern} .text.*.${pattern})`)
    }
  }
  // What the patterns select in this build: the shipped build's section should hold as much.
  const prefixes = [...seen].filter((p) => p.endsWith('*')).map((p) => p.slice(0, -1))
  let sectionBytes = 0
  for (const [name, size] of all) {
    if (seen.has(name) || prefixes.some((p) => name.startsWith(p))) sectionBytes += size
  }
  return [
    '/* Generated by scripts/hot-text.mjs; do not edit. The functions an addon worker runs from',
    '   loading to its first jobs (phases: ' + PHASES.join(', ') + '), together and in order.',
    `   start-bytes: ${startBytes} (the start phase's functions)`,
    `   section-bytes: ${sectionBytes} (what these patterns select; __test__/hot-text.test.mjs) */`,
    'SECTIONS',
    '{',
    '  .text.pier_hot :',
    '  {',
    ...lines,
    '  }',
    '}',
    'INSERT BEFORE .text;',
    '',
  ].join('\n')
}

/** Runs in the traced process: each phase ends with SIGWINCH, which trap.c answers with a dump. */
async function workload(addon) {
  const { startNatsServer, freePort } = await import('../__test__/helpers/nats-server.mjs')
  const { makeCertificates } = await import('../__test__/helpers/certificates.mjs')
  const { connect } = createRequire(import.meta.url)('@nats-io/transport-node')
  const { PierWorker, PierClient } = createRequire(import.meta.url)(addon)
  const mark = () => new Promise((resolve) => {
    process.kill(process.pid, 'SIGWINCH')
    setTimeout(resolve, 200)
  })
  const options = { logger: () => {}, logLevel: 'info' }
  const handler = async (job) => job.task
  const server = await startNatsServer()
  const subject = 'jobs.hot'

  const worker = new PierWorker({ natsUrl: server.url, subject, workerId: 'hot', maxConcurrentJobs: 16 }, handler, options)
  await worker.start()
  await new Promise((resolve) => setTimeout(resolve, 1000))
  await mark()

  const client = new PierClient({ natsUrl: server.url, publishSubject: subject })
  for (let round = 0; round < 20; round++) {
    await Promise.all(Array.from({ length: 16 }, (_, i) => client.publish(`task ${round}.${i}`, { timeoutMs: 5000 })))
  }
  const raw = await connect({ servers: server.url })
  for (const [subj, data] of [[subject, 'not json'], [subject, '{"task":""}'], ['$SRV.PING', ''], ['$SRV.INFO', ''], ['$SRV.STATS', '']]) {
    await raw.request(subj, new TextEncoder().encode(data), { timeout: 5000 }).catch(() => {})
  }
  worker.status()
  await raw.close()
  await mark()

  // The default server is wss://; tls:// is the other encrypted scheme.
  const certs = mkdtempSync(join(tmpdir(), 'pier-hot-certs-'))
  const cert = makeCertificates(certs)
  const tls = `tls { cert_file: "${cert('server.pem')}", key_file: "${cert('server.key')}" }`
  const wssPort = await freePort()
  const secure = await startNatsServer({ extra: `${tls}\nwebsocket { host: 127.0.0.1, port: ${wssPort}, ${tls} }` })
  for (const natsUrl of [`tls://127.0.0.1:${secure.port}`, `wss://127.0.0.1:${wssPort}`]) {
    const config = { natsUrl, subject, workerId: 'hot-tls', tlsCaFile: cert('ca.pem') }
    const w = new PierWorker(config, handler, options)
    await w.start()
    const c = new PierClient({ ...config, publishSubject: subject })
    await c.publish('over tls', { timeoutMs: 5000 })
    await c.close()
    await w.stop()
  }
  await worker.stop()
  await client.close()
  await mark()
  await secure.stop()
  await server.stop()
  rmSync(certs, { recursive: true, force: true })
  process.exit(0)
}
