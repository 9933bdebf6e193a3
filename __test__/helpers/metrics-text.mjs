// Prometheus' text format as a map, for the tests that read /metrics.

/** `name{labels}` -> value, for every sample line of a /metrics answer. */
export function samples(text) {
  const map = new Map()
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue
    const at = line.lastIndexOf(' ')
    map.set(line.slice(0, at), Number(line.slice(at + 1)))
  }
  return map
}
