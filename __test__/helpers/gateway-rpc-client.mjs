// A gateway RPC client that stays up: OpenClaw's own callGatewayFromCli (what `openclaw gateway
// call` runs), loaded once. Each `openclaw gateway call` process spends 6-20 s loading OpenClaw on
// 2 busy cores before its one call; here a call costs ~0.1 s after the first. Runs under Node 24
// with the home's environment (helpers/openclaw.mjs, home.call). One JSON object a line each way:
//   in:  { "id": 1, "method": "sessions.list", "params": {...}, "timeoutMs": 60000 }
//   out: { "id": 1, "result": {...} }  or  { "id": 1, "error": "message" }
import { createRequire } from 'node:module'
import { createInterface } from 'node:readline'

const require = createRequire(process.argv[2])
const { callGatewayFromCli } = await import(require.resolve('openclaw/plugin-sdk/gateway-runtime'))
const send = (reply) => process.stdout.write(`${JSON.stringify(reply)}\n`)
send({ id: 0, result: 'loaded' })

for await (const line of createInterface({ input: process.stdin })) {
  const { id, method, params, timeoutMs } = JSON.parse(line)
  callGatewayFromCli(method, { json: true, timeout: String(timeoutMs) }, params).then(
    (result) => send({ id, result }),
    (error) => send({ id, error: String(error?.message ?? error) }),
  )
}
