// The JS side of the batched job handler (see js_handler.rs), loaded into the addon at build
// time. `pierDriver(handler, settle)` returns the function the worker calls with each batch of
// jobs: one JSON text `[seq, job, seq, job, ...]`. Each outcome goes to
// `settle(seq, kind, a, b)`: kind 0 = result text a; 1 = a returned { error: { code a, message b } };
// 2 = any other value; 3 = a throw or rejection with message a. What a handler returned or threw
// is reduced to strings here, in JS, so that no getter or toString of the host's runs inside
// native code.
(function pierDriver(handler, settle) {
  const text = (v) => {
    try {
      return typeof v === 'string' ? v : v === undefined || v === null ? null : String(v)
    } catch {
      return null
    }
  }
  const resolved = (seq, value) => {
    if (typeof value === 'string') return settle(seq, 0, value, null)
    try {
      const error = value !== null && typeof value === 'object' ? value.error : undefined
      if (error !== null && typeof error === 'object' && !Array.isArray(error)) {
        const code = typeof error.code === 'string' ? error.code : null
        const message = typeof error.message === 'string' ? error.message : null
        return settle(seq, 1, code, message)
      }
    } catch {}
    settle(seq, 2, null, null)
  }
  const rejected = (seq, error) => {
    let message = null
    try {
      message = text(error !== null && typeof error === 'object' ? error.message : error)
    } catch {}
    settle(seq, 3, message, null)
  }
  return function pierDispatch(batch) {
    const jobs = JSON.parse(batch)
    for (let i = 0; i < jobs.length; i += 2) {
      const seq = jobs[i]
      let result
      try {
        result = handler(jobs[i + 1])
      } catch (error) {
        rejected(seq, error)
        continue
      }
      if (typeof result === 'string') settle(seq, 0, result, null)
      else Promise.resolve(result).then((v) => resolved(seq, v), (e) => rejected(seq, e))
    }
  }
})
