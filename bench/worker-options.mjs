// Command-line options shared by the benchmark's JS workers, and the event-loop blocker.
import { parseArgs } from 'node:util'

export function workerOptions() {
  const { values } = parseArgs({
    options: {
      url: { type: 'string', default: 'nats://127.0.0.1:4222' },
      subject: { type: 'string', default: 'jobs.worker' },
      'delay-ms': { type: 'string', default: '0' },
      'max-concurrent': { type: 'string', default: '4096' },
      mode: { type: 'string', default: 'best' },
      'block-event-loop': { type: 'boolean', default: false },
      native: { type: 'boolean', default: false },
      addon: { type: 'string' },
      'signing-seed': { type: 'string' },
      'admission-checks': { type: 'boolean', default: false },
    },
  })
  const delayMs = Number(values['delay-ms'])
  return {
    url: values.url,
    subject: values.subject,
    mode: values.mode,
    maxConcurrent: Number(values['max-concurrent']),
    blockEventLoop: values['block-event-loop'],
    native: values.native,
    /** A .node file to load instead of the package's own build (the A/B baseline). */
    addon: values.addon,
    /** The worker's signing key (a user seed): replies carry Pier-Worker. */
    signingSeed: values['signing-seed'],
    /** A daily budget and senders' shares set, high enough never to refuse a job: what the
     * admission checks cost a job that passes them. */
    admissionChecks: values['admission-checks'],
    /** The stand-in for an agent turn: the task back, at once or after `delayMs`. */
    handler: delayMs > 0 ? (task) => new Promise((r) => setTimeout(() => r(task), delayMs)) : async (task) => task,
  }
}

/** Busy-waits 50 ms out of every 100 ms, like a host whose event loop is often busy. */
export function blockEventLoop() {
  setInterval(() => {
    const until = Date.now() + 50
    while (Date.now() < until);
  }, 100)
}

/** Prints the summary line and exits on SIGTERM. */
export function onTerminate(summary) {
  process.once('SIGTERM', async () => {
    process.stdout.write(JSON.stringify(await summary()) + '\n')
    process.exit(0)
  })
}
