// The /pier command: connection, server, subjects and job counts.
export function formatStatus(status, lastError) {
  const uptime = status.uptimeMs === undefined ? 'not running' : `${Math.round(status.uptimeMs / 1000)}s`
  const s = status.stats
  const lines = [
    'Pier connector',
    `connection: ${status.state}${lastError ? ` (last error: ${lastError})` : ''}`,
    `server: ${status.servers}${status.serverName ? ` (${status.serverName} ${status.serverVersion ?? ''})`.trimEnd() : ''}`,
    `subjects: jobs ${status.subject}, queue ${status.queueGroup}, publish ${status.publishSubject}`,
    `worker: ${status.workerId}${status.walletAddress ? `, wallet ${status.walletAddress}` : ''}, up to ${status.maxConcurrentJobs} jobs at once`,
    `uptime: ${uptime}`,
    `jobs: ${s.received} received, ${s.completed} completed, ${s.failed} failed, ${s.rejected} rejected, ${s.timedOut} timed out, ${s.inFlight} in flight`,
  ]
  return lines.join('\n')
}

export function createStatusCommand(runtime) {
  return {
    name: 'pier',
    description: 'Show the Pier connector status',
    acceptsArgs: false,
    handler: () => {
      try {
        return { text: formatStatus(runtime.getWorker().status(), runtime.state.lastError) }
      } catch (error) {
        return { text: `Pier connector\nconnection: not configured (${error.message})` }
      }
    },
  }
}
