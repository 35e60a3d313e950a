import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import winston from 'winston';
import { defaultConfig } from '../../src/config/schema.js';
import { DicomScp } from '../../src/dicom/scp.js';
import { Spool } from '../../src/dicom/spool.js';
import { forEachPdv } from '../../src/dicom/ul/pdu.js';
import { makeTempDir } from '../helpers/tmp.js';

const VERIFICATION = '1.2.840.10008.1.1';
const CT = '1.2.840.10008.5.1.4.1.1.2';

function el(tag: number, value: Buffer): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt16LE(0x0000, 0);
  h.writeUInt16LE(tag, 2);
  h.writeUInt32LE(value.length, 4);
  return Buffer.concat([h, value]);
}
const us = (n: number): Buffer => {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(n);
  return b;
};
const ui = (s: string): Buffer => Buffer.from(s.length % 2 ? `${s}\0` : s, 'latin1');

function command(o: { field: number; id: number; sopClass: string; sopInstance?: string; dataset: boolean }): Buffer {
  const els = [
    el(0x0002, ui(o.sopClass)),
    el(0x0100, us(o.field)),
    el(0x0110, us(o.id)),
    el(0x0800, us(o.dataset ? 0x0000 : 0x0101)),
    ...(o.sopInstance ? [el(0x1000, ui(o.sopInstance))] : []),
  ];
  const len = Buffer.alloc(4);
  len.writeUInt32LE(els.reduce((n, e) => n + e.length, 0));
  return Buffer.concat([el(0x0000, len), ...els]);
}

/** One P-DATA-TF PDU holding the given PDVs. */
function pdata(...pdvs: { ctx: number; command: boolean; last: boolean; data: Buffer }[]): Buffer {
  const items = pdvs.map((p) => {
    const h = Buffer.alloc(6);
    h.writeUInt32BE(p.data.length + 2, 0);
    h[4] = p.ctx;
    h[5] = (p.command ? 1 : 0) | (p.last ? 2 : 0);
    return Buffer.concat([h, p.data]);
  });
  const body = Buffer.concat(items);
  const h = Buffer.alloc(6);
  h[0] = 0x04;
  h.writeUInt32BE(body.length, 2);
  return Buffer.concat([h, body]);
}

/** Reads a response command set back (group 0000, implicit VR LE). */
function elements(cmd: Buffer): Map<number, Buffer> {
  const m = new Map<number, Buffer>();
  for (let o = 0; o + 8 <= cmd.length;) {
    const len = cmd.readUInt32LE(o + 4);
    m.set(cmd.readUInt16LE(o + 2), cmd.subarray(o + 8, o + 8 + len));
    o += 8 + len;
  }
  return m;
}

function collect(pdu: Buffer): { ctx: number; command: boolean; last: boolean; data: Buffer }[] {
  const out: { ctx: number; command: boolean; last: boolean; data: Buffer }[] = [];
  forEachPdv(pdu.subarray(6), (ctx, cmd, last, data) => out.push({ ctx, command: cmd, last, data: Buffer.from(data) }));
  return out;
}

