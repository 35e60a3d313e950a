import net from 'node:net';
import tls from 'node:tls';
import { expect } from 'chai';
import { defaultConfig } from '../../src/config/schema.js';
import { Hl7InboundService } from '../../src/hl7/inbound.service.js';
import { MllpSender } from '../../src/hl7/mllp-sender.js';
import { MllpServer, type MllpFailure } from '../../src/hl7/mllp-server.js';
import { clientTlsOptions, type TlsClientConfig } from '../../src/tls.js';
import { TestRis } from '../helpers/test-ris.js';
import { FS, frame, parseAck, silentLogger } from '../helpers/hl7-peers.js';
import { ormO01, oruR01 } from '../helpers/hl7-samples.js';
import { haveOpenssl, makeTestPki, type TestPki } from '../helpers/tls-certs.js';
import { openTempDatabase } from '../helpers/tmp.js';

/** One MLLP exchange over a node TLS socket: sends the frame, resolves with the first reply frame's text. */
function tlsExchange(options: tls.ConnectionOptions, message: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect(options, () => socket.write(frame(message)));
    let got = '';
    socket.on('data', (d: Buffer) => {
      got += d.toString('utf8');
      const end = got.indexOf(FS);
      if (end >= 0) {
        socket.end();
        resolve(got.slice(1, end));
      }
    });
    socket.on('error', reject);
    socket.on('close', () => reject(new Error(`closed before a reply (got ${JSON.stringify(got)})`)));
  });
}

