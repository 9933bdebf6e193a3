// The built addon (Linux, glibc) keeps the code a worker runs from loading to its first jobs in
// one section, `.text.pier_hot` (build/hot-text.ld, passed by build.rs). Its names go stale when
// functions are renamed or the toolchain changes how it names them; the section then shrinks, and
// this test says so: run `node scripts/hot-text.mjs` and commit build/hot-text.ld.
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const glibc = process.platform === 'linux' && process.report.getReport().header.glibcVersionRuntime !== undefined

/** Section name -> size, from an ELF64 little-endian file's section headers. */
function sections(file) {
  const elf = readFileSync(file)
  assert.equal(elf.readUInt32BE(0), 0x7f454c46, `${file} is not an ELF file`)
  assert.ok(elf[4] === 2 && elf[5] === 1, `${file} is not a 64-bit little-endian ELF file`)
  const shoff = Number(elf.readBigUInt64LE(0x28))
  const size = elf.readUInt16LE(0x3a)
  const count = elf.readUInt16LE(0x3c)
  const header = (i) => shoff + i * size
  const names = Number(elf.readBigUInt64LE(header(elf.readUInt16LE(0x3e)) + 0x18))
  const out = new Map()
  for (let i = 0; i < count; i++) {
    const name = names + elf.readUInt32LE(header(i))
    out.set(elf.toString('latin1', name, elf.indexOf(0, name)), Number(elf.readBigUInt64LE(header(i) + 0x20)))
  }
  return out
}

describe('hot text layout', { skip: !glibc && 'the layout applies to Linux glibc builds only' }, () => {
  it('holds what build/hot-text.ld selected when it was generated (its names are not stale)', () => {
    const script = readFileSync(join(ROOT, 'build', 'hot-text.ld'), 'utf8')
    const selected = Number(/section-bytes: (\d+)/.exec(script)?.[1])
    const start = Number(/start-bytes: (\d+)/.exec(script)?.[1])
    assert.ok(selected >= start && start > 100_000, 'build/hot-text.ld names what its patterns select')
    const addon = join(ROOT, `pier-connector.linux-${process.arch}-gnu.node`)
    const hot = sections(addon).get('.text.pier_hot')
    assert.ok(hot !== undefined, `${addon} has no .text.pier_hot section: build.rs did not pass build/hot-text.ld`)
    // The shipped build's code differs from the recording build's by little (their hashes differ,
    // not their functions); much less means names that no longer match anything.
    assert.ok(
      hot >= 0.9 * selected,
      `.text.pier_hot holds ${hot} bytes, less than 90 % of the ${selected} its patterns selected: they are stale, run node scripts/hot-text.mjs`,
    )
  })
})
