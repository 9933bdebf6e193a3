// `openclaw channels add --channel pier` in a pseudo-terminal (util-linux `script`), typed as a
// person would: for the e2e tests of the setup wizard.
import { spawn } from 'node:child_process'
import { OPENCLAW } from './openclaw.mjs'
import { sleep } from './wait.mjs'

/**
 * Runs the wizard in `home` and answers `steps` in order, each `{ prompt, keys }`: `prompt` is
 * matched against the active prompt's text without escape sequences, box drawing or white
 * space; then its keys are typed. OpenClaw's own prompts before the first step and after the last
 * take Enter. Resolves with the whole screen text; fails on a step whose prompt does not come.
 *
 * A key is typed only in answer to a prompt drawn since the last key (clack marks the active
 * prompt with ◆), once the screen has been still for a moment (Esc also needs readline's escape
 * timeout). A key typed into the silence while the CLI loads waits in the terminal and is taken
 * by whichever prompt comes first: a busy machine's run once saw the URL prompt take an Enter
 * meant for a later one.
 */
export async function runWizard(home, steps, env = {}) {
  const child = spawn('script', ['-qfec', `${OPENCLAW} channels add --channel pier`, '/dev/null'], {
    env: { ...home.env, TERM: 'xterm', ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  let screen = ''
  // What was drawn since the last key was typed.
  let drawn = ''
  let lastOutput = Date.now()
  let lastKey = Date.now()
  const onData = (chunk) => {
    const text = chunk.toString().replace(/\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07/g, '').replace(/[\s│]/g, '')
    screen += text
    drawn += text
    lastOutput = Date.now()
  }
  child.stdout.on('data', onData)
  child.stderr.on('data', onData)
  // An Enter typed as the wizard exits meets a closed pipe (EPIPE): the exit decides, not that.
  child.stdin.on('error', () => {})
  const exited = new Promise((resolve) => child.once('exit', resolve))
  const plain = (text) => text.replace(/[◆◇●○■□└┌─]/g, '')
  let step = 0
  const type = (keys) => {
    drawn = ''
    child.stdin.write(keys)
    lastKey = lastOutput = Date.now()
  }
  try {
    while (child.exitCode === null) {
      await sleep(150)
      const waiting = step < steps.length ? `step ${step}: no prompt ${steps[step].prompt}` : 'the wizard did not end'
      if (Date.now() - lastKey > 60_000) throw new Error(`${waiting} within 60 s of the last key; screen:\n${plain(screen).slice(-1500)}`)
      if (Date.now() - lastOutput < 700 || !drawn.includes('◆')) continue
      const active = plain(drawn.slice(drawn.lastIndexOf('◆')))
      if (step >= steps.length) type('\r')
      else if (steps[step].prompt.test(active)) type(steps[step++].keys)
      // Before Pier's first prompt OpenClaw asks its own (which account): Enter.
      else if (step === 0) type('\r')
      else throw new Error(`${waiting}; the prompt shown instead:\n${active.slice(-1500)}`)
    }
    if (step < steps.length) throw new Error(`answered ${step} of ${steps.length} prompts:\n${plain(screen).slice(-1500)}`)
    return plain(screen)
  } finally {
    child.kill()
    await exited
  }
}
