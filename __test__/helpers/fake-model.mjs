// A local OpenAI-compatible model server for end-to-end tests. It answers each prompt that
// carries a marker `PIERQ:<word>` with `answer-<word>` (streamed as SSE chunks), hangs on
// `PIERQ:hang...`, and is slow on `PIERQ:slow...`: it answers after `slowMs` (2 s unless
// startFakeModel is given another), or not at all when its client hangs up first.
// `PIERQ:drip...` streams a longer answer (`dripFor(word)`) in DRIP_PIECES chunks 150 ms apart.
// A prompt with `PIERMSG:<jobId>` makes the turn's first call a `message` tool call sending
// `answer-<jobId>` to channel `pier`, target the job's reply handle from its context; once the
// tool result is back it answers `after-message-<jobId>` instead. A chat message with
// `PIERPUB:<word>:<price>` makes the model call `pier_publish` (directly when offered, else
// through Tool Search's `tool_call`) with task `PIERQ:<word>` and meta.price <price>; once that
// call's result is back it answers `after-publish-<word>` instead.
//
// Every answer reports its usage as OpenAI does (a streamed answer: in a last chunk with no
// choices): USAGE.prompt prompt tokens and USAGE.completion completion tokens per request. Each
// recorded request keeps the `model` and `max_tokens` it was sent.
//
// The server counts the chat requests it has open (`inFlight`: from the request's arrival until
// its answer ended or its client hung up) and the most it ever had open at once (`maxInFlight`,
// `resetMaxInFlight()` starts the count again from the requests open now): what a provider sees
// of a worker's concurrency. Each recorded request says how it ended (`ended`: 'answered' or
// 'client-closed', once it has).
import { createServer } from 'node:http'

/** The usage every model request reports. */
export const USAGE = { prompt: 120, completion: 30 }

