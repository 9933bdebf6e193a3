// nats.js JetStream calls that ride out a cluster's elections: for the cluster tests and the
// scale benchmark, which kill nodes while they run.
import { jetstream, jetstreamManager } from '@nats-io/jetstream'
import { sleep } from './wait.mjs'

/** `call()`'s result, called again every 500 ms while it throws, for up to ~15 s. */
export async function retrying(call) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await call()
    } catch (error) {
      if (attempt > 30) throw error
      await sleep(500)
    }
  }
}

/** The JetStream API, once a new cluster has elected its meta leader. */
export async function jetStreamOf(nc) {
  const jsm = await retrying(() => jetstreamManager(nc, { timeout: 5000 }))
  return { jsm, js: jetstream(nc, { timeout: 5000 }) }
}

/** Publishes into a stream until a PubAck confirms it (a node may be down meanwhile). */
export function publishConfirmed(js, subject, data, msgID) {
  return retrying(() => js.publish(subject, data, { msgID, timeout: 2000 }))
}

/** The stream's info once it has a leader. */
export async function streamLeader(jsm, name) {
  for (let attempt = 0; ; attempt++) {
    try {
      const info = await jsm.streams.info(name)
      if (info.cluster?.leader) return info
    } catch (error) {
      if (attempt > 50) throw error
    }
    await sleep(200)
  }
}
