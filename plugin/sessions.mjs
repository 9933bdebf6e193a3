// Bounded job sessions: every job runs in a session of its own, which is deleted from the
// agent's session store once the job's turn has ended, keeping the newest `keep` for debugging.
// Without this, every job ever answered stays in the store.
//
// Deletion is OpenClaw's own (deleteSessionEntry with archiveTranscript, as `openclaw sessions
// delete` does): the row and its transcript leave the database, the transcript stays as a
// `.deleted` archive under OpenClaw's retention (session.maintenance.resetArchiveRetention,
// maxDiskBytes). Each deletion is a session-store write (0.1–1 s measured) that new turns queue
// behind, so finished sessions are deleted in batches: once `batch` are due, or after `idleMs`
// without a finished job, and on drain.

let storeRuntime
/** OpenClaw's session store API, from the host (`openclaw/plugin-sdk/session-store-runtime`). */
async function hostDeleteSessionEntry(params) {
  storeRuntime ??= import('openclaw/plugin-sdk/session-store-runtime')
  const { deleteSessionEntry } = await storeRuntime
  return deleteSessionEntry(params)
}

export function createSessionPruner({ agentId, keep = 0, log, deleteSession = hostDeleteSessionEntry, batch = 8, idleMs = 1000 }) {
  const finished = []
  let chain = Promise.resolve()
  let timer = null
  let deleted = 0
  const flush = () => {
    clearTimeout(timer)
    timer = null
    for (const key of finished.splice(0, Math.max(0, finished.length - keep))) {
      chain = chain
        .then(() => deleteSession({ agentId, sessionKey: key, archiveTranscript: true }))
        .then(
          () => void deleted++,
          (error) => log?.warn?.(`could not delete job session ${key}: ${error?.message ?? error}`),
        )
    }
    return chain
  }
  return {
    /** A job's turn has settled: its session goes once `keep` newer ones exist. */
    finished(sessionKey) {
      finished.push(sessionKey)
      if (finished.length - keep >= batch) return flush()
      clearTimeout(timer)
      timer = setTimeout(flush, idleMs)
      timer.unref?.()
      return chain
    },
    /** Deletes what is due now and resolves once every deletion is done (used on drain). */
    idle: flush,
    get kept() {
      return [...finished]
    },
    get deleted() {
      return deleted
    },
  }
}
