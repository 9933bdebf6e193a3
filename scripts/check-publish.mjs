// prepublishOnly guard: the published main package stays thin. Binaries belong in the
// per-platform packages (npm/<platform>/, filled by `napi artifacts`); a locally built
// pier-connector.<platform>.node in the root would otherwise be published inside the main package.
import { readdirSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
const binaries = readdirSync(root).filter((f) => /^pier-connector\..+\.node$/.test(f))
if (binaries.length > 0) {
  console.error(`check-publish: ${binaries.join(', ')} in the package root would be published in the main package; ` +
    'remove it (the binaries ship in npm/<platform>/ via napi artifacts)')
  process.exit(1)
}
