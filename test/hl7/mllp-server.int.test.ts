import net from 'node:net';
import { expect } from 'chai';
import { MllpServer, type MllpHandler } from '../../src/hl7/mllp-server.js';
import {
  FS,
  CR,
  VT,
  NodeHl7ClientPeer,
  RawMllpPeer,
  frame,
  havePythonHl7,
  mllpSend,
  parseAck,
  silentLogger,
  startHl7Stack,
  type Hl7Stack,
} from '../helpers/hl7-peers.js';
import { oruR01, ormO01, seg } from '../helpers/hl7-samples.js';

/** A listener whose handler echoes MSH-10 back as a minimal ACK: tests the framing alone. */
async function echoServer(o: { handler?: MllpHandler; maxMessageBytes?: number; idleTimeoutSeconds?: number; maxConnections?: number } = {}) {
  const handled: string[] = [];
  const server = new MllpServer({
    host: '127.0.0.1',
    port: 0,
    maxMessageBytes: o.maxMessageBytes ?? 1024 * 1024,
    idleTimeoutSeconds: o.idleTimeoutSeconds ?? 60,
    maxConnections: o.maxConnections ?? 256,
    handler:
      o.handler ??
      (async (m) => {
        handled.push(m);
        return `MSH|^~\\&|GW|GW|||2026||ACK|X|P|2.5.1\rMSA|AA|${controlIdOf(m)}\r`;
      }),
    failureReply: (f) =>
      `MSH|^~\\&|GW|GW|||2026||ACK|X|P|2.5.1\rMSA|${f.kind === 'too-large' ? 'AR' : 'AE'}|${f.kind === 'too-large' ? controlIdOf(f.head) : controlIdOf(f.message)}\r`,
    logger: silentLogger,
    stopGraceMs: 1000,
  });
  await server.start();
  return { server, handled, port: server.port };
}

function controlIdOf(m: string): string {
  return m.split('\r')[0]?.split('|')[9] ?? '';
}

const msg = (id: string) => oruR01({ controlId: id });

