// The JS of the package imports in one direction: no module of plugin/, cli/, lib/ or the root
// reaches itself again through what it imports (a cycle makes load order decide what a module
// sees, and made approval.mjs and tool.mjs one module in two files).
import { it } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, readdirSync, existsSync } from 'node:fs'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('..', import.meta.url))

/** Relative imports and requires of a file, comments (JSDoc `import('…')` types) left out. */
function importsOf(file) {
  const code = readFileSync(file, 'utf8')
    .replace(/\/\*[\s\S]*?\*\//g, '')
    .replace(/(^|[^:'"`])\/\/.*$/gm, '$1')
  return [...code.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+|\brequire\s*\(\s*)['"](\.{1,2}\/[^'"]+)['"]/g)]
    .map((m) => join(dirname(file), m[1]))
    .filter((p) => existsSync(p))
}

function importCycles(dirs) {
  const files = dirs.flatMap((d) => readdirSync(join(ROOT, d)).filter((f) => /\.(mjs|cjs|js)$/.test(f)).map((f) => join(ROOT, d, f)))
  const cycles = []
  const done = new Set()
  const visit = (file, path) => {
    if (path.includes(file)) return cycles.push([...path.slice(path.indexOf(file)), file].map((f) => relative(ROOT, f)).join(' -> '))
    if (done.has(file)) return
    for (const next of importsOf(file)) visit(next, [...path, file])
    done.add(file)
  }
  for (const file of files) visit(file, [])
  return cycles
}

it('no import cycle in plugin/, cli/, lib/ and the root modules', () => {
  assert.deepEqual(importCycles(['plugin', 'cli', 'lib', '.']), [])
})

it('the check finds a cycle when there is one', () => {
  assert.deepEqual(importCycles(['__test__/fixtures/import-cycle']), ['__test__/fixtures/import-cycle/a.mjs -> __test__/fixtures/import-cycle/b.mjs -> __test__/fixtures/import-cycle/a.mjs'])
})
