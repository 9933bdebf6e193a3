// `openclaw pier <command>`: every command of the pier-connector CLI (cli/pier-connector.js,
// the commands its usage lists: workers, status, publish, keygen, …), run inside the openclaw
// CLI with the gateway config's channels.pier account (SecretRefs resolved) as the config its
// flags start from. `--account <id>` picks the account; `--config <file>` replaces it.
import { createRequire } from 'node:module'
import { resolveAccount, SECRET_KEYS, isSecretRef, channelSection, legacySection } from './config.mjs'
import { accountAddonConfig } from './identity.mjs'

const require = createRequire(import.meta.url)

const CLI_DESCRIPTOR = {
  name: 'pier',
  description: 'Pier marketplace: live workers, server status, publish a task, keys (pier-connector CLI)',
  hasSubcommands: true,
}

/** The value of `--name X` / `--name=X` in a raw argument list. */
function flagValue(args, name) {
  for (let i = 0; i < args.length; i++) {
    if (args[i] === `--${name}`) return args[i + 1]
    if (args[i].startsWith(`--${name}=`)) return args[i].slice(name.length + 3)
  }
  return undefined
}

/**
 * The addon config of a channels.pier account, as the gateway would run it: shared keys and the
 * account's, PIER_* credentials for the default account, its ledger file (so `openclaw pier
 * ledger` reads what the gateway's worker writes), its identity file (so `openclaw pier identity`
 * shows and rotates the key the gateway's worker signs with), SecretRefs resolved through OpenClaw's secret
 * providers (env, file, exec).
 */
export async function gatewayAccountConfig(cfg, accountId, { resolveRefs, api } = {}) {
  const account = resolveAccount(cfg, accountId)
  const config = { ...accountAddonConfig(api, account) }
  const refs = SECRET_KEYS.filter((key) => isSecretRef(config[key]))
  if (refs.length) {
    resolveRefs ??= async (list) => {
      const { resolveSecretRefValues } = await import('openclaw/plugin-sdk/secret-ref-runtime')
      return resolveSecretRefValues(list, { config: cfg, env: process.env })
    }
    const values = await resolveRefs(refs.map((key) => config[key]))
    for (const key of refs) {
      const ref = config[key]
      const value = values.get(`${ref.source}:${ref.provider ?? 'default'}:${ref.id}`)
      if (typeof value !== 'string' || !value) throw new Error(`channels.pier ${key}: the SecretRef ${ref.source}:${ref.id} resolved to no value`)
      config[key] = value
    }
  }
  return { account, config }
}

/** `api.registerCli` for the plugin: `openclaw pier` and one subcommand per CLI command. */
export function registerPierCli(api) {
  api.registerCli(
    ({ program, config: cfg }) => {
      const cli = require('../cli/pier-connector.js')
      const pier = program
        .command('pier')
        .description(CLI_DESCRIPTOR.description)
        .addHelpText('after', `\nEach command takes the pier-connector CLI's options (openclaw pier <command> --help).\nThe config comes from channels.pier (--account <id> for another account); flags override it.`)
      for (const { name, summary } of cli.commands()) {
        pier
          .command(name)
          .description(summary)
          .argument('[args...]')
          .helpOption(false)
          .allowUnknownOption(true)
          .allowExcessArguments(true)
          .action(async (_args, _options, command) => {
            const args = command.args
            const prog = 'openclaw pier'
            if (args.includes('--help') || args.includes('-h') || flagValue(args, 'config') !== undefined || !(channelSection(cfg) ?? legacySection(cfg))) {
              return cli.run([name, ...args], { prog })
            }
            let base
            try {
              base = (await gatewayAccountConfig(cfg, flagValue(args, 'account'), { api })).config
            } catch (error) {
              process.stderr.write(`${prog}: ${error.message}\n`)
              process.exitCode = 2
              return
            }
            return cli.run([name, ...args], { prog, config: base })
          })
      }
    },
    { descriptors: [CLI_DESCRIPTOR] },
  )
}
