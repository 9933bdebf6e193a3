// A minimal npm registry on loopback that serves packed tarballs, so an install resolves the
// per-platform binary package exactly as it would from the public registry (metadata,
// tarball URL, integrity), without the network. Only this project's scope is pointed here.
import { createServer } from 'node:http'
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { execFileSync } from 'node:child_process'

function manifestOf(tgz) {
  return JSON.parse(execFileSync('tar', ['-xzOf', tgz, 'package/package.json'], { encoding: 'utf8' }))
}

/** @param {string[]} tarballs paths of `npm pack` outputs */
export async function startNpmRegistry(tarballs) {
  const packages = new Map()
  for (const file of tarballs) {
    const data = readFileSync(file)
    const manifest = manifestOf(file)
    packages.set(manifest.name, { manifest, data })
  }
  const server = createServer((req, res) => {
    const url = decodeURIComponent(req.url ?? '/')
    const tarball = /^\/(.+)\/-\/[^/]+\.tgz$/.exec(url)
    const name = tarball ? tarball[1] : url.slice(1)
    const pkg = packages.get(name)
    if (!pkg) {
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not found"}')
      return
    }
    if (tarball) {
      res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(pkg.data)
      return
    }
    const { port } = server.address()
    const version = pkg.manifest.version
    const base = name.split('/').pop()
    const doc = {
      name,
      'dist-tags': { latest: version },
      versions: {
        [version]: {
          ...pkg.manifest,
          dist: {
            tarball: `http://127.0.0.1:${port}/${name}/-/${base}-${version}.tgz`,
            shasum: createHash('sha1').update(pkg.data).digest('hex'),
            integrity: `sha512-${createHash('sha512').update(pkg.data).digest('base64')}`,
          },
        },
      },
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(doc))
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${server.address().port}/`,
    close: () => new Promise((resolve) => server.close(resolve)),
  }
}
