// The package entry and the one loader over napi's generated index.js, for the CLI and the
// plugin alike. It loads the native addon on first use of an export, not when required: OpenClaw
// evaluates the plugin again for every plugin instance (each config or plugin reload makes
// several) and keeps every copy of the addon it loaded mapped, so only an instance that runs a
// worker or a client loads one. napi's load failure (a 56-line "Cannot find native binding"
// trace) becomes one line that names this platform, the supported ones and how to build from
// source; where the addon cannot load the plugin still loads, and each use throws that line.
'use strict'

const pkg = require('./package.json')

const ARCH = { x86_64: 'x64', aarch64: 'arm64', i686: 'ia32', armv7: 'arm' }
const OS = { 'apple-darwin': ['darwin'], 'unknown-linux-gnu': ['linux', 'gnu'], 'unknown-linux-musl': ['linux', 'musl'], 'pc-windows-msvc': ['win32', 'msvc'] }

/** `x86_64-unknown-linux-gnu` → `linux-x64-gnu`, the napi-rs platform name of a Rust target. */
function platformOfTarget(triple) {
  const [arch, ...rest] = triple.split('-')
  const [os, abi] = OS[rest.join('-')] ?? [rest.join('-')]
  return [os, ARCH[arch] ?? arch, abi].filter(Boolean).join('-')
}

/** The platforms with a prebuilt binary package, from package.json's napi.targets. */
const SUPPORTED = pkg.napi.targets.map(platformOfTarget)

function isMusl() {
  const report = typeof process.report?.getReport === 'function' ? process.report.getReport() : null
  if (report?.header?.glibcVersionRuntime) return false
  return Array.isArray(report?.sharedObjects) && report.sharedObjects.some((f) => /libc\.musl-|ld-musl-/.test(f))
}

/** This process's napi-rs platform name, e.g. `linux-arm64-musl` or `darwin-x64`. */
function currentPlatform() {
  const abi = process.platform === 'linux' ? (isMusl() ? 'musl' : 'gnu') : process.platform === 'win32' ? 'msvc' : ''
  return [process.platform, process.arch, abi].filter(Boolean).join('-')
}

const REPO = String(pkg.repository?.url ?? pkg.homepage).replace(/^git\+/, '').replace(/\.git$/, '')
const FROM_SOURCE = `build from source: install Rust, clone ${REPO}, run \`npm ci && npm run build\` there and install that checkout (README "Platforms and releases")`

/** The first load error that is not "module not found": a binary that exists but cannot load. */
function brokenBinary(error) {
  for (let e = error?.cause; e; e = e.cause) {
    if (!/Cannot find module|MODULE_NOT_FOUND/.test(e.message ?? '')) return String(e.message).split('\n')[0]
  }
  return null
}

/** One line (with a stable code first) for a failed load of the native addon. */
function describeLoadFailure(error, platform = currentPlatform()) {
  const supported = `supported: ${SUPPORTED.join(', ')}`
  if (!SUPPORTED.includes(platform)) {
    return `PIER_UNSUPPORTED_PLATFORM: no prebuilt pier-connector binary for ${platform} (${supported}); ${FROM_SOURCE}`
  }
  const broken = brokenBinary(error)
  if (broken) {
    return `PIER_ADDON_LOAD: the pier-connector binary for ${platform} failed to load: ${broken}; reinstall the plugin, or ${FROM_SOURCE}`
  }
  return `PIER_ADDON_MISSING: the pier-connector binary for ${platform} is not installed (package ${pkg.napi.packageName}-${platform}, an optional dependency: do not install with --omit=optional or --no-optional); reinstall, or ${FROM_SOURCE}`
}

/** index.js, or an Error whose message is one line. */
function loadAddon() {
  try {
    return require('./index.js')
  } catch (error) {
    if (!/Cannot find native binding|Failed to load native binding/.test(error?.message ?? '')) throw error
    const clear = new Error(describeLoadFailure(error))
    clear.code = clear.message.slice(0, clear.message.indexOf(':'))
    clear.stack = clear.message // never the napi trace: the message is all a user needs
    // Not `cause`: hosts print the cause chain (OpenClaw joins it into the service health).
    Object.defineProperty(clear, 'napiError', { value: error, enumerable: false })
    throw clear
  }
}

let addon = null
let loadError = null

function load() {
  if (!addon && !loadError) {
    try {
      addon = loadAddon()
      // napi starts an async runtime (threads) for every copy it loads: a copy runs threads only
      // while one of its workers runs or clients is open (the first use starts them again).
      addon.releaseRuntime()
    } catch (error) {
      loadError = error
    }
  }
  if (loadError) throw loadError
  return addon
}

// index.js's values, as index.d.ts declares them (load-addon.d.ts re-exports its declarations;
// contract.test.mjs checks the two agree).
const EXPORTS = ['PierWorker', 'PierClient', 'generateUserKey', 'identity', 'ledgerDays', 'rotateIdentity', '__napiBindingTarget']
for (const name of EXPORTS) {
  Object.defineProperty(module.exports, name, { enumerable: true, get: () => load()[name] })
}
/** Ends this copy's runtime threads once none of its workers or clients runs; true when none was loaded. */
module.exports.releaseRuntime = () => (addon ? addon.releaseRuntime() : true)
/** Why the addon cannot load here (an Error with a one-line message), or null; loads it. */
module.exports.addonLoadError = () => {
  try {
    load()
    return null
  } catch (error) {
    return error
  }
}
