// The memory baseline: a Node process that does nothing but stay alive.
setInterval(() => {}, 1 << 30)
process.once('SIGTERM', () => {
  process.stdout.write('{}\n')
  process.exit(0)
})
console.log('ready')
