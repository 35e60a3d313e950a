import net from 'node:net';
import { expect } from 'chai';
import { ErrorCode, GatewayError } from '../../src/errors.js';
import { buildAck, type AckCode } from '../../src/hl7/ack.js';
import { Hl7Message } from '../../src/hl7/hl7-message.js';
import { readHeader } from '../../src/hl7/hl7-parse.js';
import { MllpSender, type SendOutcome } from '../../src/hl7/mllp-sender.js';
import { MllpServer, type MllpHandler } from '../../src/hl7/mllp-server.js';
import { buildSecondReportOru } from '../../src/reports/oru-builder.js';
import { eventually } from '../helpers/eventually.js';
import { CR, FS, VT, parseAck, silentLogger } from '../helpers/hl7-peers.js';
import { oruR01 } from '../helpers/hl7-samples.js';
import { PythonMllpServer, havePythonHl7Server } from '../helpers/python-mllp-server.js';
import { capturingLogger } from '../helpers/capturing-logger.js';

const msg = (id: string) => oruR01({ controlId: id, accession: `ACC-${id}` });
const controlIdOf = (m: string) => Hl7Message.parse(m).get('MSH-10') ?? '';

/** A real ACK from our ACK builder, for the message received. */
function ackFor(message: string, code: AckCode, o: { controlId?: string; error?: string } = {}): string {
  const h = readHeader(Hl7Message.parse(message));
  const header = o.controlId === undefined ? h : { ...h, controlId: o.controlId, controlIdRaw: o.controlId };
  return buildAck(header, {
    sendingApplication: 'RIS',
    sendingFacility: 'HOSP',
    code,
    controlId: `ACK${Math.random().toString(36).slice(2, 10)}`,
    now: new Date(),
    error: o.error ? { hl7Code: '207', text: o.error } : undefined,
  });
}

/** Our MllpServer as the RIS, with a handler per test. */
async function startRis(handler: MllpHandler, failureReply?: () => string) {
  const received: string[] = [];
  const server = new MllpServer({
    host: '127.0.0.1',
    port: 0,
    maxMessageBytes: 1024 * 1024,
    idleTimeoutSeconds: 60,
    maxConnections: 16,
    handler: async (m, meta) => {
      received.push(m);
      return handler(m, meta);
    },
    failureReply:
      failureReply ??
      (() => {
        throw new Error('no failure reply in this test');
      }),
    logger: silentLogger,
    stopGraceMs: 500,
  });
  await server.start();
  return { server, received, port: server.port };
}

function sender(port: number, o: Partial<ConstructorParameters<typeof MllpSender>[0]> = {}): MllpSender {
  return new MllpSender({ host: '127.0.0.1', port, ackTimeoutMs: 2000, connectTimeoutMs: 2000, logger: silentLogger, ...o });
}

