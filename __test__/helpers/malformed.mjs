// Deterministic generator of malformed job payloads: random bytes, deep nesting, huge strings,
// wrong field types, duplicate keys, __proto__ keys. None of them is a valid job.

function rng(seed) {
  let x = seed >>> 0 || 1
  return () => {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    return (x >>> 0) / 4294967296
  }
}

export function malformedPayloads(count, seed = 1) {
  const random = rng(seed)
  const int = (n) => Math.floor(random() * n)
  const wrongType = () => [42, -1.5, true, null, [], {}, ['x'], { a: 1 }][int(8)]
  const makers = [
    () => Uint8Array.from({ length: 1 + int(64) }, () => int(256)), // random bytes
    () => Uint8Array.from([0x7b, 0x22, 0x74, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d]), // invalid UTF-8
    () => '['.repeat(200 + int(5000)), // deep nesting
    () => `{"task":${'{"a":'.repeat(300)}1${'}'.repeat(300)}}`,
    () => JSON.stringify({ id: `big${int(1e6)}`, task: 'x'.repeat(1024 * 1024 + int(1000)) }), // over maxPayloadBytes
    () => JSON.stringify({ id: `w${int(1e6)}`, type: 'task_request', task: wrongType() }),
    () => JSON.stringify({ id: `w${int(1e6)}`, task: 't', timeoutMs: ['soon', -5, 0, {}, true][int(5)] }),
    () => JSON.stringify({ id: `w${int(1e6)}`, task: 't', meta: ['m', 3, [1]][int(3)] }),
    () => JSON.stringify({ id: wrongType() ?? 7, task: 't' }),
    () => `{"id":"d${int(1e6)}","task":"first","task":${JSON.stringify(wrongType())},"type":"task_request"}`, // duplicate keys
    () => `{"__proto__":{"task":"polluted"},"constructor":{"prototype":{"task":"x"}},"id":"p${int(1e6)}"}`,
    () => JSON.stringify([{ task: 't' }]),
    () => ['null', 'true', '1e999', '"task"', '', ' ', '{', '}', '{"task":}', '{"task":"t",}'][int(10)],
    () => JSON.stringify({ type: ['task_result', 'TASK_REQUEST', 7][int(3)], task: 't', id: `y${int(1e6)}` }),
    () => JSON.stringify({ prompt: wrongType(), content: wrongType(), task: '' }),
  ]
  return Array.from({ length: count }, (_, i) => makers[i % makers.length]())
}
