'use strict'
// The fleet table, one row per worker with its columns aligned, at most 80 characters wide so a
// chat shows it whole: `pier-connector workers` prints it from the discovery answers, `/pier`
// from the gateway's own accounts. Shared by cli/ and plugin/, so it lives in neither.

const pad = (n) => String(n).padStart(2, '0')

/** `45s`, `3m 05s`, `1h 02m`, `2d 03h`: an uptime a person reads at a glance. */
function humanDuration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000))
  if (s < 60) return `${s}s`
  if (s < 3600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`
  if (s < 86400) return `${Math.floor(s / 3600)}h ${pad(Math.floor(s / 60) % 60)}m`
  return `${Math.floor(s / 86400)}d ${pad(Math.floor(s / 3600) % 24)}h`
}

/**
 * An amount as a person reads it: whole above 1000, else at most four significant digits
 * (`15`, `2.5`, `0.01234`), never an exponent.
 */
function amount(n) {
  if (typeof n !== 'number' || !Number.isFinite(n)) return ''
  if (n === 0) return '0'
  if (Math.abs(n) >= 1000) return String(Math.round(n))
  const text = Number(n.toPrecision(4)).toString()
  return text.includes('e') ? n.toFixed(8).replace(/0+$/, '') : text
}

/**
 * Where a worker is connected, short: a URL list as its first `host:port` (`+N` more), and a
 * server name that is a 56-character server id as its first 8 characters.
 */
function serverLabel(server) {
  const text = String(server ?? '')
  if (/^N[A-Z2-7]{55}$/.test(text)) return `${text.slice(0, 8)}…`
  const urls = text.split(',').map((u) => u.trim()).filter(Boolean)
  if (!urls.length) return ''
  const first = urls[0].replace(/^[a-z][a-z0-9+.-]*:\/\//i, '')
  return urls.length > 1 ? `${first} +${urls.length - 1}` : first
}

/** The table's width limit: a chat 80 columns wide shows every line whole. */
const WIDTH = 80
const HEADER = ['WORKER', 'SERVER', 'UP', 'RUN', 'DONE', 'FAIL', 'P50', 'EARNED', 'SPENT']
/** Columns cut (with …) when a line is too wide, and how narrow they may get. */
const SHRINKABLE = [
  [1, 8],
  [0, 8],
]
/** `256ms`, `1.0s`, `524s`. */
const millis = (ms) => (ms < 1000 ? `${ms}ms` : `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)}s`)
const num = (n) => (n == null ? '' : String(n))
const cut = (text, width) => (text.length <= width ? text : `${text.slice(0, width - 1)}…`)

/**
 * `rows`: `{ worker, server, uptimeMs, stats }` each, `stats` the worker's counters as both
 * sources carry them (the addon's `status().stats`, a discovery answer's endpoint data).
 * RUN is jobs in flight; FAIL counts every job answered with a task_error other than a
 * refusal, timeouts too. The p50 is a histogram bucket's upper bound, hence `≤`. EARNED is the
 * sum of `meta.price` of completed jobs (the marketplace's unit), SPENT what their turns cost
 * (the models' cost config unit); `–` for a worker that does not publish them.
 */
function fleetTable(rows) {
  const cells = rows.map(({ worker, server, uptimeMs, stats: s = {} }) => [
    String(worker ?? ''),
    serverLabel(server),
    typeof uptimeMs === 'number' && Number.isFinite(uptimeMs) ? humanDuration(uptimeMs) : '',
    num(s.inFlight),
    num(s.completed),
    num((s.failed ?? 0) + (s.timedOut ?? 0)),
    s.p50Ms == null ? '–' : `≤${millis(s.p50Ms)}`,
    // Discovery answers strangers too, so a worker reports money only when its operator opts
    // in (discoveryEarnings).
    s.earned == null ? '–' : amount(s.earned),
    s.spent == null ? '–' : amount(s.spent),
  ])
  const widths = HEADER.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)))
  const total = () => widths.reduce((a, b) => a + b, 0) + 2 * (widths.length - 1)
  for (const [column, narrowest] of SHRINKABLE) {
    const over = total() - WIDTH
    if (over > 0) widths[column] = Math.max(narrowest, HEADER[column].length, widths[column] - over)
  }
  const line = (row) =>
    row
      .map((c, i) => (i < 3 ? cut(c, widths[i]).padEnd(widths[i]) : c.padStart(widths[i])))
      .join('  ')
      .trimEnd()
  const hidden = rows.some(({ stats: s = {} }) => s.earned == null)
  return [
    line(HEADER),
    ...cells.map(line),
    `${rows.length} worker${rows.length === 1 ? '' : 's'}; counts since each started (UP)`,
    'EARNED: meta.price of completed jobs; SPENT: model cost (cost config unit)',
    ...(hidden ? ['EARNED/SPENT –: kept private (discoveryEarnings: true publishes them)'] : []),
  ].join('\n')
}

module.exports = { humanDuration, fleetTable, amount, serverLabel }
