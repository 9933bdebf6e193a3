// The native addon, loaded once through its generated CommonJS loader.
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
export const { PierWorker, PierClient } = require('../index.js')