describe('DicomScp data phase on a raw socket', function () {
  this.timeout(20_000);
  let tmp: ReturnType<typeof makeTempDir>;
  let scp: DicomScp;
  let spool: Spool;

  beforeEach(async () => {
    tmp = makeTempDir('gw-pdata-');
    spool = new Spool(path.join(tmp.dir, 'spool'), 0);
    spool.open();
    const config = { ...defaultConfig().dicom, host: '127.0.0.1', port: 0, aeTitle: 'SECONDREAD', allowedCallers: [] };
    scp = new DicomScp({
      config,
      sink: { storeInstance: () => Promise.reject(new Error('not expected')) },
      spool,
      logger: winston.createLogger({ silent: true }),
    });
    await scp.start();
  });
  afterEach(async () => {
    await scp.stop(1000);
    tmp.cleanup();
  });

  /** Associates with context 1 = Verification and context 3 = CT storage; returns the socket and a PDU reader. */
  async function associate(): Promise<{ sock: net.Socket; next: () => Promise<Buffer>; closed: Promise<void> }> {
    const sock = net.connect(scp.port, '127.0.0.1');
    sock.on('error', () => undefined);
    let buf = Buffer.alloc(0);
    const waiting: ((b: Buffer) => void)[] = [];
    const pdus: Buffer[] = [];
    const pump = (): void => {
      while (buf.length >= 6 && buf.length >= 6 + buf.readUInt32BE(2)) {
        const n = 6 + buf.readUInt32BE(2);
        const p = buf.subarray(0, n);
        buf = buf.subarray(n);
        const w = waiting.shift();
        if (w) w(p);
        else pdus.push(p);
      }
    };
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      pump();
    });
    const closed = new Promise<void>((resolve) => sock.once('close', () => resolve()));
    const next = (): Promise<Buffer> => {
      const p = pdus.shift();
      return p ? Promise.resolve(p) : new Promise((resolve) => waiting.push(resolve));
    };
    await new Promise<void>((resolve) => sock.once('connect', () => resolve()));
    const item = (type: number, body: Buffer): Buffer => {
      const h = Buffer.alloc(4);
      h[0] = type;
      h.writeUInt16BE(body.length, 2);
      return Buffer.concat([h, body]);
    };
    const str = (type: number, s: string): Buffer => item(type, Buffer.from(s, 'latin1'));
    const pc = (id: number, abs: string): Buffer => item(0x20, Buffer.concat([Buffer.from([id, 0, 0, 0]), str(0x30, abs), str(0x40, '1.2.840.10008.1.2')]));
    const maxPdu = Buffer.alloc(4);
    maxPdu.writeUInt32BE(16384);
    const fixed = Buffer.alloc(68);
    fixed.writeUInt16BE(1, 0);
    fixed.write('SECONDREAD'.padEnd(16, ' '), 4, 'latin1');
    fixed.write('RAW'.padEnd(16, ' '), 20, 'latin1');
    const body = Buffer.concat([
      fixed,
      str(0x10, '1.2.840.10008.3.1.1.1'),
      pc(1, VERIFICATION),
      pc(3, CT),
      item(0x50, Buffer.concat([item(0x51, maxPdu), str(0x52, '1.2.3.4')])),
    ]);
    const h = Buffer.alloc(6);
    h[0] = 0x01;
    h.writeUInt32BE(body.length, 2);
    sock.write(Buffer.concat([h, body]));
    const ac = await next();
    assert.equal(ac[0], 0x02, 'A-ASSOCIATE-AC');
    return { sock, next, closed };
  }

  it('answers a C-ECHO whose command is split over PDVs in two PDUs, then releases without leaving temp files', async () => {
    const { sock, next, closed } = await associate();
    const cmd = command({ field: 0x0030, id: 42, sopClass: VERIFICATION, dataset: false });
    sock.write(pdata({ ctx: 1, command: true, last: false, data: cmd.subarray(0, 10) }));
    sock.write(pdata({ ctx: 1, command: true, last: false, data: cmd.subarray(10, 30) }, { ctx: 1, command: true, last: true, data: cmd.subarray(30) }));
    const rsp = collect(await next());
    assert.equal(rsp.length, 1);
    const m = elements(rsp[0]!.data);
    assert.equal(m.get(0x0100)!.readUInt16LE(0), 0x8030);
    assert.equal(m.get(0x0120)!.readUInt16LE(0), 42);
    assert.equal(m.get(0x0900)!.readUInt16LE(0), 0x0000);
    sock.write(Buffer.from([0x05, 0, 0, 0, 0, 4, 0, 0, 0, 0]));
    const rp = await next();
    assert.equal(rp[0], 0x06, 'A-RELEASE-RP');
    assert.deepEqual(readdirSync(spool.tmpDir), [], 'the pre-created temp file is gone by the release response');
    sock.end();
    await closed;
  });

  it('aborts an association that sends data on a presentation context it was not given, keeping nothing', async () => {
    const { sock, next, closed } = await associate();
    const cmd = command({ field: 0x0001, id: 1, sopClass: CT, sopInstance: '1.2.3', dataset: true });
    sock.write(pdata({ ctx: 7, command: true, last: true, data: cmd }));
    const abort = await next();
    assert.equal(abort[0], 0x07, 'A-ABORT');
    await closed;
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(readdirSync(spool.tmpDir), []);
  });

  it('aborts on a dataset fragment that no command announced', async () => {
    const { sock, next, closed } = await associate();
    sock.write(pdata({ ctx: 3, command: false, last: true, data: Buffer.alloc(100) }));
    assert.equal((await next())[0], 0x07);
    await closed;
  });
});
