// nats.js JetStream calls that ride out a cluster's elections: for the cluster tests and the
// scale benchmark, which kill nodes while they run.
import { jetstream, jetstreamManager } from '@nats-io/jetstream'
import { sleep } from './wait.mjs'

/** The JetStream API, once a new cluster has elected its meta leader. */
export async function jetStreamOf(nc) {
  for (let attempt = 0; ; attempt++) {
    try {
      return { jsm: await jetstreamManager(nc, { timeout: 5000 }), js: jetstream(nc, { timeout: 5000 }) }
    } catch (error) {
      if (attempt > 30) throw error
      await sleep(500)
    }
  }
}

/** Publishes into a stream until a PubAck confirms it (a node may be down meanwhile). */
export async function publishConfirmed(js, subject, data, msgID) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await js.publish(subject, data, { msgID, timeout: 2000 })
    } catch (error) {
      if (attempt > 30) throw error
      await sleep(200)
    }
  }
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
