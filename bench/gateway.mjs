#!/usr/bin/env node
// pier-connector inside a real OpenClaw gateway, against the same agent turns started directly
// through runEmbeddedAgent by a bare plugin (bench/gateway-bare-plugin: no NATS, no addon). One
// gateway holds both plugins; the fake model answers at once.
//
//   node bench/gateway.mjs [--jobs 100] [--rounds 2] [--conc 1,4,16] [--keep 0] [--plugin DIR]
//   node bench/gateway.mjs --long 10000 --every 1000 --conc 4 [--path bare] [--minutes 33] [--settle 90]
//   node bench/gateway.mjs --delete-cost 20 [--dc 3,5,1] [--settle 75] [--conc 4]
//
// A/B mode: per round and per C, N pier jobs (C requester lanes over NATS to a pier account
// with maxConcurrentJobs C; latency = request sent -> reply received at the requester) and
// N bare turns (C lanes inside the gateway; latency = runEmbeddedAgent called -> resolved), the
// order alternating per round and cell; the table shows the medians over rounds. Both paths
// run the same turns: detached (keepSessions 0, the default; nothing stored), or with --keep N
// stored ones, where before each batch the store holds no session of the other path: the pier
// account deletes its own beyond N ("incl. session cleanup" counts the time until they are
// gone), the bench deletes the bare ones (untimed). --plugin DIR installs that unpacked
// pier-connector instead of packing this checkout (before/after runs).
// Long mode: pier jobs (or, with --path bare, the bare plugin's turns), sampling every --every
// jobs the gateway's RSS, the state dir (SQLite files vs `.deleted` transcript archives) and the
// number of stored pier sessions, and at the end the rows each SQLite table gained (--settle S:
// and what is left of them after S idle seconds); --minutes stops it after the batch that passes
// the time limit.
// Delete-cost mode: per candidate way of running a job's turn and cleaning up its session (see
// deleteCost), wall and CPU time per turn and per cleanup, and what state each leaves behind.
// Long and delete-cost modes read SQLite row counts with the sqlite3 CLI.
// --cpu-prof DIR: the gateway runs with --cpu-prof (NODE_OPTIONS) and writes its profiles there
// (one per thread; OpenClaw starts Worker threads for SQLite work).
// Needs scripts/setup-e2e.sh (Node 24, OpenClaw, nats-server) and a built addon (packed into
// dist/ by scripts/pack.sh).
import { execFileSync } from 'node:child_process'
import { readFileSync, readdirSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { startNatsServer } from '../__test__/helpers/nats-server.mjs'
import { startFakeModel } from '../__test__/helpers/fake-model.mjs'
import { createOpenClawHome, packPlugin } from '../__test__/helpers/openclaw.mjs'
import { rawClient, request, waitFor, sleep } from '../__test__/helpers/addon.mjs'

const BARE = fileURLToPath(new URL('./gateway-bare-plugin', import.meta.url))
const { values: opts } = parseArgs({
  options: {
    jobs: { type: 'string', default: '200' },
    rounds: { type: 'string', default: '3' },
    conc: { type: 'string', default: '1,4,16' },
    long: { type: 'string', default: '0' },
    every: { type: 'string', default: '1000' },
    'cpu-prof': { type: 'string' },
    keep: { type: 'string', default: '0' },
    'delete-cost': { type: 'string', default: '0' },
    dc: { type: 'string' },
    settle: { type: 'string', default: '0' },
    plugin: { type: 'string' },
    minutes: { type: 'string', default: '0' },
    path: { type: 'string', default: 'pier' },
  },
})
const JOBS = Number(opts.jobs)
const ROUNDS = Number(opts.rounds)
const CONCS = opts.conc.split(',').map(Number)
const LONG = Number(opts.long)
const TIMEOUT_MS = 60_000
// Diagnostic only: channels.pier.keepSessions (a huge value turns session deletion off).
const KEEP = Number(opts.keep)

const nats = await startNatsServer({ name: 'pier-gwbench' })
const nc = await rawClient(nats.url)
const model = await startFakeModel()
const home = await createOpenClawHome({ modelBaseUrl: model.baseUrl, registryUrl: 'http://127.0.0.1:9/' })
let gateway
try {
  // --plugin <dir>: an unpacked pier-connector to install instead of this checkout (e.g. an older
  // plugin/ in a copy of dist/pier-connector, for before/after runs).
  await home.cli(['plugins', 'install', '--link', opts.plugin ?? packPlugin().dir, '--force', '--accept-capabilities'])
  await home.cli(['plugins', 'install', '--link', BARE, '--force', '--accept-capabilities'])
  const config = home.readConfig()
  // One pier account per C, so maxConcurrentJobs really is C and one gateway serves all cells.
  const accounts = Object.fromEntries(CONCS.map((c) => [`c${c}`, { subject: `bench.c${c}`, workerId: `c${c}`, maxConcurrentJobs: c }]))
  config.channels = { pier: { natsUrl: nats.url, jobTimeoutMs: TIMEOUT_MS, keepSessions: KEEP, accounts } }
  config.tools = { ...config.tools, toolSearch: false }
  home.writeConfig(config)
  if (opts['cpu-prof']) home.env.NODE_OPTIONS = `--cpu-prof --cpu-prof-dir=${opts['cpu-prof']}`
  gateway = await home.startGateway()
  const base = `http://127.0.0.1:${home.port}/pier-bench`
  const bare = async (path, body) => {
    const res = await fetch(`${base}${path}`, { method: body === undefined ? 'GET' : 'POST', body: body === undefined ? undefined : JSON.stringify(body) })
    if (!res.ok) throw new Error(`${path}: HTTP ${res.status} ${await res.text()}`)
    return res.json()
  }
  const storedSessions = async (prefix) => (await bare(`/sessions?match=${encodeURIComponent(`:pier:${prefix}`)}`)).count

  // --- the two paths -------------------------------------------------------------------------
  async function pierBatch(c, prefix, n) {
    const lat = new Array(n)
    let next = 0
    let failed = 0
    const lane = async () => {
      while (next < n) {
        const i = next++
        const id = `${prefix}-${i}`
        const t0 = performance.now()
        const reply = await request(nc, `bench.c${c}`, { id, task: `PIERQ:${id}`, timeoutMs: TIMEOUT_MS }, TIMEOUT_MS + 30_000)
        lat[i] = performance.now() - t0
        if (reply.type !== 'task_result' || !String(reply.result).includes(`answer-${id}`)) failed++
      }
    }
    const t0 = performance.now()
    await Promise.all(Array.from({ length: c }, lane))
    return { ms: performance.now() - t0, lat, failed }
  }
  // The bare turns are the pier account's turns: detached, or stored when keepSessions is set.
  const BARE_PERSIST = KEEP ? '' : '&persist=detached'
  async function bareBatch(c, prefix, n) {
    const r = await bare(`/turns?n=${n}&c=${c}&prefix=${prefix}&timeoutMs=${TIMEOUT_MS}${BARE_PERSIST}`, null)
    return { ms: r.ms, lat: r.turns, failed: r.failed, sessionKeys: r.sessionKeys }
  }
  /** Waits until the pier account has deleted the batch's stored sessions beyond keepSessions. */
  async function settlePier(prefix) {
    await waitFor(async () => (await storedSessions(prefix)) <= KEEP, { timeout: 120_000, interval: 250 })
  }
  async function settleBare(keys) {
    if (KEEP) await bare('/delete', keys)
  }

  // Warm-up: subscriptions up, first (cold) turns done, on every account.
  for (const c of CONCS) {
    await waitFor(async () => {
      try {
        return await request(nc, `bench.c${c}`, { id: `warm${c}`, task: `PIERQ:warm${c}`, timeoutMs: TIMEOUT_MS }, TIMEOUT_MS)
      } catch (error) {
        if (/no responders|503/i.test(error.message)) return null
        throw error
      }
    }, { timeout: 120_000, interval: 500 })
  }
  await waitFor(async () => {
    try {
      return await bare('/sessions')
    } catch {
      return null
    }
  }, { timeout: 60_000, interval: 500 })
  const warm = await bareBatch(4, 'bwarm', 8)
  await settleBare(warm.sessionKeys)
  await pierBatch(CONCS.at(-1), 'pwarm', 8)
  await settlePier('pwarm')

  if (Number(opts['delete-cost'])) await deleteCost(Number(opts['delete-cost']))
  else if (LONG) await longRun(CONCS[0])
  else await abRun()

  // --- what one job session's turn and cleanup cost, per way of running / deleting it -------------
  // Each candidate: N turns (C = 4) run one way, then their sessions cleaned up one way, on an
  // otherwise idle gateway. Wall and gateway CPU per turn and per cleaned-up session, failed
  // replies, and what the turns and the cleanup left in the state dir: rows per SQLite table (all
  // *.sqlite files, read-only through the sqlite3 CLI), `.deleted` archive files, gateway RSS.
  // --dc 1,5 picks candidates by number (default: all); --settle S waits S seconds at the end and
  // prints what is left since the start.
  async function deleteCost(n) {
    const state = home.env.OPENCLAW_STATE_DIR
    const pid = gatewayPid(gateway.child.pid)
    const candidates = [
      ['durable turn; deleteSessionEntry archiveTranscript (the plugin, keepSessions > 0)', '', '/delete?archive=1'],
      ['durable turn; deleteSessionEntry no archive', '', '/delete?archive=0'],
      ['durable turn; one cleanupSessionLifecycleArtifacts, no archive', '', '/delete?via=cleanup&archive=0'],
      ['durable turn; deleteSessionEntry no archive + one cleanupSessionLifecycleArtifacts', '', '/delete?via=entry%2Bcleanup&archive=0'],
      ["sessionPersistence 'detached'; no cleanup", '&persist=detached', null],
      ["sessionPersistence 'detached', disableTrajectory; no cleanup", '&persist=detached&trajectory=0', null],
      ['incognito key (agent:main:subagent:incognito-*); deleteSessionEntry no archive', '&keys=incognito', '/delete?archive=0'],
      ['durable turn, disableTrajectory; deleteSessionEntry archiveTranscript', '&trajectory=0', '/delete?archive=1'],
      ['durable turn; one cleanupSessionLifecycleArtifacts with archive (one archive Worker for all)', '', '/delete?via=cleanup&archive=1'],
      ['durable turn; cleanupSessionLifecycleArtifacts per session (prefix pier:<id>), no archive', '', '/delete?via=cleanup-each&archive=0'],
    ]
    // Candidate 3 first: the tombstones that deleteSessionEntry without archive leaves (2, 4, 7)
    // make every later cleanupSessionLifecycleArtifacts call on this store throw.
    const pick = opts.dc ? opts.dc.split(',').map(Number) : [3, 10, 9, 5, 6, 1, 8, 2, 4, 7]
    const start = snapshot(state, pid)
    for (const i of pick) {
      const [label, turnArgs, cleanupPath] = candidates[i - 1]
      const prefix = `dc${i}x${Date.now() % 1e6}`
      const s0 = snapshot(state, pid)
      const cpu0 = cpuMs(pid)
      const turns = await bare(`/turns?n=${n}&c=4&prefix=${prefix}&timeoutMs=${TIMEOUT_MS}${turnArgs}`, null)
      const cpu1 = cpuMs(pid)
      const s1 = snapshot(state, pid)
      let cleanup = null
      if (cleanupPath) cleanup = await bare(`${cleanupPath}&stack=1`, turns.sessionKeys)
      const cpu2 = cpuMs(pid)
      await sleep(1000) // deferred maintenance (archive publication, disk budget) settles
      const s2 = snapshot(state, pid)
      console.log(JSON.stringify({
        candidate: i,
        label,
        sessions: n,
        turnMs: +(turns.ms / n).toFixed(1),
        turnCpuMs: +((cpu1 - cpu0) / n).toFixed(1),
        failed: turns.failed,
        ...(turns.errors?.length ? { turnErrors: turns.errors } : {}),
        cleanupMs: cleanup ? +(cleanup.ms / n).toFixed(1) : 0,
        cleanupCpuMs: +((cpu2 - cpu1) / n).toFixed(1),
        cleanup: cleanup && { deleted: cleanup.deleted, bulk: cleanup.cleanup, errors: cleanup.errors },
        storedSessions: await storedSessions(prefix),
        sessionNodes: sessionNodes(state, prefix),
        transcripts: await bare('/transcripts', turns.sessionIds),
        afterTurns: diff(s0, s1),
        afterCleanup: diff(s0, s2),
      }))
    }
    // OpenClaw's worker-placement sweep (every 60 s) retires placements of sessions that no
    // longer exist; what is left after it is what all the candidates above left for good.
    if (Number(opts.settle)) {
      await sleep(Number(opts.settle) * 1000)
      console.log(JSON.stringify({ settledAfterS: Number(opts.settle), sinceStart: diff(start, snapshot(state, pid)) }))
    }
  }

  // --- A/B table ------------------------------------------------------------------------------
  async function abRun() {
    const cells = Object.fromEntries(CONCS.map((c) => [c, { pier: [], bare: [] }]))
    // CPU per job of the gateway process (all its threads: the addon's too) and of this process
    // (the fake model for both paths, and the pier path's requesters), over the batch.
    const pid = gatewayPid(gateway.child.pid)
    const cpu = () => ({ gateway: cpuMs(pid), bench: process.cpuUsage() })
    // CLOCK_MONOTONIC µs, the clock of V8's profile timestamps: slices a --cpu-prof by batch.
    const monoUs = () => Number(process.hrtime.bigint() / 1000n)
    const cpuPerJob = (c0) => ({
      gatewayCpuMs: (cpuMs(pid) - c0.gateway) / JOBS,
      benchCpuMs: (({ user, system }) => (user + system) / 1000 / JOBS)(process.cpuUsage(c0.bench)),
    })
    for (let round = 0; round < ROUNDS; round++) {
      for (const c of CONCS) {
        const order = (round + CONCS.indexOf(c)) % 2 ? ['bare', 'pier'] : ['pier', 'bare']
        for (const path of order) {
          const prefix = `${path[0]}r${round}c${c}`
          const c0 = { ...cpu(), t0Us: monoUs() }
          if (path === 'pier') {
            const r = await pierBatch(c, prefix, JOBS)
            const used = cpuPerJob(c0)
            const t0 = performance.now()
            await settlePier(prefix)
            // Jobs/s counting the time until their sessions are gone too: deletion deferred
            // past the batch is still paid for.
            cells[c].pier.push({ ...summarize(r), ...used, perSWithCleanup: (JOBS * 1000) / (r.ms + performance.now() - t0) })
          } else {
            const r = await bareBatch(c, prefix, JOBS)
            cells[c].bare.push({ ...summarize(r), ...cpuPerJob(c0) })
            await settleBare(r.sessionKeys)
          }
          console.error(JSON.stringify({ round, c, path, ...cells[c][path].at(-1), t0Us: c0.t0Us, t1Us: monoUs() }))
        }
      }
    }
    const rows = CONCS.map((c) => {
      const m = (path, k) => median(cells[c][path].map((s) => s[k]))
      return {
        c,
        pierPerS: m('pier', 'perS'),
        pierPerSWithCleanup: m('pier', 'perSWithCleanup'),
        barePerS: m('bare', 'perS'),
        ratio: m('pier', 'perS') / m('bare', 'perS'),
        pierP50: m('pier', 'p50'),
        pierP99: m('pier', 'p99'),
        bareP50: m('bare', 'p50'),
        bareP99: m('bare', 'p99'),
        pierCpu: m('pier', 'gatewayCpuMs'),
        bareCpu: m('bare', 'gatewayCpuMs'),
        pierBenchCpu: m('pier', 'benchCpuMs'),
        bareBenchCpu: m('bare', 'benchCpuMs'),
        failed: cells[c].pier.reduce((a, s) => a + s.failed, 0) + cells[c].bare.reduce((a, s) => a + s.failed, 0),
      }
    })
    console.log(`\n${JOBS} jobs/turns per cell, ${ROUNDS} rounds interleaved, medians over rounds\n`)
    console.log(`keepSessions ${KEEP}${opts.plugin ? `, plugin from ${opts.plugin}` : ''}\n`)
    console.log('| C | pier jobs/s | pier jobs/s incl. session cleanup | bare turns/s | pier/bare | pier p50 ms | pier p99 ms | bare p50 ms | bare p99 ms | p50 diff ms | gateway CPU ms/job pier | bare | bench CPU ms/job pier | bare | failed |')
    console.log('| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
    for (const r of rows) {
      const f = (x) => x.toFixed(1)
      console.log(`| ${r.c} | ${f(r.pierPerS)} | ${f(r.pierPerSWithCleanup)} | ${f(r.barePerS)} | ${r.ratio.toFixed(3)} | ${f(r.pierP50)} | ${f(r.pierP99)} | ${f(r.bareP50)} | ${f(r.bareP99)} | ${f(r.pierP50 - r.bareP50)} | ${f(r.pierCpu)} | ${f(r.bareCpu)} | ${r.pierBenchCpu.toFixed(2)} | ${r.bareBenchCpu.toFixed(2)} | ${r.failed} |`)
    }
  }

  // --- long run -------------------------------------------------------------------------------
  async function longRun(c) {
    const every = Number(opts.every)
    const state = home.env.OPENCLAW_STATE_DIR
    const pid = gatewayPid(gateway.child.pid)
    const sample = async (jobs, startedAt, batch) => {
      const { all, db, archives, archiveFiles } = stateSizes(state)
      const rss = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
      const row = {
        jobs,
        pierSessions: await storedSessions('l'),
        stateMB: +(all / 1e6).toFixed(2),
        dbMB: +(db / 1e6).toFixed(2),
        archivesMB: +(archives / 1e6).toFixed(2),
        archiveFiles,
        rssMB: rss ? Math.round(Number(rss[1]) / 1024) : null,
        secs: Math.round((Date.now() - startedAt) / 1000),
        ...(batch ? { jobsPerS: +batch.perS.toFixed(1), p50: +batch.p50.toFixed(1), p99: +batch.p99.toFixed(1), failed: batch.failed } : {}),
      }
      console.log(JSON.stringify(row))
      return row
    }
    // Rows per SQLite table since the start: which of OpenClaw's records grow with the jobs.
    const tables = (snap) => Object.fromEntries(Object.entries(snap).filter(([k]) => !/^(rss|bytes|files):/.test(k)))
    const rows0 = tables(snapshot(state, pid))
    const startedAt = Date.now()
    const rows = [await sample(0, startedAt)]
    const stopAt = Number(opts.minutes) ? startedAt + Number(opts.minutes) * 60_000 : Infinity
    for (let done = 0; done < LONG && Date.now() < stopAt; ) {
      const n = Math.min(every, LONG - done)
      const r = summarize(opts.path === 'bare' ? await bareBatch(c, `l${done}`, n) : await pierBatch(c, `l${done}`, n))
      done += n
      await sleep(1500) // past the account's idle flush, so the sample sees the steady state
      rows.push(await sample(done, startedAt, r))
    }
    const grown = diff(rows0, tables(snapshot(state, pid)))
    const ran = rows.at(-1).jobs
    console.log(`\n${ran} of ${LONG} ${opts.path === 'bare' ? 'bare turns' : 'pier jobs'}${ran < LONG ? ` (stopped at --minutes ${opts.minutes})` : ''} at C=${c}, sampled every ${every} (gateway pid ${pid}), keepSessions ${KEEP}\n`)
    console.log('| jobs | pier sessions stored | state MB | SQLite MB | .deleted archives MB (files) | gateway RSS MB | jobs/s | p50 ms | p99 ms |')
    console.log('| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
    for (const r of rows) {
      console.log(`| ${r.jobs} | ${r.pierSessions} | ${r.stateMB} | ${r.dbMB} | ${r.archivesMB} (${r.archiveFiles}) | ${r.rssMB} | ${r.jobsPerS ?? ''} | ${r.p50 ?? ''} | ${r.p99 ?? ''} |`)
    }
    // --settle S: what is still there after S idle seconds (OpenClaw's placement sweep runs every 60 s).
    const settled = Number(opts.settle) ? (await sleep(Number(opts.settle) * 1000), diff(rows0, tables(snapshot(state, pid)))) : null
    console.log(`\nSQLite rows added over the run (${ran} jobs)${settled ? `, and left after ${opts.settle} s idle` : ''}\n`)
    console.log(`| database: table | rows | per job |${settled ? ' left |' : ''}\n| --- | ---: | ---: |${settled ? ' ---: |' : ''}`)
    for (const [table, n] of Object.entries(grown).sort((a, b) => b[1] - a[1])) {
      console.log(`| ${table} | ${n} | ${(n / ran).toFixed(2)} |${settled ? ` ${settled[table] ?? 0} |` : ''}`)
    }
  }
} finally {
  await gateway?.stop()
  await nc.close()
  await nats.stop()
  await model.close()
  if (opts['cpu-prof']) console.error(`${readdirSync(opts['cpu-prof']).length} cpu profiles in ${opts['cpu-prof']}`)
  home.cleanup()
}

/** Bytes under the state dir: all, SQLite files, `.deleted` transcript archives (and their count). */
function stateSizes(state) {
  const files = execFileSync('find', [state, '-type', 'f', '-printf', '%s %p\n'], { encoding: 'utf8' }).trim().split('\n')
  const out = { all: 0, db: 0, archives: 0, archiveFiles: 0 }
  for (const line of files) {
    const [size, ...rest] = line.split(' ')
    const path = rest.join(' ')
    out.all += Number(size)
    if (/\.sqlite(-wal|-shm)?$/.test(path)) out.db += Number(size)
    else if (/\.deleted\./.test(path)) {
      out.archives += Number(size)
      out.archiveFiles++
    }
  }
  return out
}

/** Rows per table of every SQLite file under the state dir, `.deleted` files, gateway RSS. */
function snapshot(state, pid) {
  const out = {}
  // (not tmp/: lock and capture databases held exclusively by the gateway)
  const files = execFileSync('find', [state, '-path', `${state}/tmp`, '-prune', '-o', '-type', 'f', '-name', '*.sqlite', '-print'], { encoding: 'utf8' }).trim().split('\n').filter(Boolean)
  for (const file of files) {
    const name = file.slice(state.length + 1)
    try {
      const tables = execFileSync('sqlite3', ['-readonly', '-cmd', '.timeout 5000', file, "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"], { encoding: 'utf8' }).trim().split('\n').filter(Boolean)
      if (!tables.length) continue
      const sql = tables.map((t) => `SELECT '${t}', count(*) FROM "${t}"`).join(' UNION ALL ')
      for (const line of execFileSync('sqlite3', ['-readonly', '-cmd', '.timeout 5000', '-separator', '\t', file, sql], { encoding: 'utf8', maxBuffer: 16 << 20 }).trim().split('\n')) {
        const [t, c] = line.split('\t')
        out[`${name}:${t}`] = Number(c)
      }
    } catch (error) {
      out[`${name}:error`] = String(error.message).slice(0, 100)
    }
  }
  const { db, archiveFiles } = stateSizes(state)
  out['files:.deleted'] = archiveFiles
  out['bytes:sqlite'] = db
  const rss = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  out['rss:MB'] = rss ? Math.round(Number(rss[1]) / 1024) : null
  return out
}

/** The agent database's session_nodes rows (and their retained window) whose key contains `match`. */
function sessionNodes(state, match, limit = 2) {
  const file = `${state}/agents/main/agent/openclaw-agent.sqlite`
  const sql = `SELECT n.session_key, n.entry_valid, substr(n.entry_json, 1, 160), n.current_session_id, w.session_id, n.archived_at
    FROM session_nodes n LEFT JOIN session_windows w ON w.session_id = n.current_session_id AND w.session_key = n.session_key
    WHERE n.session_key LIKE '%${match}%' ORDER BY n.session_key LIMIT ${limit}`
  try {
    return JSON.parse(execFileSync('sqlite3', ['-readonly', '-cmd', '.timeout 5000', '-json', file, sql], { encoding: 'utf8' }).trim() || '[]')
  } catch (error) {
    return String(error.message).slice(0, 200)
  }
}

/** Changed entries from snapshot a to snapshot b. */
function diff(a, b) {
  const out = {}
  for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
    if (k.endsWith(':error')) {
      if (b[k]) out[k] = b[k]
      continue
    }
    const d = (b[k] ?? 0) - (a[k] ?? 0)
    if (d) out[k] = d
  }
  return out
}

function summarize({ ms, lat, failed }) {
  const sorted = [...lat].sort((a, b) => a - b)
  const q = (p) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]
  return { perS: (lat.length * 1000) / ms, p50: q(0.5), p99: q(0.99), failed }
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

/** CPU time (user + system, all threads) the process has used, in ms. */
function cpuMs(pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100 // utime, stime in clock ticks (100/s)
}

/** The gateway's pid: the CLI we spawned is the gateway process itself (`openclaw-gateway`). */
function gatewayPid(pid) {
  const comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim()
  if (!/openclaw|node/.test(comm)) throw new Error(`pid ${pid} is ${comm}, not the gateway`)
  return pid
}
