'use strict'
// The fleet table, one row per worker with its columns aligned: `pier-connector workers`
// prints it from the discovery answers, `/pier` from the gateway's own accounts.

const pad = (n) => String(n).padStart(2, '0')

/** `45s`, `3m 05s`, `1h 02m`, `2d 03h`: an uptime a person reads at a glance. */
function humanDuration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000))
  if (s < 60) return `${s}s`
  if (s < 3600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`
  if (s < 86400) return `${Math.floor(s / 3600)}h ${pad(Math.floor(s / 60) % 60)}m`
  return `${Math.floor(s / 86400)}d ${pad(Math.floor(s / 3600) % 24)}h`
}

const HEADER = ['WORKER', 'SERVER', 'UPTIME', 'IN FLIGHT', 'COMPLETED', 'FAILED', 'P50 MS', 'EARNED']
const num = (n) => (n == null ? '' : String(n))

/**
 * `rows`: `{ worker, server, uptimeMs, stats }` each, `stats` the worker's counters as both
 * sources carry them (the addon's `status().stats`, a discovery answer's endpoint data).
 * FAILED counts every job answered with a task_error other than a refusal: timeouts too.
 * The p50 is a histogram bucket's upper bound, hence `≤`. EARNED is `–` for a worker that
 * does not publish its earnings.
 */
function fleetTable(rows) {
  const cells = rows.map(({ worker, server, uptimeMs, stats: s = {} }) => [
    String(worker ?? ''),
    String(server ?? ''),
    typeof uptimeMs === 'number' && Number.isFinite(uptimeMs) ? humanDuration(uptimeMs) : '',
    num(s.inFlight),
    num(s.completed),
    num((s.failed ?? 0) + (s.timedOut ?? 0)),
    s.p50Ms == null ? '–' : `≤${s.p50Ms}`,
    // Discovery answers strangers too, so a worker reports earnings only when its operator
    // opts in (discoveryEarnings).
    s.earned == null ? '–' : String(s.earned),
  ])
  const widths = HEADER.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)))
  const line = (row) => row.map((c, i) => (i < 3 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ').trimEnd()
  const hidden = rows.some(({ stats: s = {} }) => s.earned == null)
  return [
    line(HEADER),
    ...cells.map(line),
    `${rows.length} worker${rows.length === 1 ? '' : 's'}`,
    ...(hidden ? ['EARNED –: the worker keeps its earnings private (set discoveryEarnings: true to publish them)'] : []),
  ].join('\n')
}

module.exports = { humanDuration, fleetTable }
