// A local OpenAI-compatible model server for end-to-end tests. It answers each prompt that
// carries a marker `PIERQ:<word>` with `answer-<word>` (streamed as SSE chunks), hangs on
// `PIERQ:hang...`, and is slow on `PIERQ:slow...`.
import { createServer } from 'node:http'

const MARKER = /PIERQ:([A-Za-z0-9_-]+)/g

/** The last marker anywhere in the request's messages: OpenClaw wraps the prompt in context. */
function markerOf(body) {
  const text = JSON.stringify(body.messages ?? [])
  const found = [...text.matchAll(MARKER)]
  return found.length ? found[found.length - 1][1] : null
}

export function answerFor(word) {
  return `answer-${word}`
}

export async function startFakeModel() {
  const requests = []
  const hung = new Set()
  const server = createServer(async (req, res) => {
    if (req.method === 'GET' && req.url?.endsWith('/models')) {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ object: 'list', data: [{ id: 'fake-model', object: 'model' }] }))
      return
    }
    let raw = ''
    for await (const chunk of req) raw += chunk
    let body = {}
    try {
      body = JSON.parse(raw)
    } catch {}
    const word = markerOf(body)
    requests.push({
      word,
      messages: JSON.stringify(body.messages ?? []),
      system: JSON.stringify(body.messages?.filter((m) => m.role === 'system') ?? []),
      tools: (body.tools ?? []).map((t) => t.function?.name ?? t.name),
    })
    if (word?.startsWith('hang')) {
      hung.add(res)
      req.on('close', () => hung.delete(res))
      return
    }
    if (word?.startsWith('slow')) await new Promise((r) => setTimeout(r, 2000))
    const text = word ? answerFor(word) : 'no marker'
    const id = `chatcmpl-${Date.now()}`
    const chunk = (delta, finish = null) =>
      `data: ${JSON.stringify({
        id, object: 'chat.completion.chunk', created: Math.floor(Date.now() / 1000), model: 'fake-model',
        choices: [{ index: 0, delta, finish_reason: finish }],
      })}\n\n`
    if (body.stream === false) {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({
        id, object: 'chat.completion', model: 'fake-model',
        choices: [{ index: 0, message: { role: 'assistant', content: text }, finish_reason: 'stop' }],
        usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 },
      }))
      return
    }
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' })
    res.write(chunk({ role: 'assistant', content: '' }))
    res.write(chunk({ content: text }))
    res.write(chunk({}, 'stop'))
    res.end('data: [DONE]\n\n')
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    baseUrl: `http://127.0.0.1:${server.address().port}/v1`,
    requests,
    close: () => {
      for (const res of hung) res.destroy()
      server.closeAllConnections?.()
      return new Promise((resolve) => server.close(resolve))
    },
  }
}
