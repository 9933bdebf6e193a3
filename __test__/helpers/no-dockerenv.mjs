// Preloaded into a test gateway (NODE_OPTIONS=--import) on machines that carry a stray
// /.dockerenv without being a container. OpenClaw 2026.9.6 takes that file for proof that the
// gateway runs in Docker (existsSync in its sandbox mount planning, accessSync in
// isContainerEnvironment), then looks for its own container, finds none and refuses every
// sandbox. This makes the file absent for that one process tree, and changes nothing else on
// the machine: helpers/docker.mjs loads it only when /proc/1/cgroup shows no container.
import fs from 'node:fs'
import { syncBuiltinESMExports } from 'node:module'

const STRAY = '/.dockerenv'
const absent = (syscall) => Object.assign(new Error(`ENOENT: no such file or directory, ${syscall} '${STRAY}'`), { code: 'ENOENT', errno: -2, syscall, path: STRAY })

const { existsSync, accessSync, statSync } = fs
fs.existsSync = (path) => (path === STRAY ? false : existsSync(path))
fs.accessSync = (path, mode) => {
  if (path === STRAY) throw absent('access')
  return accessSync(path, mode)
}
fs.statSync = (path, options) => {
  if (path === STRAY) {
    if (options?.throwIfNoEntry === false) return undefined
    throw absent('stat')
  }
  return statSync(path, options)
}
// Named imports (`import { existsSync } from 'node:fs'`) see the replacements too.
syncBuiltinESMExports()
