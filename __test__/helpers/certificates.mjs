// A throwaway PKI for TLS against nats-server on loopback: a CA, a server certificate for
// 127.0.0.1 signed by it, a client certificate, and a stranger CA that signed nothing here.
import { execFileSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'

/**
 * Writes `ca.pem`, `server.pem`/`server.key`, `client.pem`/`client.key` and `other-ca.pem` into
 * `dir` (openssl, P-256, valid 2 days); returns `name -> path`.
 */
export function makeCertificates(dir) {
  const file = (name) => join(dir, name)
  const openssl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' })
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
  openssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=pier-test-ca')
  openssl('req', '-x509', ...ec, '-keyout', 'other.key', '-out', 'other-ca.pem', '-days', '2', '-subj', '/CN=stranger-ca')
  writeFileSync(file('server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n')
  writeFileSync(file('client.ext'), 'extendedKeyUsage=clientAuth\n')
  for (const [name, subject] of [['server', '/CN=127.0.0.1'], ['client', '/CN=pier-worker']]) {
    openssl('req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subject)
    openssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.pem`, '-days', '2', '-extfile', `${name}.ext`)
  }
  return file
}
