// The demo (scripts/demo.sh) is not part of the test command: it builds in release mode and
// starts a gateway of its own. Its pieces are: the test helpers it imports (each exercised by
// the tests that use them: e2e/channel.test.mjs runs channels add, channels status --probe, a
// job through an agent turn and /pier the way the demo does) and the CLI. What can rot unseen
// is the demo's own file: here it must parse, and every name it imports must still exist.
import { it } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const DEMO = fileURLToPath(new URL('../scripts/demo.mjs', import.meta.url))

it('scripts/demo.mjs parses and every name it imports from the helpers exists', async () => {
  execFileSync(process.execPath, ['--check', DEMO])
  const source = readFileSync(DEMO, 'utf8')
  const imports = [...source.matchAll(/^import \{([^}]+)\} from '(\.\.\/[^']+)'/gm)]
  assert.ok(imports.length >= 3, 'the demo imports the nats-server, fake model and OpenClaw helpers')
  for (const [, names, from] of imports) {
    const module = await import(new URL(from, new URL('../scripts/', import.meta.url)))
    for (const name of names.split(',').map((n) => n.trim()).filter(Boolean)) {
      assert.ok(name in module, `${from} exports ${name}`)
    }
  }
  for (const script of ['scripts/setup.sh', 'scripts/setup-e2e.sh', 'scripts/build.sh']) {
    assert.match(readFileSync(new URL(`../scripts/demo.sh`, import.meta.url), 'utf8'), new RegExp(`bash ${script}`), `demo.sh runs ${script}`)
  }
})