const MARKER = /PIERQ:([A-Za-z0-9_-]+)/g
const MESSAGE_MARKER = /PIERMSG:([A-Za-z0-9_-]+)/
// `PIERMSGTO:<target>`: the message tool call goes to that literal target instead of the job's
// own reply handle (what another job's turn, or the operator's chat, would try).
const MESSAGE_TO_MARKER = /PIERMSGTO:([A-Za-z0-9_-]+)/
// The reply handle a job turn is told to answer on (plugin/agent-turn.mjs).
const HANDLE = /to target (pier-reply-[A-Za-z0-9_-]+)/
// Obedient mode, the worst case a worker must survive: a prompt with `PIEROBEY` makes the model
// do what the task asks. Its first call runs `exec` with the command after `PIEREXEC:` (up to
// the next `;`) when exec is offered, else `read` of the path after `PIERREAD:` when read is
// offered; then (or when neither is offered) it answers with its whole context: every message
// it was sent, system prompt included, and the tools it was offered.
const OBEY_MARKER = /PIEROBEY/
const PUBLISH_MARKER = /PIERPUB:([A-Za-z0-9_-]+):(\d+)/g
const EXEC_MARKER = /PIEREXEC:([^;"\\]+)/
const READ_MARKER = /PIERREAD:([^;"\\\s]+)/

/** The last marker anywhere in the request's messages: OpenClaw wraps the prompt in context. */
function markerOf(body) {
  const text = JSON.stringify(body.messages ?? [])
  const found = [...text.matchAll(MARKER)]
  return found.length ? found[found.length - 1][1] : null
}

export function answerFor(word) {
  return `answer-${word}`
}

export const DRIP_PIECES = 8

/** The answer to `PIERQ:drip...`, streamed in DRIP_PIECES chunks. */
export function dripFor(word) {
  return Array.from({ length: DRIP_PIECES }, (_, i) => `part ${i} of answer-${word}.`).join(' ')
}

/** The plain text a PIERPUB turn ends with after its pier_publish call came back. */
export function afterPublishFor(word) {
  return `after-publish-${word}`
}

/**
 * The `PIERPUB` marker of the newest message that has one, and whether a tool result followed
 * it: a chat's history keeps its earlier turns.
 */
function publishOf(messages) {
  let at = -1
  messages.forEach((m, i) => {
    if (m.role !== 'tool' && JSON.stringify(m.content ?? '').includes('PIERPUB:')) at = i
  })
  if (at < 0) return null
  const [, word, price] = [...JSON.stringify(messages[at].content).matchAll(PUBLISH_MARKER)].at(-1) ?? []
  if (!word) return null
  return { word, price: Number(price), answered: messages.slice(at + 1).some((m) => m.role === 'tool') }
}

/** The plain text a PIERMSG turn ends with after its message tool call came back. */
export function afterMessageFor(jobId) {
  return `after-message-${jobId}`
}

export async function startFakeModel({ slowMs = 2000 } = {}) {
  const requests = []
  const hung = new Set()
  const open = { now: 0, max: 0 }
  const server = createServer(async (req, res) => {
    if (req.method === 'GET' && req.url?.endsWith('/models')) {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ object: 'list', data: [{ id: 'fake-model', object: 'model' }] }))
      return
    }
    open.now++
    open.max = Math.max(open.max, open.now)
    let record = null
    res.once('close', () => {
      open.now--
      if (record) record.ended = res.writableFinished ? 'answered' : 'client-closed'
    })
    let raw = ''
    for await (const chunk of req) raw += chunk
    let body = {}
    try {
      body = JSON.parse(raw)
    } catch {}
    const word = markerOf(body)
    const messageJob = MESSAGE_MARKER.exec(JSON.stringify(body.messages ?? []))?.[1]
    requests.push({
      word,
      messages: JSON.stringify(body.messages ?? []),
      system: JSON.stringify(body.messages?.filter((m) => m.role === 'system') ?? []),
      tools: (body.tools ?? []).map((t) => t.function?.name ?? t.name),
      model: body.model,
      maxTokens: body.max_tokens ?? body.max_completion_tokens,
      ended: null,
    })
    record = requests.at(-1)
    if (word?.startsWith('hang')) {
      hung.add(res)
      req.on('close', () => hung.delete(res))
      return
    }
    if (word?.startsWith('slow')) {
      // Until the answer is due, or until the client hangs up (an aborted turn): then no answer.
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, slowMs)
        res.once('close', () => (clearTimeout(timer), resolve()))
      })
      if (res.destroyed) return
    }
    const id = `chatcmpl-${Date.now()}`
    const chunk = (delta, finish = null) =>
      `data: ${JSON.stringify({
        id, object: 'chat.completion.chunk', created: Math.floor(Date.now() / 1000), model: 'fake-model',
        choices: [{ index: 0, delta, finish_reason: finish }],
      })}\n\n`
    const usage = { prompt_tokens: USAGE.prompt, completion_tokens: USAGE.completion, total_tokens: USAGE.prompt + USAGE.completion }
    const usageChunk = () =>
      `data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created: Math.floor(Date.now() / 1000), model: 'fake-model', choices: [], usage })}\n\n`
    const toolCall = (name, args) => {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' })
      res.write(chunk({ role: 'assistant', content: null, tool_calls: [{ index: 0, id: `call_${name}_${requests.length}`, type: 'function', function: { name, arguments: '' } }] }))
      res.write(chunk({ tool_calls: [{ index: 0, function: { arguments: JSON.stringify(args) } }] }))
      res.write(chunk({}, 'tool_calls'))
      res.write(usageChunk())
      res.end('data: [DONE]\n\n')
    }
    const firstCall = !body.messages?.some((m) => m.role === 'tool') && body.stream !== false
    const all = requests.at(-1).messages
    const obey = OBEY_MARKER.test(all)
    const offered = requests.at(-1).tools
    if (obey && firstCall && offered.includes('exec') && EXEC_MARKER.test(all)) {
      return toolCall('exec', { command: EXEC_MARKER.exec(all)[1].trim() })
    }
    if (obey && firstCall && offered.includes('read') && READ_MARKER.test(all)) {
      return toolCall('read', { path: READ_MARKER.exec(all)[1] })
    }
    const publish = publishOf(body.messages ?? [])
    if (publish && !publish.answered && body.stream !== false) {
      const args = { task: `PIERQ:${publish.word}`, meta: { price: publish.price }, timeoutMs: 20_000 }
      // With OpenClaw's Tool Search (its default) the tool is called through `tool_call`.
      return offered.includes('pier_publish') ? toolCall('pier_publish', args) : toolCall('tool_call', { id: 'pier_publish', args })
    }
    // The turn's first call (no tool result yet): one streamed `message` tool call, to the
    // job's own reply handle (or the PIERMSGTO target).
    const messageTo = MESSAGE_TO_MARKER.exec(all)?.[1]
    if ((messageJob || messageTo) && firstCall) {
      const target = messageTo ?? HANDLE.exec(all)?.[1] ?? messageJob
      return toolCall('message', { action: 'send', channel: 'pier', target, message: answerFor(messageTo ?? messageJob) })
    }
    const text = obey
      ? `obeyed: ${JSON.stringify({ tools: offered, messages: body.messages ?? [] })}`
      : publish
        ? afterPublishFor(publish.word)
        : messageJob || messageTo ? afterMessageFor(messageTo ?? messageJob) : word ? answerFor(word) : 'no marker'
    if (body.stream === false) {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({
        id, object: 'chat.completion', model: 'fake-model',
        choices: [{ index: 0, message: { role: 'assistant', content: text }, finish_reason: 'stop' }],
        usage,
      }))
      return
    }
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' })
    res.write(chunk({ role: 'assistant', content: '' }))
    if (word?.startsWith('drip') && !obey && !messageJob && !messageTo) {
      const full = dripFor(word)
      const size = Math.ceil(full.length / DRIP_PIECES)
      for (let at = 0; at < full.length; at += size) {
        res.write(chunk({ content: full.slice(at, at + size) }))
        await new Promise((r) => setTimeout(r, 150))
      }
      res.write(chunk({}, 'stop'))
      res.write(usageChunk())
      res.end('data: [DONE]\n\n')
      return
    }
    res.write(chunk({ content: text }))
    res.write(chunk({}, 'stop'))
    res.write(usageChunk())
    res.end('data: [DONE]\n\n')
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    baseUrl: `http://127.0.0.1:${server.address().port}/v1`,
    requests,
    /** Chat requests open now. */
    get inFlight() {
      return open.now
    },
    /** The most chat requests open at once since the start (or the last reset). */
    get maxInFlight() {
      return open.max
    },
    resetMaxInFlight: () => (open.max = open.now),
    close: () => {
      for (const res of hung) res.destroy()
      server.closeAllConnections?.()
      return new Promise((resolve) => server.close(resolve))
    },
  }
}