describe('MLLP over TLS (listener, our sender; throwaway PKI from openssl)', function () {
  this.timeout(30_000);
  let pki: TestPki;

  before(function () {
    if (!haveOpenssl()) {
      console.log('      skipped: the openssl CLI is not installed (needed to make test certificates)');
      this.skip();
    }
    pki = makeTestPki();
  });
  after(() => pki?.cleanup());

  describe('listener (our inbound service behind a TLS-only MllpServer)', () => {
    let db: Awaited<ReturnType<typeof openTempDatabase>>;
    let server: MllpServer;

    beforeEach(async () => {
      db = await openTempDatabase();
      const config = { ...defaultConfig().hl7, port: 0 };
      const service = new Hl7InboundService({ db: db.opened.db, config, logger: silentLogger });
      server = new MllpServer({
        host: '127.0.0.1',
        port: 0,
        plain: false,
        tls: { port: 0, cert: pki.server.cert, key: pki.server.key, ca: pki.ca, requireClientCert: true },
        maxMessageBytes: config.maxMessageBytes,
        idleTimeoutSeconds: config.idleTimeoutSeconds,
        maxConnections: config.maxConnections,
        handler: service.handle,
        failureReply: (f: MllpFailure) => service.failureReply(f),
        logger: silentLogger,
        stopGraceMs: 1000,
      });
      await server.start();
    });
    afterEach(async () => {
      await server.stop();
      await db.close();
    });

    it('a node TLS client with a certificate from our CA gets AA for an order; no plain listener', async () => {
      expect(server.port).to.equal(0);
      const client = pki.issue('RIS');
      const ack = parseAck(
        await tlsExchange(
          { host: '127.0.0.1', port: server.tlsPort, ca: pki.caPem, cert: client.certPem, key: client.keyPem },
          ormO01({ controlId: 'TLS-ORM-1' }),
        ),
      );
      expect(ack.code).to.equal('AA');
      expect(ack.ackedControlId).to.equal('TLS-ORM-1');
      const row = await db.opened.db.selectFrom('hl7_messages').select(['control_id']).where('control_id', '=', 'TLS-ORM-1').executeTakeFirst();
      expect(row, 'message stored').to.not.equal(undefined);
    });

    it('a client that sends its frame and closes its side at once still gets the ACK (half-open after the handshake)', async () => {
      const client = pki.issue('RIS');
      const reply = await new Promise<string>((resolve, reject) => {
        const socket = tls.connect({ host: '127.0.0.1', port: server.tlsPort, ca: pki.caPem, cert: client.certPem, key: client.keyPem }, () =>
          socket.end(frame(ormO01({ controlId: 'TLS-ORM-HALF' }))),
        );
        let got = '';
        socket.on('data', (d: Buffer) => (got += d.toString('utf8')));
        socket.on('error', reject);
        socket.on('close', () => resolve(got));
      });
      expect(parseAck(reply.slice(1, reply.indexOf(FS))).code).to.equal('AA');
    });

    it('a client without a certificate gets no ACK: the handshake is refused', async () => {
      const err = await tlsExchange({ host: '127.0.0.1', port: server.tlsPort, ca: pki.caPem }, ormO01({ controlId: 'TLS-ORM-2' })).then(
        () => undefined,
        (e: Error) => e,
      );
      expect(err, 'no ACK without a client certificate').to.be.instanceOf(Error);
      const row = await db.opened.db.selectFrom('hl7_messages').select(['control_id']).where('control_id', '=', 'TLS-ORM-2').executeTakeFirst();
      expect(row).to.equal(undefined);
    });
  });

  describe('our sender (MllpSender over TLS, as the gateway wires hl7.ris.tls)', () => {
    const tlsSender = (port: number, t: TlsClientConfig) =>
      new MllpSender({
        host: '127.0.0.1',
        port,
        ackTimeoutMs: 3000,
        connectTimeoutMs: 3000,
        logger: silentLogger,
        connect: () => tls.connect(clientTlsOptions(t, '127.0.0.1', port)),
      });
    let ris: TestRis;

    beforeEach(async () => {
      ris = new TestRis();
      await ris.start(0, { tls: { port: 0, cert: pki.server.cert, key: pki.server.key, ca: pki.ca, requireClientCert: true } });
    });
    afterEach(async () => {
      await ris.stop();
    });

    it('sends the write-back to a TLS RIS (client certificate, server verified by our CA and its name) and gets AA', async () => {
      const client = pki.issue('SECONDREAD');
      const sender = tlsSender(ris.port, { ca: pki.ca, cert: client.cert, key: client.key, rejectUnauthorized: true });
      try {
        const out = await sender.send(oruR01({ controlId: 'WB-TLS-1' }));
        expect(out.kind).to.equal('accepted');
        expect(ris.received).to.have.length(1);
        expect(ris.received[0]).to.match(/\|WB-TLS-1\|/);
      } finally {
        await sender.close();
      }
    });

    it('a RIS certificate our CA did not issue: retry (connect-failed), nothing reaches the RIS', async () => {
      const rogue = makeTestPki();
      try {
        const client = pki.issue('SECONDREAD');
        const sender = tlsSender(ris.port, { ca: rogue.ca, cert: client.cert, key: client.key, rejectUnauthorized: true });
        const out = await sender.send(oruR01({ controlId: 'WB-TLS-2' }));
        await sender.close();
        expect(out.kind).to.equal('retry');
        expect(out.kind === 'retry' && out.reason).to.equal('connect-failed');
        expect(ris.received).to.have.length(0);
      } finally {
        rogue.cleanup();
      }
    });

    it('a RIS certificate for another name (servername) is refused the same way', async () => {
      const client = pki.issue('SECONDREAD');
      const sender = tlsSender(ris.port, { ca: pki.ca, cert: client.cert, key: client.key, servername: 'ris.example.org', rejectUnauthorized: true });
      const out = await sender.send(oruR01({ controlId: 'WB-TLS-3' }));
      await sender.close();
      expect(out.kind === 'retry' && out.text).to.match(/ERR_TLS_CERT_ALTNAME_INVALID/);
      expect(ris.received).to.have.length(0);
    });
  });

  it('the sender never writes the message before the handshake: a plain peer sees only a TLS ClientHello', async () => {
    const seen: Buffer[] = [];
    const plain = net.createServer((s) => {
      s.on('data', (d: Buffer) => seen.push(d));
      // answer the ClientHello with garbage, then hang up
      setTimeout(() => s.end('not tls\r\n'), 100);
    });
    await new Promise<void>((ok) => plain.listen(0, '127.0.0.1', ok));
    const port = (plain.address() as net.AddressInfo).port;
    const sender = new MllpSender({
      host: '127.0.0.1',
      port,
      ackTimeoutMs: 2000,
      connectTimeoutMs: 2000,
      logger: silentLogger,
      connect: () => tls.connect(clientTlsOptions({ ca: pki.ca, rejectUnauthorized: true }, '127.0.0.1', port)),
    });
    try {
      const out = await sender.send(oruR01({ controlId: 'WB-TLS-4' }));
      expect(out.kind).to.equal('retry');
      const bytes = Buffer.concat(seen);
      expect(bytes.length).to.be.greaterThan(0);
      expect(bytes[0], 'TLS handshake record').to.equal(0x16);
      expect(bytes.includes(Buffer.from('MSH|'))).to.equal(false);
    } finally {
      await sender.close();
      await new Promise<void>((ok) => plain.close(() => ok()));
    }
  });
});
