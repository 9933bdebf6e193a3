// Benchmark only (bench/gateway.mjs): the baseline pier-connector is compared with. It runs
// agent turns through api.runtime.agent.runEmbeddedAgent with the same parameters as
// plugin/agent-turn.mjs (own sessionId/sessionKey per turn, workspaceDir, prompt, timeoutMs,
// abort signal, terminalReplyExpectation; `persist=detached` as the plugin's default) but without
// NATS or the addon.
//
//   POST /pier-bench/turns?n=100&c=4&prefix=b1  -> { ms, turns: [ms...], failed, sessionKeys, sessionIds }
//        &persist=detached   runEmbeddedAgent({ sessionPersistence: 'detached' }) (no durable row/transcript)
//        &trajectory=0       runEmbeddedAgent({ disableTrajectory: true })
//        &keys=incognito     session keys agent:main:subagent:incognito-pier-<id> (in-memory agent database)
//   POST /pier-bench/delete?archive=1  body: JSON array of session keys -> { deleted, ms, errors }
//        &via=cleanup        one cleanupSessionLifecycleArtifacts call instead (archive -> archiveRemovedEntryTranscripts)
//        &via=entry+cleanup  deleteSessionEntry per key (archive as given), then one cleanupSessionLifecycleArtifacts
//                            (no archive) for the transcripts left behind
//        &via=cleanup-each   one cleanupSessionLifecycleArtifacts per key, its prefix the key's exact rest
//                            (`pier:<id>`, as OpenClaw's active-memory does), archive as given
//   POST /pier-bench/cleanup?prefix=pier&minAgeMs=0 -> cleanupSessionLifecycleArtifacts, timed
//   GET  /pier-bench/sessions?match=:pier:     -> { count } (stored sessions whose key matches)
//
// With stored turns (gateway.mjs --keep N) the bench deletes the bare turns' sessions between
// batches (untimed), so both paths see a session store of the same size.
import { randomUUID } from 'node:crypto'
import { definePluginEntry } from 'openclaw/plugin-sdk/plugin-entry'

const AGENT = 'main'
const sessionStore = () => import('openclaw/plugin-sdk/session-store-runtime')

async function runTurns(api, { n, c, prefix, timeoutMs, persist, trajectory = true, keys = 'pier' }) {
  const agent = api.runtime.agent
  const cfg = api.runtime.config?.current?.() ?? api.config
  const turns = new Array(n)
  const sessionKeys = []
  const sessionIds = []
  const errors = []
  let next = 0
  let failed = 0
  const lane = async () => {
    while (next < n) {
      const i = next++
      const id = `${prefix}-${i}`
      const sessionKey = keys === 'incognito' ? `agent:${AGENT}:subagent:incognito-pier-${id}` : `agent:${AGENT}:pier:${id}`
      const sessionId = `pier-${id}`
      sessionKeys.push(sessionKey)
      sessionIds.push(sessionId)
      const t0 = performance.now()
      try {
        const result = await agent.runEmbeddedAgent({
          agentId: AGENT,
          sessionId,
          sessionKey,
          ...(persist ? { sessionPersistence: persist } : {}),
          ...(trajectory ? {} : { disableTrajectory: true }),
          runId: randomUUID(),
          workspaceDir: agent.resolveAgentWorkspaceDir(cfg, AGENT),
          prompt: `PIERQ:${id}`,
          timeoutMs,
          abortSignal: new AbortController().signal,
          terminalReplyExpectation: 'required',
        })
        const text = (result?.payloads ?? []).map((p) => p?.text ?? '').join('')
        if (!text.includes(`answer-${id}`)) {
          failed++
          if (errors.length < 3) errors.push(`no answer: ${JSON.stringify(result?.payloads ?? result).slice(0, 300)}`)
        }
      } catch (error) {
        failed++
        if (errors.length < 3) errors.push(String(error?.message ?? error).slice(0, 500))
      }
      turns[i] = performance.now() - t0
    }
  }
  const t0 = performance.now()
  await Promise.all(Array.from({ length: c }, lane))
  return { ms: performance.now() - t0, turns, failed, errors, sessionKeys, sessionIds }
}

async function readBody(req) {
  let raw = ''
  for await (const chunk of req) raw += chunk
  return raw ? JSON.parse(raw) : null
}

function reply(res, value) {
  res.statusCode = 200
  res.setHeader('content-type', 'application/json')
  res.end(JSON.stringify(value))
  return true
}

