// The OpenClaw shim with a stub host API (the real gateway is in e2e/): what it registers,
// how a job becomes an agent turn, and how turn outcomes map to protocol codes.
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { useNats, request } from './helpers/addon.mjs'
import { registerPier } from '../plugin/register.mjs'
import { createAgentTurnHandler, replyText } from '../plugin/agent-turn.mjs'
import { sendJobReply } from '../plugin/channel.mjs'
import { resolvePierConfig } from '../plugin/config.mjs'

function stubApi({ pluginConfig = {}, runEmbeddedAgent } = {}) {
  const registered = { services: [], tools: [], commands: [] }
  const lines = []
  const api = {
    registrationMode: 'full',
    pluginConfig,
    logger: Object.fromEntries(['debug', 'info', 'warn', 'error'].map((l) => [l, (m) => lines.push(`${l} ${m}`)])),
    runtime: runEmbeddedAgent && {
      config: { current: () => ({}) },
      agent: { runEmbeddedAgent, resolveAgentWorkspaceDir: (_cfg, id) => `/tmp/ws-${id}` },
    },
    registerService: (s) => registered.services.push(s),
    registerTool: (t) => registered.tools.push(t),
    registerCommand: (c) => registered.commands.push(c),
  }
  return { api, registered, lines }
}

const job = (over = {}) => ({ id: 'j1', task: 'do it', timeoutMs: 5000, meta: {}, ...over })

describe('agent turn', () => {
  it('runs one turn per job in its own session with the job deadline and system prompt', async () => {
    const calls = []
    const { api } = stubApi({
      runEmbeddedAgent: async (params) => {
        calls.push(params)
        return { payloads: [{ text: 'thinking', isReasoning: true }, { text: 'the answer' }] }
      },
    })
    const handler = createAgentTurnHandler(api, 'main', new Map())
    assert.equal(await handler(job({ systemPrompt: 'be brief' })), 'the answer')
    const [p] = calls
    assert.equal(p.sessionId, 'pier-j1')
    assert.equal(p.sessionKey, 'agent:main:pier:j1')
    assert.equal(p.agentId, 'main')
    assert.equal(p.prompt, 'do it')
    assert.equal(p.extraSystemPrompt, 'be brief')
    assert.equal(p.timeoutMs, 5000)
    assert.equal(p.workspaceDir, '/tmp/ws-main')
    assert.ok(p.abortSignal instanceof AbortSignal)
    await handler(job({ id: 'j2' }))
    assert.notEqual(calls[1].sessionId, calls[0].sessionId)
    assert.notEqual(calls[1].runId, calls[0].runId)
  })

  it('RUNTIME_UNAVAILABLE without an agent runtime', async () => {
    const { api } = stubApi()
    const handler = createAgentTurnHandler(api, 'main', new Map())
    assert.equal((await handler(job())).error.code, 'RUNTIME_UNAVAILABLE')
  })

  it('EXECUTION_FAILED when the turn throws, TIMEOUT when it ends empty at its deadline', async () => {
    const { api } = stubApi({
      runEmbeddedAgent: async ({ prompt, timeoutMs }) => {
        if (prompt === 'throw') throw new Error('provider down')
        if (prompt === 'slow') await new Promise((r) => setTimeout(r, timeoutMs))
        return { payloads: [] }
      },
    })
    const handler = createAgentTurnHandler(api, 'main', new Map())
    assert.deepEqual(await handler(job({ task: 'throw' })), {
      error: { code: 'EXECUTION_FAILED', message: 'the agent turn failed: provider down' },
    })
    assert.equal((await handler(job({ task: 'slow', timeoutMs: 100 }))).error.code, 'TIMEOUT')
    assert.equal((await handler(job({ task: 'empty' }))).error.code, 'EXECUTION_FAILED')
  })

  it('a pier channel message addressed to the job answers it and aborts the turn', async () => {
    let signal
    const { api } = stubApi({
      // Like a real turn, this one rejects once aborted: that rejection must stay handled.
      runEmbeddedAgent: ({ abortSignal }) => {
        signal = abortSignal
        return new Promise((_, reject) => abortSignal.addEventListener('abort', () => reject(new Error('aborted'))))
      },
    })
    const unhandled = []
    const onUnhandled = (reason) => unhandled.push(reason)
    process.on('unhandledRejection', onUnhandled)
    const handler = createAgentTurnHandler(api, 'main', new Map())
    const pending = handler(job({ id: 'chan-1' }))
    await new Promise((r) => setImmediate(r))
    assert.deepEqual(await sendJobReply({ to: 'pier:chan-1', text: 'sent on the channel' }), { messageId: 'chan-1:reply' })
    assert.equal(await pending, 'sent on the channel')
    assert.equal(signal.aborted, true)
    await assert.rejects(sendJobReply({ to: 'chan-1', text: 'late' }), /no open Pier job/)
    await new Promise((r) => setTimeout(r, 20))
    process.off('unhandledRejection', onUnhandled)
    assert.deepEqual(unhandled, [])
  })

  it('replyText falls back to the final assistant text', () => {
    assert.equal(replyText({ payloads: [{ text: 'x', isError: true }], meta: { finalAssistantVisibleText: 'final' } }), 'final')
    assert.equal(replyText(undefined), '')
  })

  it('shim-only keys stay out of the addon config', () => {
    assert.deepEqual(resolvePierConfig({ agentId: 'ops', workerId: 'w' }), { addonConfig: { workerId: 'w' }, agentId: 'ops' })
    assert.deepEqual(resolvePierConfig(undefined), { addonConfig: {}, agentId: 'main' })
  })
})

