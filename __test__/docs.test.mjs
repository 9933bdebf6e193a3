// Every relative link in README.md and docs/*.md leads somewhere: the file exists, and a
// #fragment names a heading of the page it points to (GitHub's anchors). Node built-ins only.
//
//   node --test __test__/docs.test.mjs
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('..', import.meta.url))

/** The pages whose links are checked: the README and every page under docs/. */
function pages() {
  const docs = join(ROOT, 'docs')
  return [join(ROOT, 'README.md'), ...readdirSync(docs).filter((f) => f.endsWith('.md')).sort().map((f) => join(docs, f))]
}

/** A page's lines outside fenced code blocks, each with its line number. */
function proseLines(text) {
  const out = []
  let fence = null
  text.split('\n').forEach((line, i) => {
    const marker = /^\s*(`{3,}|~{3,})/.exec(line)
    if (marker) {
      if (!fence) fence = marker[1][0]
      else if (marker[1][0] === fence) fence = null
      return
    }
    if (!fence) out.push({ line: line.replace(/<!--.*?-->/g, ''), number: i + 1 })
  })
  return out
}

/** The targets of inline links and images (`[text](target)`) on a page, code spans left out. */
export function linksOf(text) {
  const links = []
  for (const { line, number } of proseLines(text)) {
    const prose = line.replace(/(`+)[^`]*?\1/g, '')
    for (const m of prose.matchAll(/!?\[(?:[^\][]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)) {
      links.push({ target: m[1], line: number })
    }
  }
  return links
}

/** GitHub's anchor for a heading's text (github-slugger): lower case, punctuation dropped. */
export function slug(heading) {
  return heading
    .replace(/!?\[([^\]]*)\]\([^)]*\)/g, '$1') // a link shows its text
    .replace(/<[^>]+>/g, '')
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{M}\p{N}\p{Pc}\- ]/gu, '')
    .replace(/ /g, '-')
}

/** Every anchor a page has: one per heading, repeats numbered as GitHub numbers them. */
export function anchorsOf(text) {
  const anchors = new Set()
  const seen = new Map()
  for (const { line } of proseLines(text)) {
    const m = /^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$/.exec(line)
    if (!m) continue
    const base = slug(m[1])
    const n = seen.get(base) ?? 0
    seen.set(base, n + 1)
    anchors.add(n ? `${base}-${n}` : base)
  }
  return anchors
}

/** What is wrong with the links of the page at `file` (text `text`): one line each. */
export function brokenLinks(file, text = readFileSync(file, 'utf8')) {
  const problems = []
  const where = (line) => `${relative(ROOT, file)}:${line}`
  for (const { target, line } of linksOf(text)) {
    if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue // http:, https:, mailto:: not relative
    const hash = target.indexOf('#')
    const path = decodeURIComponent(hash < 0 ? target : target.slice(0, hash))
    const fragment = hash < 0 ? null : decodeURIComponent(target.slice(hash + 1))
    if (path.startsWith('/')) {
      problems.push(`${where(line)}: ${target} is absolute; link relative to the page`)
      continue
    }
    const dest = path ? resolve(dirname(file), path) : file
    if (!dest.startsWith(ROOT)) {
      problems.push(`${where(line)}: ${target} leads outside the repository`)
      continue
    }
    if (path && !existsSync(dest)) {
      problems.push(`${where(line)}: ${target}: no such file ${relative(ROOT, dest)}`)
      continue
    }
    if (fragment === null) continue
    if (path && (statSync(dest).isDirectory() || !dest.endsWith('.md'))) {
      problems.push(`${where(line)}: ${target}: a #fragment needs a Markdown page`)
      continue
    }
    const anchors = anchorsOf(dest === file ? text : readFileSync(dest, 'utf8'))
    if (!anchors.has(fragment)) problems.push(`${where(line)}: ${target}: ${relative(ROOT, dest)} has no heading #${fragment}`)
  }
  return problems
}

describe('documentation links', () => {
  it('every relative link in README.md and docs/*.md resolves, #fragments to a heading', () => {
    const problems = pages().flatMap((file) => brokenLinks(file))
    assert.deepEqual(problems, [], `broken links:\n${problems.join('\n')}`)
  })

  it('the README links into docs/, and every page of docs/ is linked from the README', () => {
    const readme = join(ROOT, 'README.md')
    const linked = new Set(
      linksOf(readFileSync(readme, 'utf8'))
        .map(({ target }) => target.split('#')[0])
        .filter(Boolean)
        .map((t) => resolve(ROOT, t)),
    )
    const unlinked = pages().slice(1).filter((page) => !linked.has(page)).map((page) => relative(ROOT, page))
    assert.deepEqual(unlinked, [], 'pages of docs/ the README does not link to')
  })

  it('the checker catches a missing file, a missing heading and a link to itself that goes nowhere', () => {
    const file = join(ROOT, 'docs', 'example.md')
    const text = [
      '# Example',
      '## A heading (with `code`, punctuation; and v1.0)',
      'Fine: [this page](#a-heading-with-code-punctuation-and-v10), [the README](../README.md#the-two-commands), [a site](https://example.invalid/x).',
      'Broken: [gone](nowhere.md), [no heading](../README.md#no-such-heading), [here](#missing).',
      '`[in code](not-checked.md)`',
      '```',
      '[in a fence](not-checked-either.md)',
      '```',
    ].join('\n')
    const problems = brokenLinks(file, text)
    assert.equal(problems.length, 3, problems.join('\n'))
    assert.match(problems[0], /docs\/example\.md:4: nowhere\.md: no such file docs\/nowhere\.md/)
    assert.match(problems[1], /README\.md has no heading #no-such-heading/)
    assert.match(problems[2], /#missing: docs\/example\.md has no heading #missing/)
  })

  it("anchors follow GitHub's: repeated headings are numbered", () => {
    assert.equal(slug('Signed requests and results (new; v1.0 payloads unchanged)'), 'signed-requests-and-results-new-v10-payloads-unchanged')
    assert.equal(slug('`Pier-Sender` (request header)'), 'pier-sender-request-header')
    assert.equal(slug("What a stranger's job can reach"), 'what-a-strangers-job-can-reach')
    assert.deepEqual([...anchorsOf('## Notes\n## Notes\n## Notes')], ['notes', 'notes-1', 'notes-2'])
  })
})