export default definePluginEntry({
  id: 'pier-bench-bare',
  name: 'Pier bench (bare)',
  description: 'Benchmark only: agent turns through runEmbeddedAgent, without NATS',
  register(api) {
    if (api.registrationMode && api.registrationMode !== 'full') return
    api.registerHttpRoute({
      path: '/pier-bench',
      auth: 'plugin', // loopback-only bench gateway; 'gateway' auth would need a token
      match: 'prefix',
      handler: async (req, res) => {
        try {
          return await route(req, res)
        } catch (error) {
          res.statusCode = 500
          res.end(String(error?.stack ?? error))
          return true
        }
      },
    })
    const route = async (req, res) => {
        const url = new URL(req.url, 'http://x')
        const q = (k, d) => Number(url.searchParams.get(k) ?? d)
        if (url.pathname === '/pier-bench/turns') {
          return reply(res, await runTurns(api, {
            n: q('n', 10),
            c: q('c', 1),
            prefix: url.searchParams.get('prefix') ?? 'b',
            timeoutMs: q('timeoutMs', 60_000),
            persist: url.searchParams.get('persist') ?? undefined,
            trajectory: url.searchParams.get('trajectory') !== '0',
            keys: url.searchParams.get('keys') ?? 'pier',
          }))
        }
        if (url.pathname === '/pier-bench/delete') {
          const keys = (await readBody(req)) ?? []
          const { deleteSessionEntry, cleanupSessionLifecycleArtifacts } = await sessionStore()
          const via = url.searchParams.get('via') ?? 'entry'
          const archiveTranscript = url.searchParams.get('archive') !== '0'
          const errors = []
          const note = (error) =>
            errors.length < 3 &&
            errors.push(`${error?.name ?? 'Error'}: ${String(error?.message ?? error).slice(0, 300)}${url.searchParams.get('stack') ? `\n${String(error?.stack ?? '').split('\n').slice(1, 9).join('\n')}` : ''}`)
          const bulk = (archive) =>
            cleanupSessionLifecycleArtifacts({
              agentId: AGENT,
              sessionKeySegmentPrefix: url.searchParams.get('prefix') ?? 'pier',
              transcriptContentMarker: url.searchParams.get('marker') ?? 'PIERQ:',
              orphanTranscriptMinAgeMs: 0,
              archiveRemovedEntryTranscripts: archive,
            })
          const t0 = performance.now()
          let deleted = 0
          let cleanup
          if (via === 'entry' || via === 'entry+cleanup') {
            for (const sessionKey of keys) {
              try {
                if (await deleteSessionEntry({ agentId: AGENT, sessionKey, archiveTranscript })) deleted++
              } catch (error) {
                note(error)
              }
            }
          }
          if (via === 'cleanup-each') {
            cleanup = { removedEntries: 0, archivedTranscriptArtifacts: 0 }
            for (const sessionKey of keys) {
              try {
                const r = await cleanupSessionLifecycleArtifacts({
                  agentId: AGENT,
                  sessionKeySegmentPrefix: sessionKey.split(':').slice(2).join(':'),
                  transcriptContentMarker: `pier-${sessionKey.split(':').pop()}`,
                  orphanTranscriptMinAgeMs: 0,
                  archiveRemovedEntryTranscripts: archiveTranscript,
                })
                cleanup.removedEntries += r.removedEntries
                cleanup.archivedTranscriptArtifacts += r.archivedTranscriptArtifacts
              } catch (error) {
                note(error)
              }
            }
          }
          if (via === 'cleanup' || via === 'entry+cleanup') {
            try {
              cleanup = await bulk(via === 'cleanup' ? archiveTranscript : false)
            } catch (error) {
              note(error)
            }
          }
          return reply(res, { deleted, cleanup, errors, ms: performance.now() - t0 })
        }
        if (url.pathname === '/pier-bench/cleanup') {
          const { cleanupSessionLifecycleArtifacts } = await sessionStore()
          const t0 = performance.now()
          const result = await cleanupSessionLifecycleArtifacts({
            agentId: AGENT,
            sessionKeySegmentPrefix: url.searchParams.get('prefix') ?? 'pier',
            transcriptContentMarker: url.searchParams.get('marker') ?? 'PIERQ:',
            orphanTranscriptMinAgeMs: q('minAgeMs', 0),
          })
          return reply(res, { ...result, ms: performance.now() - t0 })
        }
        if (url.pathname === '/pier-bench/transcripts') {
          // Transcript events still stored for these session ids (left behind by a delete?).
          const { readTranscriptStatsSync } = await sessionStore()
          let events = 0
          let withEvents = 0
          for (const sessionId of (await readBody(req)) ?? []) {
            let n = 0
            try {
              n = readTranscriptStatsSync({ agentId: AGENT, sessionId }).eventCount
            } catch {}
            events += n
            if (n) withEvents++
          }
          return reply(res, { withEvents, events })
        }
        if (url.pathname === '/pier-bench/sessions') {
          const { listSessionEntries } = await sessionStore()
          const match = url.searchParams.get('match') ?? ':pier:'
          const rows = listSessionEntries({ agentId: AGENT })
          return reply(res, { count: rows.filter((r) => String(r.sessionKey ?? r.key ?? '').includes(match)).length, total: rows.length })
        }
        res.statusCode = 404
        res.end('not found')
        return true
    }
  },
})