describe('registered surfaces with a real nats-server', () => {
  const nats = useNats()

  it('service, tool and command work together and the service restarts', async () => {
    const turns = []
    const { api, registered, lines } = stubApi({
      pluginConfig: { natsUrl: nats.server.url, subject: 'jobs.shim', publishSubject: 'jobs.shim', workerId: 'shim-1', token: undefined },
      runEmbeddedAgent: async ({ prompt, sessionId }) => {
        turns.push(sessionId)
        return { payloads: [{ text: `agent says ${prompt}` }] }
      },
    })
    registerPier(api)
    const [service] = registered.services
    const [tool] = registered.tools
    const [command] = registered.commands
    assert.equal(service.id, 'pier-connector')
    assert.equal(tool.name, 'pier_publish')
    assert.equal(command.name, 'pier')
    assert.match(command.handler().text, /connection: stopped/)

    const health = []
    const ctx = { serviceHealth: { clearFailure: () => health.push('clear'), reportFailure: (e) => health.push(e.message) } }
    await service.start(ctx)
    const reply = await request(nats.nc, 'jobs.shim', { type: 'task_request', id: 's1', task: 'hi' })
    assert.equal(reply.result, 'agent says hi')
    assert.deepEqual(turns, ['pier-s1'])

    const published = await tool.execute('call-1', { task: 'via tool', timeoutMs: 5000 })
    assert.equal(published.details.result, 'agent says via tool')
    assert.match(published.content[0].text, /task_result/)

    const text = command.handler().text
    assert.match(text, /connection: connected/)
    assert.match(text, /subjects: jobs jobs\.shim, queue openclaw-workers, publish jobs\.shim/)
    assert.match(text, /jobs: 2 received, 2 completed, 0 failed, 0 rejected, 0 timed out, 0 in flight/)

    await service.stop()
    assert.match(command.handler().text, /connection: stopped/)
    await service.start(ctx)
    assert.equal((await request(nats.nc, 'jobs.shim', { task: 'again' })).result, 'agent says again')
    await service.stop()
    assert.deepEqual(health, ['clear', 'clear'])
    assert.ok(lines.every((l) => l.includes('[pier-connector]')), 'every line prefixed')
  })

  it('a failed start is reported to service health with a clear error', async () => {
    const { api, registered } = stubApi({ pluginConfig: { natsUrl: 'nats://127.0.0.1:1', connectTimeoutMs: 500, maxConnectAttempts: 1 } })
    registerPier(api)
    const health = []
    await assert.rejects(
      registered.services[0].start({ serviceHealth: { reportFailure: (e) => health.push(e.message), clearFailure() {} } }),
      /PIER_CONNECT/,
    )
    assert.match(health[0], /PIER_CONNECT: could not connect to NATS at nats:\/\/127\.0\.0\.1:1/)
    assert.match(registered.commands[0].handler().text, /last error: PIER_CONNECT/)
  })

  it('pier_publish explains timeouts and missing workers in its result text', async () => {
    const { api, registered } = stubApi({ pluginConfig: { natsUrl: nats.server.url, publishSubject: 'jobs.nobody' } })
    registerPier(api)
    const tool = registered.tools[0]
    const result = await tool.execute('c', { task: 'anyone?' })
    assert.match(result.content[0].text, /pier_publish failed: PIER_NO_RESPONDERS/)
    assert.equal(result.details.error.code, 'PIER_NO_RESPONDERS', 'the code travels as a field')
    nats.nc.subscribe('jobs.deaf', { callback: () => {} })
    await nats.nc.flush()
    const { api: api2, registered: reg2 } = stubApi({ pluginConfig: { natsUrl: nats.server.url, publishSubject: 'jobs.deaf' } })
    registerPier(api2)
    const timedOut = await reg2.tools[0].execute('c', { task: 'hello?', timeoutMs: 100 })
    assert.match(timedOut.content[0].text, /pier_publish failed: PIER_TIMEOUT/)
    await tool.close()
    await reg2.tools[0].close()
  })
})
