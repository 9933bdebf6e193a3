// Running Pier accounts by account id. Kept on globalThis because OpenClaw may evaluate this
// plugin's modules more than once in one gateway (tool discovery, reloads): the channel
// lifecycle, the /pier command and pier_publish must all see the same workers.
const KEY = Symbol.for('pier-connector.accounts')

/** @type {Map<string, ReturnType<typeof import('./account.mjs').createAccountRun>>} */
export const runningAccounts = (globalThis[KEY] ??= new Map())

/** Stops every running account once (account.mjs stop()); what a gateway stop or plugin reload waits for. */
export async function stopAll() {
  await Promise.all([...runningAccounts.values()].map((run) => run.stop()))
}
