import { copyFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { ConfigError, buildConfig, loadConfig } from '../../src/config/load.js';
import { defaultConfig } from '../../src/config/schema.js';
import { haveOpenssl, makeTestPki, type TestPki } from '../helpers/tls-certs.js';
import { makeTempDir } from '../helpers/tmp.js';

function problemsOf(fn: () => unknown): { path: string; message: string }[] {
  try {
    fn();
  } catch (err) {
    expect(err).to.be.instanceOf(ConfigError);
    return (err as ConfigError).problems;
  }
  expect.fail('expected a ConfigError');
}

const paths = (ps: { path: string }[]) => ps.map((p) => p.path).sort();

describe('TLS configuration', () => {
  it('the defaults are unchanged: plain listeners on, no TLS anywhere', () => {
    const c = defaultConfig();
    expect([c.dicom.plain, c.hl7.plain, c.http.plain]).to.deep.equal([true, true, true]);
    expect([c.dicom.tls, c.hl7.tls, c.http.tls, c.hl7.ris.tls]).to.deep.equal([undefined, undefined, undefined, undefined]);
    expect(c.hl7.ris).to.deep.equal({ host: '127.0.0.1', port: 2576 });
  });

  it('a plain listener switched off without TLS leaves no listener: an error per section, unless the section is disabled', () => {
    const ps = problemsOf(() => buildConfig({ dicom: { plain: false }, hl7: { plain: false }, http: { plain: false, enabled: false } }));
    expect(paths(ps)).to.deep.equal(['dicom.plain', 'hl7.plain']);
    expect(ps[0]?.message).to.match(/no dicom listener left/);
  });

  it('rejects rule breaks in the TLS blocks with their key paths', () => {
    const ps = problemsOf(() =>
      buildConfig({
        dicom: { tls: { cert: 'c.pem', key: 'k.pem', checkSubjectAe: true } },
        hl7: { tls: { port: 2577, cert: 'c.pem', key: 'k.pem', requireClientCert: true }, ris: { tls: { cert: 'client.pem' } } },
        http: { port: 8443, tls: { cert: 'c.pem', key: 'k.pem' } },
        destinations: [{ id: 'p', type: 'dimse', host: 'h', port: 104, aeTitle: 'P', tls: { key: 'k.pem' } }],
      }),
    );
    expect(paths(ps)).to.deep.equal(['destinations[0].tls.key', 'dicom.tls.checkSubjectAe', 'hl7.ris.tls.key', 'hl7.tls.ca', 'http.tls.port']);
  });

  describe('with certificate files (openssl)', () => {
    let pki: TestPki;
    let tmp: ReturnType<typeof makeTempDir>;

    before(function () {
      if (!haveOpenssl()) {
        console.log('      skipped: the openssl CLI is not installed (needed to make test certificates)');
        this.skip();
      }
      pki = makeTestPki();
      tmp = makeTempDir('gw-tls-config-');
    });
    after(() => {
      pki?.cleanup();
      tmp?.cleanup();
    });

    it('missing or unreadable files are reported at start-up with their key paths, all at once', () => {
      const ps = problemsOf(() =>
        buildConfig({
          dicom: { tls: { cert: '/nonexistent/server.crt', key: pki.server.key } },
          hl7: { ris: { tls: { ca: '/nonexistent/ca.crt' } } },
          destinations: [{ id: 'p', type: 'dimse', host: 'h', port: 104, aeTitle: 'P', tls: { ca: pki.ca, cert: pki.server.cert, key: '/nonexistent/k.pem' } }],
        }),
      );
      expect(paths(ps)).to.deep.equal(['destinations[0].tls.key', 'dicom.tls.cert', 'hl7.ris.tls.ca']);
      expect(ps.find((p) => p.path === 'dicom.tls.cert')?.message).to.match(/cannot read \/nonexistent\/server\.crt: ENOENT/);
    });

    it('a key that does not belong to the certificate, or a file that is not PEM, is a config error', () => {
      const other = pki.issue('OTHER');
      const junk = path.join(tmp.dir, 'junk.pem');
      writeFileSync(junk, 'not a certificate\n');
      const ps = problemsOf(() =>
        buildConfig({
          http: { tls: { cert: pki.server.cert, key: other.key } },
          hl7: { tls: { port: 2577, cert: junk, key: pki.server.key } },
        }),
      );
      expect(paths(ps)).to.deep.equal(['hl7.tls', 'http.tls']);
      expect(ps.find((p) => p.path === 'http.tls')?.message).to.match(/unusable certificate/);
    });

    it('relative paths are resolved against the working directory (as loadConfig is given it)', () => {
      copyFileSync(pki.server.cert, path.join(tmp.dir, 'server.crt'));
      copyFileSync(pki.server.key, path.join(tmp.dir, 'server.key'));
      copyFileSync(pki.ca, path.join(tmp.dir, 'ca.crt'));
      const file = path.join(tmp.dir, 'gateway.yaml');
      writeFileSync(
        file,
        [
          'dicom: { plain: false, tls: { cert: server.crt, key: server.key, ca: ca.crt, requireClientCert: true, checkSubjectAe: true } }',
          'http: { tls: { port: 8443, cert: server.crt, key: server.key } }',
          'hl7: { ris: { tls: { ca: ca.crt } } }',
          '',
        ].join('\n'),
      );
      const { config } = loadConfig({ argv: ['--config', file], env: { GATEWAY_HTTP_TLS_PORT: '9443' }, cwd: tmp.dir });
      expect(config.dicom.tls).to.include({ port: 2762, cert: path.join(tmp.dir, 'server.crt'), ca: path.join(tmp.dir, 'ca.crt'), checkSubjectAe: true });
      expect(config.dicom.plain).to.equal(false);
      expect(config.http.tls).to.include({ port: 9443, key: path.join(tmp.dir, 'server.key'), requireClientCert: false });
      expect(config.hl7.ris.tls).to.include({ ca: path.join(tmp.dir, 'ca.crt'), rejectUnauthorized: true });
    });
  });
});
