// End to end: `openclaw channels add --channel pier` in a pseudo-terminal (util-linux
// `script`), typed as a person would, against the real OpenClaw CLI (Node 24,
// openclaw@2026.9.6): optional fields take Enter, the worker id Enter takes is a real one,
// PIER_TOKEN is offered when it is set, Esc goes back one step, a re-run offers to keep what is
// stored (the token too), and the token can be left out.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { startFakeModel } from '../helpers/fake-model.mjs'
import { createOpenClawHome, OPENCLAW, packPlugin } from '../helpers/openclaw.mjs'
import { sleep } from '../helpers/addon.mjs'

const ENV_REF = { source: 'env', provider: 'default', id: 'PIER_TOKEN' }
let model, home

/**
 * Runs the wizard and answers `steps` in order: each waits for its prompt (screen text without
 * escape sequences, box drawing or white space) among what appeared since the step before, then
 * types its keys. OpenClaw's own prompts before the first step and after the last take Enter.
 * Fails on a prompt that does not come.
 */
async function wizard(steps, env = {}) {
  const child = spawn('script', ['-qfec', `${OPENCLAW} channels add --channel pier`, '/dev/null'], {
    env: { ...home.env, TERM: 'xterm', ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  let screen = ''
  let lastOutput = Date.now()
  const onData = (chunk) => {
    screen += chunk.toString().replace(/\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07/g, '').replace(/[\s│◆◇●○■□└┌─]/g, '')
    lastOutput = Date.now()
  }
  child.stdout.on('data', onData)
  child.stderr.on('data', onData)
  // An Enter typed as the wizard exits meets a closed pipe (EPIPE): the exit decides, not that.
  child.stdin.on('error', () => {})
  const exited = new Promise((resolve) => child.once('exit', resolve))
  let from = 0
  let step = 0
  const deadline = Date.now() + 120_000
  try {
    while (child.exitCode === null && Date.now() < deadline) {
      await sleep(150)
      // Let the prompt finish drawing (Esc needs readline's escape timeout too).
      if (Date.now() - lastOutput < 700) continue
      const fresh = screen.slice(from)
      if (step < steps.length) {
        if (!steps[step].prompt.test(fresh)) {
          // Before Pier's first prompt OpenClaw asks its own (which account): Enter.
          if (step === 0 && Date.now() - lastOutput > 1500) {
            from = screen.length
            child.stdin.write('\r')
            lastOutput = Date.now()
          }
          if (Date.now() - lastOutput > 15_000) throw new Error(`step ${step}: no prompt ${steps[step].prompt}; screen since the step before:\n${fresh.slice(-1500)}`)
          continue
        }
        from = screen.length
        child.stdin.write(steps[step].keys)
        step++
      } else {
        child.stdin.write('\r')
      }
      lastOutput = Date.now()
    }
    assert.equal(step, steps.length, `answered ${step} of ${steps.length} prompts:\n${screen.slice(-1500)}`)
    return screen
  } finally {
    child.kill()
    await exited
  }
}

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
