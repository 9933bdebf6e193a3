// A gateway RPC client that stays up: OpenClaw's own callGatewayFromCli (what `openclaw gateway
// call` runs), loaded once. Each `openclaw gateway call` process spends 6-20 s loading OpenClaw on
// 2 busy cores before its one call; here a call costs ~0.1 s after the first. Runs under Node 24
// with the home's environment (helpers/openclaw.mjs, home.call). One JSON object a line each way:
//   in:  { "id": 1, "method": "sessions.list", "params": {...}, "timeoutMs": 60000 }
//   out: { "id": 1, "result": {...} }  or  { "id": 1, "error": "message" }
//
// It can also hold one connection as OpenClaw's terminal chat (`openclaw tui`) holds it: its
// client name, mode, scopes and capabilities (plugin approvals among them), so the gateway
// routes plugin approval prompts to it, as to a person at that chat (helpers/openclaw.mjs,
// home.tui). Methods of that connection: `$tui.open`, `$tui.request` ({ method, params }),
// `$tui.events` ({ prefix }: the gateway events it received whose name starts so), `$tui.close`.
import { createRequire } from 'node:module'
import { createInterface } from 'node:readline'
import { readFileSync } from 'node:fs'
import { randomUUID } from 'node:crypto'

const require = createRequire(process.argv[2])
const sdk = await import(require.resolve('openclaw/plugin-sdk/gateway-runtime'))
const { callGatewayFromCli } = sdk
const send = (reply) => process.stdout.write(`${JSON.stringify(reply)}\n`)
send({ id: 0, result: 'loaded' })

let tui = null
const events = []

/** Connects as `openclaw tui` does (dist/gateway-chat-*.mjs, GatewayChatClient). */
async function openTui() {
  if (tui) return 'open'
  const { port } = JSON.parse(readFileSync(process.env.OPENCLAW_CONFIG_PATH, 'utf8')).gateway
  let ready
  const hello = new Promise((resolve, reject) => (ready = { resolve, reject }))
  tui = new sdk.GatewayClient({
    url: `ws://127.0.0.1:${port}`,
    clientName: 'openclaw-tui',
    clientDisplayName: 'openclaw-tui',
    mode: 'ui',
    scopes: ['operator.admin', 'operator.read', 'operator.write', 'operator.approvals'],
    caps: ['agent-kind', 'plugin-approvals', 'task-suggestions', 'tool-events'],
    instanceId: randomUUID(),
    minProtocol: 4,
    maxProtocol: 4,
    onHelloOk: () => ready.resolve(),
    onConnectError: (error) => ready.reject(error),
    // The newest 2000 (ticks, presence and chat deltas come too).
    onEvent: (evt) => events.push({ event: evt.event, payload: evt.payload }) > 2000 && events.shift(),
  })
  tui.start()
  await hello
  return 'open'
}

async function local(method, params, timeoutMs) {
  switch (method) {
    case '$tui.open':
      return openTui()
    case '$tui.request':
      return tui.request(params.method, params.params, { timeoutMs })
    case '$tui.events':
      return events.filter((e) => e.event.startsWith(params?.prefix ?? ''))
    case '$tui.close':
      await tui?.stopAndWait().catch(() => tui.stop())
      tui = null
      return 'closed'
  }
  throw new Error(`unknown method ${method}`)
}

for await (const line of createInterface({ input: process.stdin })) {
  const { id, method, params, timeoutMs } = JSON.parse(line)
  const call = method.startsWith('$') ? local(method, params, timeoutMs) : callGatewayFromCli(method, { json: true, timeout: String(timeoutMs) }, params)
  call.then(
    (result) => send({ id, result }),
    (error) => send({ id, error: String(error?.message ?? error) }),
  )
}
