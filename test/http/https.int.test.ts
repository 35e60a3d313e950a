import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { expect } from 'chai';
import winston from 'winston';
import { buildConfig } from '../../src/config/load.js';
import { createDestinationSender } from '../../src/forwarding/destination.factory.js';
import { createGateway, type Gateway } from '../../src/gateway.js';
import { OutboundKind } from '../../src/states.js';
import { eventually } from '../helpers/eventually.js';
import { FS, frame, parseAck } from '../helpers/hl7-peers.js';
import { ormO01, oruR01 } from '../helpers/hl7-samples.js';
import { TestRis } from '../helpers/test-ris.js';
import { haveOpenssl, makeTestPki, type TestPki } from '../helpers/tls-certs.js';
import { makeTempDir } from '../helpers/tmp.js';

const ADMIN = 'admin-token-0123456789abcdef';

function httpsGet(port: number, p: string, o: { ca?: string; token?: string } = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.get(
      { host: '127.0.0.1', port, path: p, ...(o.ca ? { ca: o.ca } : {}), headers: o.token ? { authorization: `Bearer ${o.token}` } : {} },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('error', reject);
  });
}

describe('TLS everywhere, plain listeners off (whole gateway in-process)', function () {
  this.timeout(30_000);
  let pki: TestPki;
  let tmp: ReturnType<typeof makeTempDir>;
  let ris: TestRis;
  let gw: Gateway;

  before(async function () {
    if (!haveOpenssl()) {
      console.log('      skipped: the openssl CLI is not installed (needed to make test certificates)');
      this.skip();
    }
    pki = makeTestPki();
    tmp = makeTempDir();
    ris = new TestRis();
    await ris.start(0, { tls: { port: 0, cert: pki.server.cert, key: pki.server.key, ca: pki.ca, requireClientCert: true } });
    const ours = pki.issue('SECONDREAD');
    const listener = { port: 0, cert: pki.server.cert, key: pki.server.key };
    const config = buildConfig({
      dicom: { port: 0, plain: false, allowedCallers: ['PACS1'], tls: { ...listener, ca: pki.ca, requireClientCert: true, checkSubjectAe: true } },
      hl7: { port: 0, plain: false, tls: listener, ris: { host: '127.0.0.1', port: ris.port, tls: { ca: pki.ca, cert: ours.cert, key: ours.key } } },
      http: { port: 0, plain: false, tls: listener },
      storage: { dir: path.join(tmp.dir, 'data'), minFreeMb: 0 },
      database: { url: `sqlite:${path.join(tmp.dir, 'gw.db')}` },
      writeBack: { pollIntervalSeconds: 0.1, ackTimeoutSeconds: 3 },
      auth: { tokens: [{ token: ADMIN, role: 'admin' }] },
    });
    gw = createGateway(config, { logger: winston.createLogger({ silent: true }) });
    await gw.start();
  });
  after(async () => {
    await gw?.stop();
    await ris?.stop();
    tmp?.cleanup();
    pki?.cleanup();
  });

  it('binds only the TLS ports', () => {
    const p = gw.ports();
    expect([p.dicom, p.hl7, p.http]).to.deep.equal([0, 0, 0]);
    expect(p.dicomTls).to.be.greaterThan(0);
    expect(p.hl7Tls).to.be.greaterThan(0);
    expect(p.https).to.be.greaterThan(0);
  });

  it('GET /healthz over HTTPS with our CA: 200 ok; the API answers on the same listener', async () => {
    const h = await httpsGet(gw.ports().https, '/healthz', { ca: pki.caPem });
    expect(h.status).to.equal(200);
    expect(JSON.parse(h.body)).to.include({ status: 'ok' });
    const api = await httpsGet(gw.ports().https, '/api/studies', { ca: pki.caPem, token: ADMIN });
    expect(api.status).to.equal(200);
    expect(JSON.parse(api.body)).to.have.property('items');
  });

  it('a client that does not trust our CA cannot connect', async () => {
    const err = await httpsGet(gw.ports().https, '/healthz').then(
      () => undefined,
      (e: Error) => e,
    );
    expect(err?.message).to.match(/self.signed|unable to verify|certificate/i);
  });

  it('C-ECHO over DICOM TLS from a caller whose certificate names its AE', async () => {
    const pacs = pki.issue('PACS1');
    const scu = createDestinationSender(
      {
        id: 'echo',
        type: 'dimse',
        host: '127.0.0.1',
        port: gw.ports().dicomTls,
        aeTitle: 'SECONDREAD',
        deidentify: false,
        timeoutSeconds: 5,
        batchSize: 1,
        maxAssociations: 1,
        tls: { ca: pki.ca, cert: pacs.cert, key: pacs.key, rejectUnauthorized: true },
      },
      { callingAeTitle: 'PACS1', logger: winston.createLogger({ silent: true }) },
    );
    expect((await scu.verify()).ok).to.equal(true);
  });

  it('an order over MLLP/TLS is acknowledged AA', async () => {
    const reply = await new Promise<string>((resolve, reject) => {
      const s = tls.connect({ host: '127.0.0.1', port: gw.ports().hl7Tls, ca: pki.caPem }, () => s.write(frame(ormO01({ controlId: 'GW-TLS-1' }))));
      let got = '';
      s.on('data', (d: Buffer) => {
        got += d.toString('utf8');
        if (got.includes(FS)) {
          s.end();
          resolve(got.slice(1, got.indexOf(FS)));
        }
      });
      s.on('error', reject);
    });
    expect(parseAck(reply)).to.include({ code: 'AA', ackedControlId: 'GW-TLS-1' });
  });

  it('the write-back goes to the RIS over TLS (hl7.ris.tls) with our client certificate', async () => {
    await gw.outbound.enqueue(gw.db, {
      kind: OutboundKind.writeBack,
      caseId: 'no-such-case',
      controlId: 'WB-GW-TLS',
      payload: oruR01({ controlId: 'WB-GW-TLS' }),
    });
    gw.outbound.kick();
    await eventually(() => ris.received.some((m) => m.includes('|WB-GW-TLS|')), 'the write-back at the RIS');
  });

  // last: stops the gateway
  it('stop() does not wait for peers that connected to the TLS ports and never shook hands', async () => {
    const p = gw.ports();
    const silent = [p.dicomTls, p.hl7Tls, p.https].map((port) => {
      const s = net.connect(port, '127.0.0.1');
      s.on('error', () => undefined);
      return new Promise<void>((ok) => s.once('close', () => ok()));
    });
    await new Promise((ok) => setTimeout(ok, 200));
    const started = Date.now();
    await gw.stop();
    await Promise.all(silent);
    expect(Date.now() - started).to.be.lessThan(3000);
  });
});
