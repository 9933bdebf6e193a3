// The CLI worker's `--exec CMD`: each job runs CMD in a shell of its own, with the task on
// stdin; its stdout is the result. Each job's shell leads its own process group, so cancelling
// the job (deadline, shutdown) kills everything it started, and whatever the command left
// running in the background dies when it exits.
'use strict'

const { spawn } = require('node:child_process')
const { StringDecoder } = require('node:string_decoder')

// What a job's command gets in its environment. Node refuses a NUL byte in an environment
// value, so a job carrying one is answered with a one-line INVALID_REQUEST instead.
const JOB_ENV = [
  ['PIER_JOB_ID', 'id', (job) => job.id],
  ['PIER_TIMEOUT_MS', 'timeoutMs', (job) => String(job.timeoutMs)],
  ['PIER_SYSTEM_PROMPT', 'systemPrompt', (job) => job.systemPrompt ?? ''],
  ['PIER_SENDER', 'sender', (job) => job.sender ?? ''],
  ['PIER_SENDER_KEY', 'senderKey', (job) => job.senderKey ?? ''],
]
// How long a cancelled job's commands get after SIGTERM before the group is SIGKILLed.
const KILL_GRACE_MS = 500
/** A command's output beyond this is no answer: 64 MiB is the largest max_payload NATS allows. */
const MAX_RESULT_BYTES = 64 * 1024 * 1024

/** Signals every process of a job's process group (the shell and all it started). */
function signalGroup(child, signal) {
  if (child.pid === undefined) return
  try {
    process.kill(-child.pid, signal)
  } catch {
    // ESRCH: the group is gone already.
  }
}

/** Ends a job's processes: SIGTERM to the group, SIGKILL after a short grace. */
function cancelJob(child) {
  if (!child || child.cancelTimer) return
  signalGroup(child, 'SIGTERM')
  child.cancelTimer = setTimeout(() => signalGroup(child, 'SIGKILL'), KILL_GRACE_MS)
}

/**
 * A PierWorker handler that runs `command` per job and resolves to its stdout. `running` maps
 * each job's run key (never its id: two requesters may choose the same) to its shell while it
 * runs (for cancelJob); `withheldEnv` names the worker's own
 * variables (its credentials) that a stranger's task must not get.
 * @param {string} command
 * @param {Map<string, import('node:child_process').ChildProcess>} running
 * @param {string[]} withheldEnv
 */
function execHandler(command, running, withheldEnv) {
  return (job, context) => {
    const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !withheldEnv.includes(name)))
    for (const [variable, field, value] of JOB_ENV) {
      const text = value(job)
      if (text.includes('\0')) {
        return { error: { code: 'INVALID_REQUEST', message: `${field} contains a NUL byte, which a command environment cannot carry` } }
      }
      env[variable] = text
    }
    return new Promise((resolve, reject) => {
      let child
      try {
        child = spawn('sh', ['-c', command], { stdio: ['pipe', 'pipe', 'pipe'], env, detached: true })
      } catch (error) {
        reject(new Error(`could not run the command (${error.code ?? 'spawn failed'})`))
        return
      }
      running.set(job.runKey, child)
      const stdout = []
      let stdoutBytes = 0
      // A requester that asked for progress gets the output as it comes (protocol v1.1
      // partials). The result drops one final line break, so a chunk's trailing line break waits
      // for more output: all the pieces in order are exactly the result.
      const streaming = job.progress === true && typeof context?.partial === 'function'
      const decoder = new StringDecoder('utf8')
      let heldBreak = ''
      let stderr = ''
      child.stdout.on('data', (chunk) => {
        stdoutBytes += chunk.length
        // No NATS server takes a larger message: stop the command instead of holding it all.
        if (stdoutBytes > MAX_RESULT_BYTES) {
          child.tooLarge = true
          signalGroup(child, 'SIGKILL')
        } else {
          stdout.push(chunk)
          if (streaming) {
            let text = heldBreak + decoder.write(chunk)
            heldBreak = /\r?\n$/.exec(text)?.[0] ?? ''
            text = text.slice(0, text.length - heldBreak.length)
            if (text) context.partial(text)
          }
        }
      })
      child.stderr.on('data', (chunk) => {
        if (stderr.length < 4096) stderr += chunk
      })
      child.stdin.on('error', () => {}) // the command may exit without reading its input
      child.stdin.end(job.task)
      // The shell is done: what it left in the background (holding our pipes, or not) goes too.
      child.on('exit', () => signalGroup(child, 'SIGKILL'))
      child.on('error', (error) => {
        running.delete(job.runKey)
        clearTimeout(child.cancelTimer)
        reject(new Error(`could not run the command (${error.code ?? 'spawn failed'})`))
      })
      child.on('close', (code, signal) => {
        running.delete(job.runKey)
        clearTimeout(child.cancelTimer)
        if (child.tooLarge) {
          reject(new Error(`the command wrote more than ${MAX_RESULT_BYTES} bytes, more than any NATS message holds`))
        } else if (code === 0) {
          resolve(Buffer.concat(stdout).toString('utf8').replace(/\r?\n$/, ''))
        } else {
          const why = signal ? `was killed by ${signal}` : `exited with code ${code}`
          const detail = stderr.trim().split('\n')[0]
          reject(new Error(`the command ${why}${detail ? `: ${detail}` : ''}`))
        }
      })
    })
  }
}

module.exports = { execHandler, cancelJob, signalGroup, MAX_RESULT_BYTES }
