// The JS side of the batched job handler (see js_handler.rs), loaded into the addon at build
// time. `pierDriver(handler, report)` returns the function the worker calls with each batch of
// jobs: one JSON text `[seq, job, seq, job, ...]`. Each outcome goes to
// `report(seq, kind, a, b, usage)`: kind 0 = result text a (a string, or { result, usage });
// 1 = a returned { error: { code a, message b }, usage }; 2 = any other value; 3 = a throw or
// rejection with message a. `usage` is the turn's { input, output, cacheRead, cacheWrite, cost }
// as JSON, or null. What a handler returned or threw is reduced to strings here, in JS, so that
// no getter or toString of the host's runs inside native code. The handler's second argument is
// `{ partial(text) }`: the next piece of the answer, to `partial(seq, text)` (protocol v1.1).
(function pierDriver(handler, report, partial) {
  const text = (v) => {
    try {
      return typeof v === 'string' ? v : v === undefined || v === null ? null : String(v)
    } catch {
      return null
    }
  }
  const count = (v) => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? Math.floor(v) : 0)
  // Token counts and a cost, whatever else the object holds; null when there is none.
  const usageOf = (value) => {
    try {
      const u = value.usage
      if (u === null || typeof u !== 'object') return null
      const cost = typeof u.cost === 'number' ? u.cost : u.cost !== null && typeof u.cost === 'object' ? u.cost.total : 0
      return JSON.stringify({
        input: count(u.input),
        output: count(u.output),
        cacheRead: count(u.cacheRead),
        cacheWrite: count(u.cacheWrite),
        cost: typeof cost === 'number' && Number.isFinite(cost) && cost >= 0 ? cost : 0,
      })
    } catch {
      return null
    }
  }
  const resolved = (seq, value) => {
    if (typeof value === 'string') return report(seq, 0, value, null, null)
    try {
      if (value !== null && typeof value === 'object') {
        const usage = usageOf(value)
        const result = value.result
        if (typeof result === 'string') return report(seq, 0, result, null, usage)
        const error = value.error
        if (error !== null && typeof error === 'object' && !Array.isArray(error)) {
          const code = typeof error.code === 'string' ? error.code : null
          const message = typeof error.message === 'string' ? error.message : null
          return report(seq, 1, code, message, usage)
        }
      }
    } catch {}
    report(seq, 2, null, null, null)
  }
  const rejected = (seq, error) => {
    let message = null
    try {
      message = text(error !== null && typeof error === 'object' ? error.message : error)
    } catch {}
    report(seq, 3, message, null, null)
  }
  return function pierDispatch(batch) {
    const jobs = JSON.parse(batch)
    for (let i = 0; i < jobs.length; i += 2) {
      const seq = jobs[i]
      const job = jobs[i + 1]
      const context = {
        partial: job.progress
          ? (piece) => {
              const value = text(piece)
              if (value) partial(seq, value)
            }
          : () => {},
      }
      let result
      try {
        result = handler(job, context)
      } catch (error) {
        rejected(seq, error)
        continue
      }
      if (typeof result === 'string') report(seq, 0, result, null, null)
      else Promise.resolve(result).then((v) => resolved(seq, v), (e) => rejected(seq, e))
    }
  }
})
