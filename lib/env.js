'use strict'
// The PIER_* environment variables, read one way by the CLI and the plugin: they supply what the
// config leaves unset and never override it. The connection's login comes as a whole: the
// environment's is used only when the config names none of its own (a token from one place and
// a user from another would be a login nobody configured).

const LOGIN = [
  ['token', 'PIER_TOKEN'],
  ['user', 'PIER_USER'],
  ['password', 'PIER_PASSWORD'],
  ['nkeySeed', 'PIER_NKEY_SEED'],
]
const SIGNING = ['signingSeed', 'PIER_SIGNING_SEED']

/** Every variable read here: what a job's own process must not inherit. */
const ENV_VARIABLES = [...LOGIN, SIGNING].map(([, name]) => name)

const isSet = (v) => v !== undefined && v !== null && v !== ''

/** Whether the config names a login: a credential key, or user-info in a server URL. */
function hasLogin(config) {
  if (['token', 'user', 'password', 'nkeySeed', 'credsFile'].some((k) => isSet(config[k]))) return true
  const urls = [config.natsUrl, ...(config.servers ?? [])]
    .filter((u) => typeof u === 'string')
    .flatMap((u) => u.split(','))
  return urls.some((u) => /^[a-z]+:\/\/[^/]*@/i.test(u.trim()))
}

/** `config` with what the environment supplies filled in, and the names of the variables used. */
function withEnvironment(config, env = process.env) {
  const out = { ...config }
  const used = []
  const fill = ([key, name]) => {
    if (env[name]) {
      out[key] = env[name]
      used.push(name)
    }
  }
  if (!hasLogin(config)) LOGIN.forEach(fill)
  if (!isSet(config.signingSeed)) fill(SIGNING)
  return { config: out, used }
}

module.exports = { ENV_VARIABLES, hasLogin, withEnvironment }
