/**
 * A DICOM upper-layer peer that writes exactly the bytes a test gives it
 * (PS3.8 PDUs built by hand) and reads back whole PDUs: for guard and fuzz
 * tests that must send what no real SCU would.
 */
import net from 'node:net';

export const PduType = { associateRq: 0x01, associateAc: 0x02, associateRj: 0x03, pData: 0x04, releaseRq: 0x05, releaseRp: 0x06, abort: 0x07 } as const;
export const VERIFICATION = '1.2.840.10008.1.1';
export const CT_IMAGE_STORAGE = '1.2.840.10008.5.1.4.1.1.2';
export const EXPLICIT_LE = '1.2.840.10008.1.2.1';
export const IMPLICIT_LE = '1.2.840.10008.1.2';

const padUid = (s: string): Buffer => Buffer.from(s.length % 2 ? `${s}\0` : s, 'latin1');
const aeField = (s: string): Buffer => Buffer.from(s.padEnd(16, ' ').slice(0, 16), 'latin1');

function item(type: number, value: Buffer): Buffer {
  const h = Buffer.alloc(4);
  h[0] = type;
  h.writeUInt16BE(value.length, 2);
  return Buffer.concat([h, value]);
}

export function pdu(type: number, body: Buffer, declaredLength = body.length): Buffer {
  const h = Buffer.alloc(6);
  h[0] = type;
  h.writeUInt32BE(declaredLength >>> 0, 2);
  return Buffer.concat([h, body]);
}

export interface ProposedContext {
  id: number;
  abstractSyntax: string;
  transferSyntaxes: string[];
}

/** The variable part of an A-ASSOCIATE-RQ (PS3.8 9.3.2), without the PDU header. */
export function associateRqBody(o: { calledAe?: string; callingAe?: string; contexts?: ProposedContext[]; maxPdu?: number }): Buffer {
  const fixed = Buffer.alloc(68);
  fixed.writeUInt16BE(1, 0); // protocol version
  aeField(o.calledAe ?? 'SECONDREAD').copy(fixed, 4);
  aeField(o.callingAe ?? 'PACS1').copy(fixed, 20);
  const contexts = o.contexts ?? [{ id: 1, abstractSyntax: VERIFICATION, transferSyntaxes: [IMPLICIT_LE] }];
  const items: Buffer[] = [item(0x10, Buffer.from('1.2.840.10008.3.1.1.1', 'latin1'))];
  for (const c of contexts) {
    const head = Buffer.from([c.id, 0, 0, 0]);
    items.push(
      item(
        0x20,
        Buffer.concat([head, item(0x30, Buffer.from(c.abstractSyntax, 'latin1')), ...c.transferSyntaxes.map((t) => item(0x40, Buffer.from(t, 'latin1')))]),
      ),
    );
  }
  const maxLen = Buffer.alloc(4);
  maxLen.writeUInt32BE(o.maxPdu ?? 16384, 0);
  items.push(item(0x50, Buffer.concat([item(0x51, maxLen), item(0x52, Buffer.from('1.2.3.4.5', 'latin1'))])));
  return Buffer.concat([fixed, ...items]);
}

export function associateRq(o: Parameters<typeof associateRqBody>[0] = {}): Buffer {
  return pdu(PduType.associateRq, associateRqBody(o));
}

export const releaseRq = (): Buffer => pdu(PduType.releaseRq, Buffer.alloc(4));

export interface Pdv {
  contextId: number;
  command: boolean;
  last: boolean;
  data: Buffer;
}

export function pdvItem(p: Pdv): Buffer {
  const h = Buffer.alloc(6);
  h.writeUInt32BE(p.data.length + 2, 0);
  h[4] = p.contextId;
  h[5] = (p.command ? 1 : 0) | (p.last ? 2 : 0);
  return Buffer.concat([h, p.data]);
}

export function pData(pdvs: Pdv[]): Buffer {
  return pdu(PduType.pData, Buffer.concat(pdvs.map(pdvItem)));
}

/** A command set, implicit VR LE, group 0000 with its group length. */
export function commandSet(elements: [number, Buffer][]): Buffer {
  const els = elements.map(([tag, v]) => {
    const h = Buffer.alloc(8);
    h.writeUInt16LE(0, 0);
    h.writeUInt16LE(tag, 2);
    h.writeUInt32LE(v.length, 4);
    return Buffer.concat([h, v]);
  });
  const body = Buffer.concat(els);
  const gl = Buffer.alloc(12);
  gl.writeUInt32LE(4, 4);
  gl.writeUInt32LE(body.length, 8);
  return Buffer.concat([gl, body]);
}

const us = (n: number): Buffer => {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(n & 0xffff, 0);
  return b;
};

export function cEchoRq(messageId: number): Buffer {
  return commandSet([
    [0x0002, padUid(VERIFICATION)],
    [0x0100, us(0x0030)],
    [0x0110, us(messageId)],
    [0x0800, us(0x0101)],
  ]);
}

