// End to end: `openclaw channels add --channel pier` in a pseudo-terminal (util-linux
// `script`), typed as a person would, against the real OpenClaw CLI (Node 24,
// openclaw@2026.9.6): optional fields take Enter, the worker id Enter takes is a real one,
// PIER_TOKEN is offered when it is set, Esc goes back one step, a re-run offers to keep what is
// stored (the token too), and the token can be left out.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { startFakeModel } from '../helpers/fake-model.mjs'
import { createOpenClawHome, packPlugin } from '../helpers/openclaw.mjs'
import { runWizard } from '../helpers/wizard.mjs'

const ENV_REF = { source: 'env', provider: 'default', id: 'PIER_TOKEN' }
let model, home

const wizard = (steps, env) => runWizard(home, steps, env)

const pier = () => home.readConfig().channels?.pier

before(async () => {
  model = await startFakeModel()
  home = await createOpenClawHome({ modelBaseUrl: model.baseUrl, registryUrl: 'http://127.0.0.1:9/' })
  await home.cli(['plugins', 'install', '--link', packPlugin().dir, '--force', '--accept-capabilities'])
})

after(async () => {
  await model?.close()
  home?.cleanup()
})

describe('the setup wizard in a terminal', () => {
  it('first run with PIER_TOKEN set: Enter on optional fields, Esc goes back, PIER_TOKEN offered and stored as a reference', async () => {
    await wizard(
      [
        // The default shown is a placeholder: what is typed is the whole value, nothing appended to it.
        { prompt: /NATSURLofthePierserver.*wss:\/\/pier\.gholl\.com\/nexus/, keys: 'nats://127.0.0.1:4222\r' },
        // Enter takes the worker id shown (a fresh agent-xxxxxx).
        { prompt: /Workerid,showntojobpublishers.*agent-[0-9a-f]{6}/, keys: '\r' },
        // Esc on the wallet goes back to the worker id, which gets another value.
        { prompt: /Walletaddressforrewards\(optional:Enterskips\)/, keys: '\x1b' },
        { prompt: /Workerid,showntojobpublishers/, keys: '\x15esc-worker\r' },
        { prompt: /Walletaddressforrewards\(optional:Enterskips\)/, keys: '\r' },
        { prompt: /NATStoken.*UsePIER_TOKEN\(setinthisshell\)/, keys: '\r' },
      ],
      { PIER_TOKEN: 'wizard-token-not-to-be-stored' },
    )
    const section = pier()
    assert.equal(section.natsUrl, 'nats://127.0.0.1:4222')
    assert.equal(section.workerId, 'esc-worker')
    assert.equal(section.walletAddress, undefined, 'an empty optional wallet is left out')
    assert.deepEqual(section.token, ENV_REF)
    assert.doesNotMatch(JSON.stringify(home.readConfig()), /wizard-token-not-to-be-stored/)
  })

  it('a re-run offers to keep each stored value, the token too', async () => {
    const before = pier()
    await wizard([
      { prompt: /NATSURLofthePierserver.*Keepit\?/, keys: '\r' },
      { prompt: /Workerid,showntojobpublishers.*Keepit\?/, keys: '\r' },
      { prompt: /Walletaddressforrewards/, keys: '\x150xW1Z\r' },
      { prompt: /NATStoken.*Keepthestoredtoken.*areferencetotheenvironmentvariablePIER_TOKEN/, keys: '\r' },
    ])
    assert.deepEqual(pier(), { ...before, walletAddress: '0xW1Z' })
  })

  it('the token is optional: "no token" removes it', async () => {
    await wizard([
      { prompt: /NATSURLofthePierserver.*Keepit\?/, keys: '\r' },
      { prompt: /Workerid.*Keepit\?/, keys: '\r' },
      { prompt: /Walletaddress.*Keepit\?/, keys: '\r' },
      // The second option, 'No token: remove it' (the terminal shows only the one under the cursor).
      { prompt: /NATStoken.*Keepthestoredtoken/, keys: '\x1b[B\r' },
    ])
    const section = pier()
    assert.equal(section.token, undefined)
    assert.equal(section.workerId, 'esc-worker')
    assert.equal(section.walletAddress, '0xW1Z')
  })
})
