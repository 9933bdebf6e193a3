// Small waits shared by the tests: a pause, and polling until a condition holds.
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

export async function waitFor(predicate, { timeout = 5000, interval = 10 } = {}) {
  const start = Date.now()
  for (;;) {
    const value = await predicate()
    if (value) return value
    if (Date.now() - start > timeout) throw new Error(`condition not met within ${timeout} ms`)
    await sleep(interval)
  }
}
