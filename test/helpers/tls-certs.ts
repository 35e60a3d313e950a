import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { makeTempDir } from './tmp.js';

/**
 * A throwaway PKI for TLS tests, made with the openssl CLI in a temp folder
 * at test time (no key is ever committed): a CA, certificates it issues for
 * any subject CN (server and client use, SAN localhost and 127.0.0.1), and a
 * second, untrusted CA for "wrong issuer" cases.
 */

export interface KeyPair {
  cert: string;
  key: string;
  /** The PEM text of each, for node's tls options. */
  certPem: string;
  keyPem: string;
}

export interface TestPki {
  dir: string;
  /** The trusted CA certificate (PEM path). */
  ca: string;
  caPem: string;
  /** localhost / 127.0.0.1, issued by `ca`. */
  server: KeyPair;
  /** A certificate issued by `ca` with this subject CN. */
  issue(cn: string): KeyPair;
  /** A certificate with this CN from a CA nobody trusts. */
  issueUntrusted(cn: string): KeyPair;
  cleanup(): void;
}

let opensslPresent: boolean | undefined;
export function haveOpenssl(): boolean {
  opensslPresent ??= spawnSync('openssl', ['version'], { stdio: 'ignore' }).status === 0;
  return opensslPresent;
}

const REQ_CONFIG = `[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[leaf]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
authorityKeyIdentifier = keyid
`;

function withPem(cert: string, key: string): KeyPair {
  return { cert, key, certPem: readFileSync(cert, 'utf8'), keyPem: readFileSync(key, 'utf8') };
}

export function makeTestPki(): TestPki {
  const tmp = makeTempDir('gw-pki-');
  const dir = tmp.dir;
  const cnf = path.join(dir, 'openssl.cnf');
  writeFileSync(cnf, REQ_CONFIG);
  const openssl = (args: string[]): void => {
    execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  };
  const file = (name: string): string => path.join(dir, name.replace(/[^A-Za-z0-9_-]/g, '_'));
  const makeCa = (name: string): KeyPair => {
    const cert = `${file(name)}.crt`;
    const key = `${file(name)}.key`;
    openssl([
      'req',
      '-x509',
      '-config',
      cnf,
      '-extensions',
      'ca',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-days',
      '2',
      '-subj',
      `/CN=${name}`,
    ]);
    return withPem(cert, key);
  };
  let serial = 1;
  const issueBy = (ca: KeyPair, prefix: string, cn: string): KeyPair => {
    const base = file(`${prefix}-${cn}`);
    const cert = `${base}.crt`;
    const key = `${base}.key`;
    openssl(['req', '-new', '-config', cnf, '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', `${base}.csr`, '-subj', `/CN=${cn}`]);
    openssl([
      'x509',
      '-req',
      '-in',
      `${base}.csr`,
      '-CA',
      ca.cert,
      '-CAkey',
      ca.key,
      '-set_serial',
      String(serial++),
      '-days',
      '2',
      '-out',
      cert,
      '-extfile',
      cnf,
      '-extensions',
      'leaf',
    ]);
    return withPem(cert, key);
  };
  const ca = makeCa('Gateway Test CA');
  let rogue: KeyPair | undefined;
  return {
    dir,
    ca: ca.cert,
    caPem: ca.certPem,
    server: issueBy(ca, 'server', 'localhost'),
    issue: (cn) => issueBy(ca, 'client', cn),
    issueUntrusted: (cn) => issueBy((rogue ??= makeCa('Untrusted CA')), 'rogue', cn),
    cleanup: tmp.cleanup,
  };
}
