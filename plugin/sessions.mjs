// Bounded job sessions: every job runs in a session of its own, which is deleted from the
// agent's session store once the job's turn has ended, keeping the newest `keep` for debugging.
// Without this, every job ever answered stays in the store.

let storeRuntime
/** OpenClaw's session store API, from the host (`openclaw/plugin-sdk/session-store-runtime`). */
async function hostDeleteSessionEntry(params) {
  storeRuntime ??= import('openclaw/plugin-sdk/session-store-runtime')
  const { deleteSessionEntry } = await storeRuntime
  return deleteSessionEntry(params)
}

export function createSessionPruner({ agentId, keep = 0, log, deleteSession = hostDeleteSessionEntry }) {
  const finished = []
  let chain = Promise.resolve()
  let deleted = 0
  return {
    /** A job's turn has settled: its session may go once `keep` newer ones exist. */
    finished(sessionKey) {
      finished.push(sessionKey)
      while (finished.length > keep) {
        const key = finished.shift()
        chain = chain
          .then(() => deleteSession({ agentId, sessionKey: key, archiveTranscript: false }))
          .then(
            () => void deleted++,
            (error) => log?.warn?.(`could not delete job session ${key}: ${error?.message ?? error}`),
          )
      }
      return chain
    },
    /** Resolves once every queued deletion is done. */
    idle: () => chain,
    get kept() {
      return [...finished]
    },
    get deleted() {
      return deleted
    },
  }
}