export function cStoreRq(messageId: number, sopClassUid: string, sopInstanceUid: string): Buffer {
  return commandSet([
    [0x0002, padUid(sopClassUid)],
    [0x0100, us(0x0001)],
    [0x0110, us(messageId)],
    [0x0700, us(0)],
    [0x0800, us(0x0000)],
    [0x1000, padUid(sopInstanceUid)],
  ]);
}

/** One explicit VR little endian element. */
export function element(group: number, elem: number, vr: string, value: Buffer): Buffer {
  const long = ['OB', 'OW', 'OF', 'SQ', 'UT', 'UN'].includes(vr);
  const h = Buffer.alloc(long ? 12 : 8);
  h.writeUInt16LE(group, 0);
  h.writeUInt16LE(elem, 2);
  h.write(vr, 4, 'latin1');
  if (long) h.writeUInt32LE(value.length, 8);
  else h.writeUInt16LE(value.length, 6);
  return Buffer.concat([h, value]);
}

const text = (s: string): Buffer => Buffer.from(s.length % 2 ? `${s} ` : s, 'latin1');

/** A small, valid CT image dataset (explicit VR LE), tags in ascending order. */
export function ctDataset(o: { sopInstanceUid: string; studyUid: string; seriesUid?: string; patientId?: string; accession?: string }): Buffer {
  return Buffer.concat([
    element(0x0008, 0x0016, 'UI', padUid(CT_IMAGE_STORAGE)),
    element(0x0008, 0x0018, 'UI', padUid(o.sopInstanceUid)),
    element(0x0008, 0x0050, 'SH', text(o.accession ?? 'ACCFUZZ')),
    element(0x0008, 0x0060, 'CS', text('CT')),
    element(0x0010, 0x0010, 'PN', text('FUZZ^PATIENT')),
    element(0x0010, 0x0020, 'LO', text(o.patientId ?? 'PIDFUZZ')),
    element(0x0020, 0x000d, 'UI', padUid(o.studyUid)),
    element(0x0020, 0x000e, 'UI', padUid(o.seriesUid ?? `${o.studyUid}.1`)),
    element(0x0028, 0x0010, 'US', Buffer.from([4, 0])),
    element(0x0028, 0x0011, 'US', Buffer.from([4, 0])),
    element(0x7fe0, 0x0010, 'OW', Buffer.alloc(32, 7)),
  ]);
}

export interface ReadPdu {
  type: number;
  body: Buffer;
}

/**
 * A plain socket that collects every whole PDU the gateway sends back.
 * `next()` waits for the next one (or reports the connection closed).
 */
export class RawDicomPeer {
  private buf: Buffer = Buffer.alloc(0);
  private readonly pdus: ReadPdu[] = [];
  private waiters: (() => void)[] = [];
  closed = false;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
      while (this.buf.length >= 6) {
        const len = this.buf.readUInt32BE(2);
        if (this.buf.length < 6 + len) break;
        this.pdus.push({ type: this.buf[0]!, body: this.buf.subarray(6, 6 + len) });
        this.buf = this.buf.subarray(6 + len);
      }
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => undefined);
  }

  static async connect(port: number, host = '127.0.0.1'): Promise<RawDicomPeer> {
    const socket = net.connect({ host, port, noDelay: true });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return new RawDicomPeer(socket);
  }

  write(b: Buffer): void {
    if (!this.socket.destroyed) this.socket.write(b);
  }

  /** The next PDU from the gateway, or undefined once the connection closed without one. */
  async next(timeoutMs = 10_000): Promise<ReadPdu | undefined> {
    const deadline = Date.now() + timeoutMs;
    while (this.pdus.length === 0) {
      if (this.closed) return undefined;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('timed out waiting for a PDU');
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return this.pdus.shift();
  }

  async waitClosed(timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed) {
      if (Date.now() > deadline) throw new Error('connection not closed');
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** A-ASSOCIATE-RQ, expecting AC; resolves with the accepted contexts' results. */
  async associate(o: Parameters<typeof associateRqBody>[0] = {}): Promise<ReadPdu> {
    this.write(associateRq(o));
    const r = await this.next();
    if (!r) throw new Error('closed instead of answering the association request');
    return r;
  }

  destroy(): void {
    this.socket.destroy();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
}

/** The DIMSE status of a response command set carried in one P-DATA-TF PDU (single PDV). */
export function responseStatus(p: ReadPdu): number | undefined {
  if (p.type !== PduType.pData) return undefined;
  const cmd = p.body.subarray(6);
  let o = 0;
  while (o + 8 <= cmd.length) {
    const tag = cmd.readUInt16LE(o + 2);
    const len = cmd.readUInt32LE(o + 4);
    if (tag === 0x0900) return cmd.readUInt16LE(o + 8);
    o += 8 + len;
  }
  return undefined;
}

/** Association RJ fields (PS3.8 9.3.4): result, source, reason. */
export function rejectOf(p: ReadPdu): { result: number; source: number; reason: number } | undefined {
  if (p.type !== PduType.associateRj) return undefined;
  return { result: p.body[1]!, source: p.body[2]!, reason: p.body[3]! };
}