function expectKind<K extends SendOutcome['kind']>(o: SendOutcome, kind: K): Extract<SendOutcome, { kind: K }> {
  expect(o.kind, JSON.stringify(o)).to.equal(kind);
  return o as Extract<SendOutcome, { kind: K }>;
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/**
 * A bare TCP RIS that records, per frame, how many of our frames were
 * unanswered when it arrived: the MllpServer queues frames itself, so only
 * the bytes on the wire can show whether the sender pipelines.
 */
class WireRis {
  readonly frames: string[] = [];
  maxOutstanding = 0;
  connections = 0;
  private outstanding = 0;
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();

  constructor(
    private readonly answer: (message: string, socket: net.Socket) => unknown,
    private readonly delayMs = 0,
  ) {
    this.server = net.createServer((socket) => {
      this.connections++;
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
      let buf = '';
      socket.setEncoding('utf8');
      socket.on('error', () => undefined);
      socket.on('data', (d: string) => {
        buf += d;
        for (;;) {
          const s = buf.indexOf(VT);
          const e = buf.indexOf(FS, s);
          if (s < 0 || e < 0) break;
          const m = buf.slice(s + 1, e);
          buf = buf.slice(e + 2);
          this.frames.push(m);
          this.outstanding++;
          this.maxOutstanding = Math.max(this.maxOutstanding, this.outstanding);
          setTimeout(() => {
            this.outstanding--;
            this.answer(m, socket);
          }, this.delayMs);
        }
      });
    });
  }

  async start(port = 0): Promise<number> {
    await new Promise<void>((r) => this.server.listen(port, '127.0.0.1', r));
    return (this.server.address() as net.AddressInfo).port;
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

describe('MllpSender (real sockets on 127.0.0.1)', function () {
  this.timeout(20_000);
  const cleanups: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
  });

  async function ris(handler: MllpHandler, failureReply?: () => string) {
    const r = await startRis(handler, failureReply);
    cleanups.push(() => r.server.stop());
    return r;
  }
  function open(port: number, o: Partial<ConstructorParameters<typeof MllpSender>[0]> = {}): MllpSender {
    const s = sender(port, o);
    cleanups.push(() => s.close());
    return s;
  }

  it('AA: accepted, the ACK is the one whose MSA-2 is our MSH-10, the RIS got the exact text', async () => {
    const r = await ris(async (m) => ackFor(m, 'AA'));
    const s = open(r.port);
    const text = msg('AA0001');
    const out = expectKind(await s.send(text), 'accepted');
    expect(parseAck(out.ack)).to.include({ code: 'AA', ackedControlId: 'AA0001' });
    expect(r.received).to.deep.equal([text]);
  });

  it('AE: retry with the reason text; the identical text resent later is accepted (same MSH-10)', async () => {
    let calls = 0;
    const r = await ris(async (m) => (++calls === 1 ? ackFor(m, 'AE', { error: 'database busy' }) : ackFor(m, 'AA')));
    const s = open(r.port);
    const text = msg('AE0001');
    const first = expectKind(await s.send(text), 'retry');
    expect(first).to.deep.equal({ kind: 'retry', reason: 'AE', text: 'database busy' });
    expectKind(await s.send(text), 'accepted');
    expect(r.received.map(controlIdOf)).to.deep.equal(['AE0001', 'AE0001']);
    expect(r.server.connectionCount, 'an AE is an answer: the connection is kept').to.equal(1);
  });

  it('AR: rejected with the code and the reason (the caller must not retry)', async () => {
    const r = await ris(async (m) => ackFor(m, 'AR', { error: 'unknown accession' }));
    const s = open(r.port);
    const out = expectKind(await s.send(msg('AR0001')), 'rejected');
    expect(out.code).to.equal('AR');
    expect(out.text).to.equal('unknown accession');
    expect(parseAck(out.ack).ackedControlId).to.equal('AR0001');
  });

  it('ignores (and logs) an ACK for another control id and takes the matching one that follows', async () => {
    // Two frames in one reply: the server frames the handler's text, we add the frame boundary inside it.
    const r = await ris(async (m) => `${ackFor(m, 'AA', { controlId: 'SOMEONE-ELSE' })}${FS}${CR}${VT}${ackFor(m, 'AE', { error: 'real answer' })}`);
    const { logger, entries } = capturingLogger();
    const s = open(r.port, { logger });
    const out = expectKind(await s.send(msg('WR0001')), 'retry');
    expect(out).to.deep.equal({ kind: 'retry', reason: 'AE', text: 'real answer' });
    expect(entries.some((e) => e.message === 'ACK for another message ignored' && e['ackedControlId'] === 'SOMEONE-ELSE')).to.equal(true);
  });

  it('never takes an ACK for another control id: with only that one, the send times out', async () => {
    const r = await ris(async (m) => ackFor(m, 'AA', { controlId: 'NOT-YOURS' }));
    const s = open(r.port, { ackTimeoutMs: 300 });
    const out = expectKind(await s.send(msg('WR0002')), 'retry');
    expect(out.reason).to.equal('timeout');
  });

  it('no answer: timeout retry, the socket is dropped, the next send reconnects and a late ACK is not taken', async () => {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const r = await ris(async (m) => {
      if (controlIdOf(m) === 'TO0001' && r.received.filter((x) => controlIdOf(x) === 'TO0001').length === 1) {
        await held; // answers only after the sender gave up
        return ackFor(m, 'AA');
      }
      return ackFor(m, 'AA');
    });
    cleanups.push(async () => release());
    const s = open(r.port, { ackTimeoutMs: 300 });
    const started = Date.now();
    const first = expectKind(await s.send(msg('TO0001')), 'retry');
    expect(first.reason).to.equal('timeout');
    expect(Date.now() - started).to.be.within(250, 1500);
    // On the old connection TO0002 would wait behind the held frame and time out too: it must go on a new one.
    const second = expectKind(await s.send(msg('TO0002')), 'accepted');
    expect(parseAck(second.ack).ackedControlId).to.equal('TO0002');
    release(); // the late AA for TO0001 goes to the dropped connection, never to the new one
    await new Promise((res) => setTimeout(res, 50));
    expectKind(await s.send(msg('TO0001')), 'accepted');
    expect(r.received.map(controlIdOf)).to.deep.equal(['TO0001', 'TO0002', 'TO0001']);
  });

  it('RIS down: connect-failed at once, and the same sender delivers once the RIS is up', async () => {
    const port = await freePort();
    const s = open(port);
    const started = Date.now();
    const out = expectKind(await s.send(msg('DN0001')), 'retry');
    expect(out.reason).to.equal('connect-failed');
    expect(out.text).to.match(/ECONNREFUSED/);
    expect(Date.now() - started).to.be.below(1500);

    const w = new WireRis((m, sock) => sock.write(`${VT}${ackFor(m, 'AA')}${FS}${CR}`));
    await w.start(port);
    cleanups.push(() => w.stop());
    expectKind(await s.send(msg('DN0001')), 'accepted');
  });

  it('connect timeout: a connection that never completes is a connect-failed retry (via the connect hook)', async () => {
    let made = 0;
    const s = open(1, {
      connectTimeoutMs: 200,
      connect: () => {
        made++;
        return new net.Socket(); // never connects, never errors
      },
    });
    const out = expectKind(await s.send(msg('CT0001')), 'retry');
    expect(out.reason).to.equal('connect-failed');
    expect(out.text).to.match(/no connection within 200 ms/);
    expect(made).to.equal(1);
  });

  it('RIS closing mid-message: a closed retry, then the next send reconnects and is accepted', async () => {
    let calls = 0;
    const r = await ris(
      async (m) => {
        if (++calls === 1) throw new Error('RIS crashed while storing');
        return ackFor(m, 'AA');
      },
      () => {
        throw new Error('and cannot answer either'); // the listener then destroys the connection
      },
    );
    const s = open(r.port);
    const out = expectKind(await s.send(msg('CL0001')), 'retry');
    expect(out.reason).to.equal('closed');
    expectKind(await s.send(msg('CL0001')), 'accepted');
    expect(r.received.map(controlIdOf)).to.deep.equal(['CL0001', 'CL0001']);
  });

  it('RIS closing after reading half a frame: a closed retry, not a hang', async () => {
    const server = net.createServer((sock) => sock.once('data', () => sock.destroy()));
    await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
    cleanups.push(() => new Promise((res) => server.close(res)));
    const s = open((server.address() as net.AddressInfo).port, { ackTimeoutMs: 5000 });
    const started = Date.now();
    const out = expectKind(await s.send(msg('HF0001')), 'retry');
    expect(out.reason).to.equal('closed');
    expect(Date.now() - started).to.be.below(2000);
  });

  it('queues concurrent sends: one in flight on the wire, in order, on one connection', async () => {
    const w = new WireRis((m, sock) => sock.write(`${VT}${ackFor(m, 'AA')}${FS}${CR}`), 40);
    const port = await w.start();
    cleanups.push(() => w.stop());
    const s = open(port);
    const ids = ['Q1', 'Q2', 'Q3', 'Q4', 'Q5', 'Q6'];
    const pending = ids.map((id) => s.send(msg(id)));
    expect(s.queued + (s.inFlight ? 1 : 0)).to.be.at.most(ids.length);
    const outs = await Promise.all(pending);
    outs.forEach((o, i) => expect(parseAck(expectKind(o, 'accepted').ack).ackedControlId).to.equal(ids[i]));
    expect(w.frames.map(controlIdOf)).to.deep.equal(ids);
    expect(w.maxOutstanding, 'the RIS saw a second frame before it answered the first').to.equal(1);
    expect(w.connections).to.equal(1);
  });

  it('queues concurrent sends against our MllpServer too, each answered with its own ACK', async () => {
    const r = await ris(async (m) => {
      await new Promise((res) => setTimeout(res, 10));
      return ackFor(m, controlIdOf(m) === 'M3' ? 'AR' : 'AA');
    });
    const s = open(r.port);
    const outs = await Promise.all(['M1', 'M2', 'M3', 'M4'].map((id) => s.send(msg(id))));
    expect(outs.map((o) => o.kind)).to.deep.equal(['accepted', 'accepted', 'rejected', 'accepted']);
    expect(r.received.map(controlIdOf)).to.deep.equal(['M1', 'M2', 'M3', 'M4']);
  });

  it('reads an ACK that arrives one byte at a time', async () => {
    const w = new WireRis((m, sock) => {
      const bytes = Buffer.from(`${VT}${ackFor(m, 'AA')}${FS}${CR}`);
      let i = 0;
      const t = setInterval(() => {
        if (i >= bytes.length || sock.destroyed) return clearInterval(t);
        sock.write(bytes.subarray(i, ++i));
      }, 1);
    });
    const port = await w.start();
    cleanups.push(() => w.stop());
    const s = open(port);
    expectKind(await s.send(msg('BY0001')), 'accepted');
  });

  it('close(): queued sends resolve closed at once, the one in flight finishes, later sends are closed', async () => {
    const w = new WireRis((m, sock) => sock.write(`${VT}${ackFor(m, 'AA')}${FS}${CR}`), 100);
    const port = await w.start();
    cleanups.push(() => w.stop());
    const s = sender(port);
    const first = s.send(msg('CZ1'));
    const second = s.send(msg('CZ2'));
    await new Promise((res) => setTimeout(res, 30));
    await s.close();
    expectKind(await first, 'accepted');
    expect(await second).to.deep.equal({ kind: 'retry', reason: 'closed', text: 'sender closed' });
    expect(await s.send(msg('CZ3'))).to.deep.equal({ kind: 'retry', reason: 'closed', text: 'sender closed' });
    expect(w.frames.map(controlIdOf)).to.deep.equal(['CZ1']);
  });

  it('refuses a message it cannot send (no MSH-10, framing bytes) with GatewayError(invalid-input)', async () => {
    const s = open(await freePort());
    for (const bad of ['not hl7', 'MSH|^~\\&|A|B|C|D|2026||ORU^R01||P|2.5.1\r', `${msg('X1')}\x1c`]) {
      const err = await s.send(bad).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err, bad).to.be.instanceOf(GatewayError);
      expect((err as GatewayError).code).to.equal(ErrorCode.invalidInput);
    }
  });

  describe('against an independent MLLP server (python-hl7 asyncio server)', () => {
    let py: PythonMllpServer | undefined;
    before(async function () {
      if (!havePythonHl7Server()) {
        console.warn('    python3-hl7 (hl7.mllp asyncio server) not installed: skipping the independent-peer tests');
        this.skip();
      }
      py = await PythonMllpServer.start();
    });
    after(async () => {
      await py?.stop();
    });

    it('delivers our second-report ORU; python-hl7 parses it the same and its AA is taken', async () => {
      const primary = oruR01({ controlId: 'PRIM9', accession: 'ACC9001', patientId: 'MRN9001', studyUid: '1.2.3.9001' });
      const text = buildSecondReportOru({
        controlId: 'PY0001',
        sendingApplication: 'SECONDREAD',
        sendingFacility: 'GATEWAY',
        primaryReport: primary,
        accessionNumber: 'ACC9001',
        studyInstanceUid: '1.2.3.9001',
        secondReader: { id: 'DRB', familyName: 'READER', givenName: 'BEA' },
        text: 'Größe 2|3 cm ^ a ~ b \\ c & d\nsecond line',
        radpeerScore: '3a',
      });
      const s = open(py!.port);
      const out = expectKind(await s.send(text), 'accepted');
      expect(parseAck(out.ack)).to.include({ code: 'AA', ackedControlId: 'PY0001' });
      // Its report goes to stdout, a channel apart from the ACK on the socket: wait for it.
      const seen = await eventually(() => py!.seen.find((x) => x.controlId === 'PY0001'), `python's report of PY0001 ${py!.errors}`, 5000);
      expect(seen.pid3).to.equal('MRN9001^^^HOSP^MR~9434765919^^^NHS^NH');
      expect(seen.obr3).to.equal('ACC9001');
      expect(seen.obr32Family).to.equal('READER');
      expect(seen.zds1).to.equal('1.2.3.9001');
      expect(seen.obx.map((o) => [o.type, o.code, o.type === 'CWE' ? o.valueCode : o.value])).to.deep.equal([
        ['TX', '18782-3', 'Größe 2|3 cm ^ a ~ b \\ c & d'],
        ['TX', '18782-3', 'second line'],
        ['CWE', 'RADPEER', '3a'],
        ['ST', 'SRCONC', 'DISCORDANT'],
      ]);
    });

    it('takes python-hl7 AR as rejected and AE as retry, on one kept connection', async () => {
      const s = open(py!.port);
      expect(expectKind(await s.send(msg('REJ001')), 'rejected').code).to.equal('AR');
      expect(expectKind(await s.send(msg('ERR001')), 'retry').reason).to.equal('AE');
      expectKind(await s.send(msg('OK0001')), 'accepted');
    });
  });
});