describe('MllpServer (real sockets on 127.0.0.1)', () => {
  describe('framing', () => {
    let s: Awaited<ReturnType<typeof echoServer>>;
    let peer: RawMllpPeer;
    beforeEach(async () => {
      s = await echoServer();
      peer = await RawMllpPeer.connect(s.port);
    });
    afterEach(async () => {
      peer.destroy();
      await s.server.stop();
    });

    it('takes a frame split over several writes', async () => {
      const bytes = frame(msg('SPLIT1'));
      peer.write(bytes.subarray(0, 1));
      await new Promise((r) => setTimeout(r, 20));
      peer.write(bytes.subarray(1, 100));
      await new Promise((r) => setTimeout(r, 20));
      peer.write(bytes.subarray(100, bytes.length - 1));
      await new Promise((r) => setTimeout(r, 20));
      peer.write(bytes.subarray(bytes.length - 1));
      const [ack] = await peer.replyCount(1);
      expect(parseAck(ack!).ackedControlId).to.equal('SPLIT1');
      expect(s.handled[0]).to.equal(msg('SPLIT1'));
    });

    it('takes two frames in one write and answers both, in order', async () => {
      peer.write(Buffer.concat([frame(msg('TWO1')), frame(msg('TWO2'))]));
      const acks = await peer.replyCount(2);
      expect(acks.map((a) => parseAck(a).ackedControlId)).to.deep.equal(['TWO1', 'TWO2']);
    });

    it('takes a frame plus half a frame, then the other half', async () => {
      const second = frame(msg('HALF2'));
      peer.write(Buffer.concat([frame(msg('HALF1')), second.subarray(0, 40)]));
      await peer.replyCount(1);
      expect(s.handled).to.have.length(1);
      peer.write(second.subarray(40));
      const acks = await peer.replyCount(2);
      expect(parseAck(acks[1]!).ackedControlId).to.equal('HALF2');
    });

    it('tolerates a missing CR before FS and a missing CR after FS', async () => {
      const noTrailingCr = msg('NOCR1').replace(/\r$/, '');
      peer.write(`${VT}${noTrailingCr}${FS}`);
      peer.write(`${VT}${msg('NOCR2')}${FS}${CR}`);
      const acks = await peer.replyCount(2);
      expect(acks.map((a) => parseAck(a).ackedControlId)).to.deep.equal(['NOCR1', 'NOCR2']);
      expect(s.handled[0]).to.equal(noTrailingCr);
    });

    it('ignores garbage between frames and resynchronises on a start block inside a frame', async () => {
      peer.write('GET / HTTP/1.1\r\n\r\n');
      peer.write(frame(msg('AFTERGARBAGE')));
      peer.write(`${VT}MSH|^~\\&|half a message that the sender abandoned`);
      peer.write(frame(msg('RESYNC')));
      const acks = await peer.replyCount(2);
      expect(acks.map((a) => parseAck(a).ackedControlId)).to.deep.equal(['AFTERGARBAGE', 'RESYNC']);
    });

    it('handles frames strictly in order per connection, even when a later one would finish first', async () => {
      await s.server.stop();
      const order: string[] = [];
      s = await echoServer({
        handler: async (m) => {
          const id = controlIdOf(m);
          // The first message is the slowest: an unordered server would answer it last.
          await new Promise((r) => setTimeout(r, id === 'ORD1' ? 80 : 1));
          order.push(id);
          return `MSH|^~\\&|GW|GW|||2026||ACK|X|P|2.5.1\rMSA|AA|${id}\r`;
        },
      });
      peer = await RawMllpPeer.connect(s.port);
      peer.write(Buffer.concat(['ORD1', 'ORD2', 'ORD3'].map((id) => frame(msg(id)))));
      const acks = await peer.replyCount(3);
      expect(order).to.deep.equal(['ORD1', 'ORD2', 'ORD3']);
      expect(acks.map((a) => parseAck(a).ackedControlId)).to.deep.equal(['ORD1', 'ORD2', 'ORD3']);
    });

    it('answers AE when the handler throws and keeps serving the connection and others', async () => {
      await s.server.stop();
      s = await echoServer({
        handler: async (m) => {
          if (controlIdOf(m) === 'THROW') throw new Error('boom');
          return `MSH|^~\\&|GW|GW|||2026||ACK|X|P|2.5.1\rMSA|AA|${controlIdOf(m)}\r`;
        },
      });
      peer = await RawMllpPeer.connect(s.port);
      const other = await RawMllpPeer.connect(s.port);
      expect((await peer.send(msg('THROW'))).code).to.equal('AE');
      expect((await peer.send(msg('NEXT'))).code).to.equal('AA');
      expect((await other.send(msg('OTHER'))).code).to.equal('AA');
      other.destroy();
    });

    it('answers every frame a peer sent before half-closing', async () => {
      peer.write(Buffer.concat([frame(msg('FIN1')), frame(msg('FIN2'))]));
      peer.end();
      const acks = await peer.replyCount(2);
      expect(acks.map((a) => parseAck(a).ackedControlId)).to.deep.equal(['FIN1', 'FIN2']);
      await peer.waitClosed();
    });
  });

  describe('limits', () => {
    it('closes a connection idle for hl7.idleTimeoutSeconds', async () => {
      const s = await echoServer({ idleTimeoutSeconds: 0.3 });
      const peer = await RawMllpPeer.connect(s.port);
      expect((await peer.send(msg('IDLE1'))).code).to.equal('AA');
      const t0 = Date.now();
      await peer.waitClosed(5000);
      expect(Date.now() - t0).to.be.within(200, 3000);
      await s.server.stop();
    });

    it('refuses connections over hl7.maxConnections and serves the others', async () => {
      const s = await echoServer({ maxConnections: 2 });
      const a = await RawMllpPeer.connect(s.port);
      const b = await RawMllpPeer.connect(s.port);
      await a.send(msg('MC1'));
      const c = await RawMllpPeer.connect(s.port);
      await c.waitClosed(3000);
      expect((await b.send(msg('MC2'))).code).to.equal('AA');
      a.destroy();
      b.destroy();
      await s.server.stop();
    });
  });

  describe('with the inbound service and SQLite', () => {
    let stack: Hl7Stack;
    afterEach(async () => stack?.stop());

    function bigReport(controlId: string, bytes: number): string {
      const line = 'Lorem ipsum dolor sit amet, consectetur adipiscing elit, findings unremarkable. '.repeat(12);
      const n = Math.ceil(bytes / line.length) + 1;
      const head = oruR01({ controlId, accession: `BIG-${controlId}` }, { lines: [] });
      return head + Array.from({ length: n }, (_, i) => seg('OBX', { 1: String(i + 1), 2: 'TX', 5: line, 11: 'F' })).join('\r') + '\r';
    }

    it('rejects a 5 MB message over a lowered limit with AR naming the limit, then carries on', async () => {
      stack = await startHl7Stack({ maxMessageBytes: 1024 * 1024 });
      const peer = await RawMllpPeer.connect(stack.port);
      const big = bigReport('BIG1', 5 * 1024 * 1024);
      expect(big.length).to.be.greaterThan(5 * 1024 * 1024);
      const ack = await peer.send(big, 20_000);
      expect(ack.code).to.equal('AR');
      expect(ack.ackedControlId).to.equal('BIG1');
      expect(ack.err?.[8]).to.match(/larger than hl7.maxMessageBytes \(1048576/);
      expect((await peer.send(msg('AFTERBIG'))).code).to.equal('AA');
      const rows = await stack.opened.db.selectFrom('hl7_messages').select(['control_id', 'status']).orderBy('id').execute();
      expect(rows).to.deep.equal([
        { control_id: 'BIG1', status: 'rejected' },
        { control_id: 'AFTERBIG', status: 'applied' },
      ]);
      peer.destroy();
    });

    it('accepts a 5 MB message under the limit and stores all of its text', async () => {
      stack = await startHl7Stack({ maxMessageBytes: 10 * 1024 * 1024 });
      const peer = await RawMllpPeer.connect(stack.port);
      const big = bigReport('BIG2', 5 * 1024 * 1024);
      expect((await peer.send(big, 20_000)).code).to.equal('AA');
      const r = await stack.opened.db.selectFrom('report_versions').select('report_text').executeTakeFirstOrThrow();
      expect(r.report_text.length).to.be.greaterThan(4.5 * 1024 * 1024);
      peer.destroy();
    });

    it('serves 200 connections at once, each ACKed after its own commit', async () => {
      stack = await startHl7Stack();
      const peers = await Promise.all(Array.from({ length: 200 }, () => RawMllpPeer.connect(stack.port)));
      const acks = await Promise.all(peers.map((p, i) => p.send(oruR01({ controlId: `MANY${i}`, accession: `MANYACC${i}` }))));
      expect(acks.every((a, i) => a.code === 'AA' && a.ackedControlId === `MANY${i}`)).to.equal(true);
      const n = await stack.opened.db
        .selectFrom('report_versions')
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .executeTakeFirstOrThrow();
      expect(Number(n.n)).to.equal(200);
      for (const p of peers) p.destroy();
    });

    it('is a server for node-hl7-client', async () => {
      stack = await startHl7Stack();
      const client = new NodeHl7ClientPeer(stack.port);
      await client.open();
      try {
        const a1 = await client.send(ormO01({ controlId: 'LIB1' }));
        const a2 = await client.send(oruR01({ controlId: 'LIB2' }));
        const a3 = await client.send('MSH|^~\\&|RIS|HOSP|GW|GW|2026||ADT^A08|LIB3|P|2.5.1\rPID|1||X\r');
        expect([a1, a2, a3].map((a) => [a.code, a.ackedControlId])).to.deep.equal([
          ['AA', 'LIB1'],
          ['AA', 'LIB2'],
          ['AR', 'LIB3'],
        ]);
      } finally {
        await client.close();
      }
    });

    it("is a server for Debian python3-hl7's mllp_send (an independent implementation)", async function () {
      if (!havePythonHl7()) {
        this.skip(); // python3-hl7 not installed: apt-get install python3-hl7 to run this interop test
      }
      stack = await startHl7Stack();
      const acks = await mllpSend(stack.port, [oruR01({ controlId: 'PY1' }), ormO01({ controlId: 'PY2' }), oruR01({ controlId: 'PY1' })]);
      expect(acks.map((a) => parseAck(a.replace(/\n/g, '\r'))).map((a) => [a.code, a.ackedControlId])).to.deep.equal([
        ['AA', 'PY1'],
        ['AA', 'PY2'],
        ['AA', 'PY1'],
      ]);
      const rows = await stack.opened.db.selectFrom('hl7_messages').select(['control_id', 'status']).orderBy('id').execute();
      expect(rows.map((r) => r.status)).to.deep.equal(['applied', 'applied', 'duplicate']);
    });

    it('one bad frame on one connection affects neither its next frame nor another connection', async () => {
      stack = await startHl7Stack();
      const a = await RawMllpPeer.connect(stack.port);
      const b = await RawMllpPeer.connect(stack.port);
      a.write(Buffer.concat([frame('\u0000\u00ff binary junk'), frame(msg('GOOD-A'))]));
      const [bAck] = await Promise.all([b.send(msg('GOOD-B'))]);
      const acks = (await a.replyCount(2)).map(parseAck);
      expect(acks.map((x) => x.code)).to.deep.equal(['AR', 'AA']);
      expect(acks[1]!.ackedControlId).to.equal('GOOD-A');
      expect(bAck.code).to.equal('AA');
      a.destroy();
      b.destroy();
    });

    it('stop() answers what was received, then closes', async () => {
      stack = await startHl7Stack();
      const peer = await RawMllpPeer.connect(stack.port);
      expect((await peer.send(msg('BEFORESTOP'))).code).to.equal('AA');
      await stack.server.stop();
      await peer.waitClosed(3000);
      const refused = await new Promise<boolean>((resolve) => {
        const s = net.connect({ host: '127.0.0.1', port: stack.port });
        s.once('connect', () => {
          s.destroy();
          resolve(false);
        });
        s.once('error', () => resolve(true));
      });
      expect(refused).to.equal(true);
    });
  });
});
