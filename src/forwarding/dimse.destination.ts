import net, { type Socket } from 'node:net';
import tls from 'node:tls';
import dimse from 'dcmjs-dimse';
import type { Destination } from '../config/schema.js';
import { IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME } from '../dicom/scp.js';
import { hashId, type Logger } from '../logger.js';
import { clientTlsOptions } from '../tls.js';
import {
  failAll,
  loadBytes,
  readPieces,
  streamToBuffer,
  type DestinationSender,
  type InstanceResult,
  type Part10Stream,
  type SendableInstance,
  type SendFailure,
} from './destination.js';

// dcmjs-dimse is used only for transcoding (a receiver that refuses the stored syntax) and its constants;
// the association and the C-STORE / C-ECHO data path are the small upper layer below (PS3.7, PS3.8).
const { Dataset, Transcoding, log: dimseLog } = dimse;
const { RejectResult, RejectSource, RejectReason } = dimse.constants;

type DimseConfig = Extract<Destination, { type: 'dimse' }>;

export const Ts = {
  implicitLe: '1.2.840.10008.1.2',
  explicitLe: '1.2.840.10008.1.2.1',
  explicitBe: '1.2.840.10008.1.2.2',
  deflate: '1.2.840.10008.1.2.1.99',
} as const;
const UNCOMPRESSED: readonly string[] = [Ts.explicitLe, Ts.implicitLe, Ts.explicitBe];
const isUncompressed = (ts: string): boolean => UNCOMPRESSED.includes(ts);

/** PS3.8 9.3.2.2: at most 128 presentation contexts (odd ids 1..255) in one A-ASSOCIATE-RQ. */
const MAX_CONTEXTS = 128;

/** The meta header UIDs and where the dataset starts in a Part 10 file. */
export interface Part10Parts {
  sopClassUid: string;
  sopInstanceUid: string;
  transferSyntaxUid: string;
  dataset: Buffer;
}

/**
 * Splits a Part 10 file: walks the group 0002 elements (explicit VR LE, PS3.10
 * 7.1) instead of trusting (0002,0000) alone, and returns the dataset bytes
 * after them as a view (no copy).
 */
export function splitPart10(bytes: Buffer): Part10Parts {
  if (bytes.length < 144 || bytes.toString('latin1', 128, 132) !== 'DICM') throw new Error('not a DICOM Part 10 file (no DICM prefix)');
  const uids: Record<number, string> = {};
  let o = 132;
  while (o + 8 <= bytes.length && bytes.readUInt16LE(o) === 0x0002) {
    const element = bytes.readUInt16LE(o + 2);
    const vr = bytes.toString('latin1', o + 4, o + 6);
    const long = ['OB', 'OW', 'OF', 'SQ', 'UT', 'UN', 'UC', 'UR', 'OD', 'OL', 'OV'].includes(vr);
    const len = long ? bytes.readUInt32LE(o + 8) : bytes.readUInt16LE(o + 6);
    const hdr = long ? 12 : 8;
    if (len === 0xffffffff || o + hdr + len > bytes.length) throw new Error('malformed Part 10 meta header');
    if (vr === 'UI') uids[element] = bytes.toString('latin1', o + hdr, o + hdr + len).replace(/[\0 ]+$/, '');
    o += hdr + len;
  }
  const transferSyntaxUid = uids[0x0010];
  if (!transferSyntaxUid) throw new Error('Part 10 meta header has no transfer syntax');
  return { sopClassUid: uids[0x0002] ?? '', sopInstanceUid: uids[0x0003] ?? '', transferSyntaxUid, dataset: bytes.subarray(o) };
}

/** PS3.4 B.2.3 / PS3.7 C: how a C-STORE status reads for the outbox. */
export function classifyStoreStatus(status: number): { ok: true } | { ok: false; failure: SendFailure } {
  const hex = `0x${status.toString(16).toUpperCase().padStart(4, '0')}`;
  // Success, and the warnings (coercion 0xB000, elements discarded 0xB006, dataset mismatch 0xB007, generic 0x0001): stored.
  if (status === 0x0000 || status === 0x0001 || (status & 0xf000) === 0xb000) return { ok: true };
  if ((status & 0xff00) === 0xa700) return { ok: false, failure: { transient: true, message: `receiver out of resources (${hex})` } };
  if (status === 0x0213 || status === 0x0110 || status === 0xfe00 || status === 0x0210) {
    // resource limitation, processing failure (the peer's own error), cancel, duplicate invocation: worth retrying
    return { ok: false, failure: { transient: true, message: `receiver failed the store (${hex})` } };
  }
  if ((status & 0xff00) === 0xa900) return { ok: false, failure: { transient: false, message: `dataset does not match SOP class (${hex})` } };
  if ((status & 0xf000) === 0xc000) return { ok: false, failure: { transient: false, message: `receiver cannot understand the dataset (${hex})` } };
  if (status === 0x0122) return { ok: false, failure: { transient: false, message: `SOP class not supported (${hex})` } };
  if (status === 0x0124) return { ok: false, failure: { transient: false, message: `not authorized (${hex})` } };
  return { ok: false, failure: { transient: false, message: `C-STORE failed (${hex})` } };
}

/** PS3.8 9.3.4: rejected-transient, or the provider's congestion / local limit, is worth retrying; anything else is configuration. */
export function classifyReject(r: { result: number; source: number; reason: number }): SendFailure {
  const transient =
    r.result === RejectResult.Transient ||
    (r.source === RejectSource.ServiceProviderPresentation &&
      (r.reason === RejectReason.TemporaryCongestion || r.reason === RejectReason.LocalLimitExceeded));
  const reasons: Record<string, string> = {
    [`${RejectSource.ServiceUser}:${RejectReason.CallingAeNotRecognized}`]: 'calling AE title not recognized',
    [`${RejectSource.ServiceUser}:${RejectReason.CalledAeNotRecognized}`]: 'called AE title not recognized',
    [`${RejectSource.ServiceUser}:${RejectReason.ApplicationContextNotSupported}`]: 'application context not supported',
  };
  const why = reasons[`${r.source}:${r.reason}`] ?? `source ${r.source}, reason ${r.reason}`;
  return { transient, message: `association rejected (${transient ? 'transient' : 'permanent'}): ${why}` };
}

// ---------------------------------------------------------------------------------------------
// The lean DICOM upper layer (PS3.8 section 9) and DIMSE messages (PS3.7 section 9.3) this SCU needs.
//
// Why not dcmjs-dimse's Client: it copies every PDU through a buffer, encodes each command and
// parses each response with dcmjs, keeps every dataset until the association ends, and silently
// skips a request it cannot place; that made forwarding CPU-bound at a fifth of storescu's speed.
// Here a dataset goes on the wire as 12-byte P-DATA-TF headers plus `subarray` views of the file
// bytes (no copy), corked into one writev, each PDU sized to the receiver's maximum; the command set
// is a few implicit-VR-LE elements written and read by hand. One request is outstanding at a time
// (no asynchronous operations window is negotiated), as with storescu.
// ---------------------------------------------------------------------------------------------

const PduType = { associateRq: 0x01, associateAc: 0x02, associateRj: 0x03, pData: 0x04, releaseRq: 0x05, releaseRp: 0x06, abort: 0x07 } as const;
const APPLICATION_CONTEXT = '1.2.840.10008.3.1.1.1';
const VERIFICATION_SOP_CLASS = '1.2.840.10008.1.1';
/** What we announce we can receive (we only receive responses: small). */
const OUR_MAX_PDU = 65536;
/** Used when the receiver announces 0 (no limit). */
const UNLIMITED_PDU_CAP = 1 << 20;
/** PS3.7 9.3.1: CommandDataSetType 0x0101 means no dataset; any other value means one follows. */
const NO_DATASET = 0x0101;

interface Pdu {
  type: number;
  body: Buffer;
}

/** An accepted (or refused) presentation context of the association. */
interface ContextResult {
  id: number;
  abstractSyntax: string;
  /** 0 acceptance; 1 user rejection; 2 no reason; 3 abstract syntax not supported; 4 transfer syntaxes not supported */
  result: number;
  transferSyntax: string;
}

const uidBytes = (uid: string): Buffer => Buffer.from(uid.length % 2 ? `${uid}\0` : uid, 'latin1');
const aeBytes = (ae: string): Buffer => Buffer.from(ae.padEnd(16, ' ').slice(0, 16), 'latin1');

/** A PS3.8 item: type, reserved, 16-bit big-endian length, value. */
function item(type: number, value: Buffer): Buffer {
  const h = Buffer.alloc(4);
  h[0] = type;
  h.writeUInt16BE(value.length, 2);
  return Buffer.concat([h, value]);
}

function pdu(type: number, body: Buffer): Buffer {
  const h = Buffer.alloc(6);
  h[0] = type;
  h.writeUInt32BE(body.length, 2);
  return Buffer.concat([h, body]);
}

/** PS3.8 9.3.2: A-ASSOCIATE-RQ with the given presentation contexts (odd ids). */
function encodeAssociateRq(callingAe: string, calledAe: string, contexts: { id: number; abstractSyntax: string; transferSyntaxes: string[] }[]): Buffer {
  const fixed = Buffer.alloc(68);
  fixed.writeUInt16BE(1, 0); // protocol version
  aeBytes(calledAe).copy(fixed, 4);
  aeBytes(callingAe).copy(fixed, 20);
  const maxLength = Buffer.alloc(4);
  maxLength.writeUInt32BE(OUR_MAX_PDU);
  const items = [
    item(0x10, Buffer.from(APPLICATION_CONTEXT, 'latin1')),
    ...contexts.map((c) =>
      item(0x20, Buffer.concat([Buffer.from([c.id, 0, 0, 0]), item(0x30, Buffer.from(c.abstractSyntax, 'latin1')), ...c.transferSyntaxes.map((ts) => item(0x40, Buffer.from(ts, 'latin1')))])),
    ),
    item(0x50, Buffer.concat([item(0x51, maxLength), item(0x52, Buffer.from(IMPLEMENTATION_CLASS_UID, 'latin1')), item(0x55, Buffer.from(IMPLEMENTATION_VERSION_NAME, 'latin1'))])),
  ];
  return pdu(PduType.associateRq, Buffer.concat([fixed, ...items]));
}

/** PS3.8 9.3.3: the presentation context results and the receiver's maximum PDU length from an A-ASSOCIATE-AC. */
function decodeAssociateAc(body: Buffer, proposed: ReadonlyMap<number, string>): { contexts: ContextResult[]; maxPdu: number } {
  const contexts: ContextResult[] = [];
  let maxPdu = 0;
  const str = (b: Buffer): string => b.toString('latin1').replace(/[\0 ]+$/, '');
  for (let o = 68; o + 4 <= body.length; ) {
    const type = body[o]!;
    const len = body.readUInt16BE(o + 2);
    const v = body.subarray(o + 4, o + 4 + len);
    if (type === 0x21 && v.length >= 4) {
      let transferSyntax = '';
      for (let s = 4; s + 4 <= v.length; ) {
        const sl = v.readUInt16BE(s + 2);
        if (v[s] === 0x40) transferSyntax = str(v.subarray(s + 4, s + 4 + sl));
        s += 4 + sl;
      }
      contexts.push({ id: v[0]!, abstractSyntax: proposed.get(v[0]!) ?? '', result: v[2]!, transferSyntax });
    } else if (type === 0x50) {
      for (let s = 0; s + 4 <= v.length; ) {
        const sl = v.readUInt16BE(s + 2);
        if (v[s] === 0x51 && sl === 4) maxPdu = v.readUInt32BE(s + 4);
        s += 4 + sl;
      }
    }
    o += 4 + len;
  }
  return { contexts, maxPdu };
}

/** A command set element, implicit VR little endian (PS3.7 6.3.1). */
function element(tag: number, value: Buffer): Buffer {
  const h = Buffer.allocUnsafe(8);
  h.writeUInt16LE(0x0000, 0);
  h.writeUInt16LE(tag, 2);
  h.writeUInt32LE(value.length, 4);
  return Buffer.concat([h, value]);
}
const us = (n: number): Buffer => {
  const b = Buffer.allocUnsafe(2);
  b.writeUInt16LE(n);
  return b;
};

/**
 * PS3.7 9.3.1.1 / 9.3.5.1: C-STORE-RQ (0x0001) or C-ECHO-RQ (0x0030) command set, group 0000 in tag
 * order with its group length first.
 */
function encodeCommand(c: { commandField: number; messageId: number; sopClassUid: string; sopInstanceUid?: string; hasDataset: boolean }): Buffer {
  const els = [
    element(0x0002, uidBytes(c.sopClassUid)), // AffectedSOPClassUID
    element(0x0100, us(c.commandField)), // CommandField
    element(0x0110, us(c.messageId)), // MessageID
    ...(c.commandField === 0x0001 ? [element(0x0700, us(0))] : []), // Priority: medium
    element(0x0800, us(c.hasDataset ? 0x0000 : NO_DATASET)), // CommandDataSetType
    ...(c.sopInstanceUid ? [element(0x1000, uidBytes(c.sopInstanceUid))] : []), // AffectedSOPInstanceUID
  ];
  const length = Buffer.allocUnsafe(4);
  length.writeUInt32LE(els.reduce((n, e) => n + e.length, 0));
  return Buffer.concat([element(0x0000, length), ...els]);
}

/** The elements of a response command set we read: CommandField, MessageIDBeingRespondedTo, Status, ErrorComment. */
function decodeResponse(cmd: Buffer): { commandField: number; respondedTo: number; status: number; errorComment?: string } {
  const r = { commandField: -1, respondedTo: -1, status: -1, errorComment: undefined as string | undefined };
  for (let o = 0; o + 8 <= cmd.length; ) {
    const tag = cmd.readUInt16LE(o + 2);
    const len = cmd.readUInt32LE(o + 4);
    const v = cmd.subarray(o + 8, o + 8 + len);
    if (cmd.readUInt16LE(o) !== 0x0000 || v.length < len) break;
    if (tag === 0x0100 && len >= 2) r.commandField = v.readUInt16LE(0);
    else if (tag === 0x0120 && len >= 2) r.respondedTo = v.readUInt16LE(0);
    else if (tag === 0x0900 && len >= 2) r.status = v.readUInt16LE(0);
    else if (tag === 0x0902) r.errorComment = v.toString('latin1').replace(/[\0 ]+$/, '');
    o += 8 + len;
  }
  return r;
}

class AssociationError extends Error {
  constructor(
    message: string,
    readonly rejected?: { result: number; source: number; reason: number },
  ) {
    super(message);
  }
}

/**
 * One TCP connection carrying one association. PDUs in are reassembled from
 * the socket and handed out one by one by `next()` (bounded by the timeout);
 * anything that ends the connection fails the waiter, so a caller never hangs.
 */
class UpperLayer {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private queue: Pdu[] = [];
  private waiter: { resolve: (p: Pdu) => void; reject: (e: Error) => void; timer: NodeJS.Timeout } | undefined;
  private failure: Error | undefined;
  /** the receiver's maximum dataset bytes per P-DATA-TF (its max PDU length less the PDV item header) */
  private maxPdv = 16384 - 6;

  private constructor(
    private readonly socket: Socket,
    private readonly timeoutMs: number,
    private readonly peer: string,
  ) {
    socket.setNoDelay(true);
    socket.on('data', (d: Buffer) => this.onData(d));
    socket.on('error', (e) => this.fail(new AssociationError(`network error: ${e.message}`)));
    socket.on('close', () => this.fail(new AssociationError(`connection to ${peer} closed`)));
  }

  /** With `secure` (tls.connect options), the association starts only once the TLS handshake is done. */
  static connect(host: string, port: number, timeoutMs: number, peer: string, secure?: () => tls.ConnectionOptions): Promise<UpperLayer> {
    return new Promise((resolve, reject) => {
      let socket: Socket;
      try {
        socket = secure ? tls.connect(secure()) : net.connect({ host, port });
      } catch (err) {
        // the TLS files could not be read or used
        reject(new AssociationError(`TLS setup for ${peer} failed: ${(err as Error).message}`));
        return;
      }
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new AssociationError(`no connection to ${peer} within ${timeoutMs / 1000}s`));
      }, timeoutMs);
      socket.once('error', (e) => {
        clearTimeout(timer);
        reject(new AssociationError(secure ? `TLS connection to ${peer} failed: ${e.message}` : `network error: ${e.message}`));
      });
      socket.once(secure ? 'secureConnect' : 'connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        resolve(new UpperLayer(socket, timeoutMs, peer));
      });
    });
  }

  /** A-ASSOCIATE-RQ, then AC (the contexts) or RJ (thrown as an AssociationError with `rejected`). */
  async associate(callingAe: string, calledAe: string, proposals: { id: number; abstractSyntax: string; transferSyntaxes: string[] }[]): Promise<ContextResult[]> {
    this.socket.write(encodeAssociateRq(callingAe, calledAe, proposals));
    const p = await this.next();
    if (p.type === PduType.associateRj) {
      throw new AssociationError('association rejected', { result: p.body[1] ?? 0, source: p.body[2] ?? 0, reason: p.body[3] ?? 0 });
    }
    if (p.type !== PduType.associateAc) throw this.protocolError(p);
    const ac = decodeAssociateAc(p.body, new Map(proposals.map((x) => [x.id, x.abstractSyntax])));
    this.maxPdv = (ac.maxPdu === 0 ? UNLIMITED_PDU_CAP : Math.min(ac.maxPdu, UNLIMITED_PDU_CAP)) - 6;
    if (this.maxPdv < 1) throw new AssociationError(`receiver announced an unusable maximum PDU length (${ac.maxPdu})`);
    return ac.contexts;
  }

  /**
   * Sends one request (command, then the dataset if any) and waits for its
   * response command. THE data path: every fragment is a 12-byte header (PDU
   * type/length, PDV length, context id, message control header) followed by a
   * view of the caller's bytes; cork/uncork turns them into one writev.
   */
  async request(contextId: number, command: Buffer, messageId: number, dataset?: Buffer): Promise<ReturnType<typeof decodeResponse>> {
    if (this.failure) throw this.failure;
    this.socket.cork();
    this.writeFragments(contextId, command, true);
    if (dataset) this.writeFragments(contextId, dataset, false);
    this.socket.uncork();
    for (;;) {
      const rsp = decodeResponse(await this.nextCommand());
      if (rsp.respondedTo === messageId) return rsp;
      // a late answer to an earlier request (cannot happen with one outstanding): skip it
    }
  }

  /**
   * The same for a dataset read from disk as it goes: P-DATA-TF fragments of
   * the receiver's maximum size are cut from the chunks as they come, and the
   * next chunk is read only once the socket has taken the previous ones (its
   * 'drain'), so a 2.5 GiB instance moves through a few MiB of memory.
   */
  async requestStream(contextId: number, command: Buffer, messageId: number, chunks: AsyncIterable<Buffer>, length: number): Promise<ReturnType<typeof decodeResponse>> {
    if (this.failure) throw this.failure;
    this.writeFragments(contextId, command, true);
    let pending: Buffer[] = [];
    let pendingLength = 0;
    let sent = 0;
    const take = (n: number): Buffer => {
      if (pending[0]!.length >= n) {
        const out = pending[0]!.subarray(0, n);
        pending[0] = pending[0]!.subarray(n);
        if (pending[0].length === 0) pending.shift();
        pendingLength -= n;
        return out;
      }
      const all = Buffer.concat(pending, pendingLength);
      pending = all.length > n ? [all.subarray(n)] : [];
      pendingLength -= n;
      return all.subarray(0, n);
    };
    for await (const chunk of chunks) {
      if (this.failure) throw this.failure;
      if (chunk.length === 0) continue;
      pending.push(chunk);
      pendingLength += chunk.length;
      while (pendingLength >= this.maxPdv || (pendingLength > 0 && sent + pendingLength >= length)) {
        const n = Math.min(this.maxPdv, pendingLength);
        const data = take(n);
        sent += n;
        const h = Buffer.allocUnsafe(12);
        h[0] = PduType.pData;
        h[1] = 0;
        h.writeUInt32BE(n + 6, 2);
        h.writeUInt32BE(n + 2, 6);
        h[10] = contextId;
        h[11] = sent >= length ? 0x02 : 0x00;
        this.socket.write(h);
        if (!this.socket.write(data)) await this.drained();
      }
    }
    if (sent !== length) throw new AssociationError(`the instance's file gave ${sent} of ${length} bytes (changed or truncated on disk)`);
    for (;;) {
      const rsp = decodeResponse(await this.nextCommand());
      if (rsp.respondedTo === messageId) return rsp;
    }
  }

  /** Resolves once the socket takes more; fails when the association ends or the receiver stops reading for the timeout. */
  private drained(): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      const done = (err?: Error): void => {
        clearTimeout(timer);
        this.socket.off('drain', onDrain);
        this.socket.off('close', onClose);
        if (err) reject(err);
        else resolve();
      };
      const onDrain = (): void => done();
      const onClose = (): void => done(this.failure ?? new AssociationError(`connection to ${this.peer} closed`));
      const timer = setTimeout(() => done(new AssociationError(`${this.peer} stopped reading for ${this.timeoutMs / 1000}s`)), this.timeoutMs);
      this.socket.on('drain', onDrain);
      this.socket.on('close', onClose);
    });
  }

  private writeFragments(contextId: number, data: Buffer, isCommand: boolean): void {
    let o = 0;
    do {
      const n = Math.min(this.maxPdv, data.length - o);
      const last = o + n >= data.length;
      const h = Buffer.allocUnsafe(12);
      h[0] = PduType.pData;
      h[1] = 0;
      h.writeUInt32BE(n + 6, 2); // PDU length: one PDV item (4-byte length + 2 + n)
      h.writeUInt32BE(n + 2, 6); // PDV item length: context id + message control header + n
      h[10] = contextId;
      h[11] = (isCommand ? 0x01 : 0x00) | (last ? 0x02 : 0x00);
      this.socket.write(h);
      this.socket.write(data.subarray(o, o + n));
      o += n;
    } while (o < data.length);
  }

  /** Reassembles one command set from P-DATA-TF fragments (dataset fragments of a response are skipped). */
  private async nextCommand(): Promise<Buffer> {
    const parts: Buffer[] = [];
    for (;;) {
      const p = await this.next();
      if (p.type !== PduType.pData) throw this.protocolError(p);
      let lastCommand = false;
      for (let o = 0; o + 6 <= p.body.length; ) {
        const len = p.body.readUInt32BE(o);
        const mch = p.body[o + 5]!;
        if (mch & 0x01) {
          parts.push(p.body.subarray(o + 6, o + 4 + len));
          if (mch & 0x02) lastCommand = true;
        }
        o += 4 + len;
      }
      if (lastCommand) return Buffer.concat(parts);
    }
  }

  /** A-RELEASE-RQ and its RP (bounded), then closes; never throws. */
  async release(): Promise<void> {
    try {
      if (!this.failure) {
        this.socket.write(pdu(PduType.releaseRq, Buffer.alloc(4)));
        for (;;) {
          const p = await this.next(Math.min(this.timeoutMs, 5000));
          if (p.type === PduType.releaseRp) break;
        }
      }
    } catch {
      /* the receiver closed or did not answer: the requests were answered already */
    }
    this.destroy();
  }

  /** A-ABORT (service user), then closes. */
  abort(): void {
    if (!this.failure && this.socket.writable) this.socket.write(pdu(PduType.abort, Buffer.alloc(4)));
    this.destroy();
  }

  destroy(): void {
    this.fail(new AssociationError('association closed'));
    this.socket.destroy();
  }

  private protocolError(p: Pdu): AssociationError {
    if (p.type === PduType.abort) return new AssociationError(`association aborted by ${this.peer} (source ${p.body[2] ?? '?'}, reason ${p.body[3] ?? '?'})`);
    return new AssociationError(`unexpected PDU type 0x${p.type.toString(16)} from ${this.peer}`);
  }

  private next(timeoutMs = this.timeoutMs): Promise<Pdu> {
    const queued = this.queue.shift();
    if (queued) return Promise.resolve(queued);
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      // The clock counts from when our own bytes have left: while a large dataset is still being
      // written out (a slow link), the receiver cannot answer yet. A peer that stops reading stops
      // that progress too, so this still ends.
      let pending = this.socket.writableLength;
      const expire = (): void => {
        const now = this.socket.writableLength;
        if (now > 0 && now !== pending) {
          pending = now;
          if (this.waiter) this.waiter.timer = setTimeout(expire, timeoutMs);
          return;
        }
        this.waiter = undefined;
        reject(new AssociationError(`no response from ${this.peer} within ${timeoutMs / 1000}s`));
      };
      this.waiter = { resolve, reject, timer: setTimeout(expire, timeoutMs) };
    });
  }

  private onData(d: Buffer): void {
    this.chunks.push(d);
    this.buffered += d.length;
    while (this.buffered >= 6) {
      const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
      const length = all.readUInt32BE(2);
      if (all.length < 6 + length) {
        this.chunks = [all];
        return;
      }
      const p: Pdu = { type: all[0]!, body: all.subarray(6, 6 + length) };
      const rest = all.subarray(6 + length);
      this.chunks = rest.length > 0 ? [rest] : [];
      this.buffered = rest.length;
      if (p.type === PduType.releaseRq) {
        // the receiver wants to end the association (not expected of a storage SCP): agree and close
        this.socket.write(pdu(PduType.releaseRp, Buffer.alloc(4)));
        this.fail(new AssociationError(`${this.peer} released the association`));
        this.socket.end();
        return;
      }
      const w = this.waiter;
      if (w) {
        this.waiter = undefined;
        clearTimeout(w.timer);
        w.resolve(p);
      } else {
        this.queue.push(p);
      }
    }
  }

  private fail(e: Error): void {
    this.failure ??= e;
    const w = this.waiter;
    if (w) {
      this.waiter = undefined;
      clearTimeout(w.timer);
      w.reject(this.failure);
    }
  }
}

// ---------------------------------------------------------------------------------------------

interface Prepared {
  index: number;
  instance: SendableInstance;
  sopClassUid: string;
  /** the syntax the caller declared (the file's own meta header decides once loaded) */
  transferSyntaxUid: string;
  /** already split when the caller handed bytes (not a loader) */
  parts?: Part10Parts;
}

/** What an instance is once it is its turn: its bytes in memory, or a stream read from disk as it is sent. */
type Loaded = { parts: Part10Parts } | { stream: Part10Stream; transferSyntaxUid: string };

let codecs: Promise<boolean> | undefined;
/** dcmjs-codecs (WebAssembly, ~4 MB) is loaded once, and only when a compressed file is in a batch. */
function ensureCodecs(logger: Logger): Promise<boolean> {
  codecs ??= Transcoding.initializeAsync()
    .then(() => Transcoding.isInitialized())
    .catch((err: unknown) => {
      logger.warn('dcmjs-codecs failed to initialise: compressed files go only to receivers that accept their syntax', { err: String(err) });
      return false;
    });
  return codecs;
}

/**
 * C-STORE SCU: one association per batch (split only past 128 presentation
 * contexts). Each file goes out as its own bytes when the receiver accepts its
 * transfer syntax; otherwise it is transcoded (uncompressed <-> uncompressed
 * with dcmjs, compressed -> uncompressed with dcmjs-codecs) or failed
 * permanently. A loader is called just before its instance is sent (the next
 * one is read while the receiver answers the current one), so at most two
 * files are held at a time. Every request is answered or timed out.
 */
export class DimseDestinationSender implements DestinationSender {
  readonly id: string;
  private readonly log: Logger;
  private readonly callingAe: string;
  private readonly timeoutMs: number;
  private readonly peer: string;
  /** tls.connect options, read per connection (a renewed certificate is picked up); undefined for plain TCP. */
  private readonly secure: (() => tls.ConnectionOptions) | undefined;
  private messageId = 0;

  constructor(
    private readonly config: DimseConfig,
    options: { callingAeTitle: string; logger: Logger },
  ) {
    this.id = config.id;
    this.callingAe = config.callingAeTitle ?? options.callingAeTitle;
    this.log = options.logger.child({ component: 'dimse-destination', destination: config.id });
    this.timeoutMs = config.timeoutSeconds * 1000;
    this.peer = `${config.aeTitle}@${config.host}:${config.port}${config.tls ? ' (TLS)' : ''}`;
    const t = config.tls;
    this.secure = t ? () => clientTlsOptions(t, config.host, config.port) : undefined;
    // dcmjs-dimse logs at TRACE/INFO by default (transcoding included), as the SCP notes too.
    dimseLog.setLevel('silent');
  }

  private nextMessageId(): number {
    this.messageId = (this.messageId % 0xffff) + 1;
    return this.messageId;
  }

  async verify(): Promise<{ ok: boolean; detail: string }> {
    let ul: UpperLayer | undefined;
    try {
      ul = await UpperLayer.connect(this.config.host, this.config.port, this.timeoutMs, this.peer, this.secure);
      const contexts = await ul.associate(this.callingAe, this.config.aeTitle, [{ id: 1, abstractSyntax: VERIFICATION_SOP_CLASS, transferSyntaxes: [Ts.implicitLe, Ts.explicitLe] }]);
      const ctx = contexts.find((c) => c.id === 1 && c.result === 0);
      if (!ctx) {
        await ul.release();
        return { ok: false, detail: 'receiver does not support Verification (C-ECHO)' };
      }
      const messageId = this.nextMessageId();
      const rsp = await ul.request(1, encodeCommand({ commandField: 0x0030, messageId, sopClassUid: VERIFICATION_SOP_CLASS, hasDataset: false }), messageId);
      await ul.release();
      if (rsp.status === 0) return { ok: true, detail: `C-ECHO ${this.peer} ok` };
      return { ok: false, detail: `C-ECHO status 0x${rsp.status.toString(16)}` };
    } catch (err) {
      ul?.abort();
      if (err instanceof AssociationError && err.rejected) return { ok: false, detail: classifyReject(err.rejected).message };
      return { ok: false, detail: `C-ECHO failed: ${err instanceof Error ? err.message : String(err)}` };
    }
  }

  async send(batch: readonly SendableInstance[]): Promise<InstanceResult[]> {
    const results: (InstanceResult | undefined)[] = batch.map(() => undefined);
    try {
      const prepared: Prepared[] = [];
      batch.forEach((instance, index) => {
        if ('stream' in instance || typeof instance.bytes === 'function') {
          prepared.push({ index, instance, sopClassUid: instance.sopClassUid, transferSyntaxUid: instance.transferSyntaxUid });
          return;
        }
        try {
          const parts = splitPart10(instance.bytes as Buffer);
          // The caller's UIDs win (a de-identified copy carries its own meta); the meta header is the fallback.
          prepared.push({ index, instance, parts, sopClassUid: instance.sopClassUid || parts.sopClassUid, transferSyntaxUid: instance.transferSyntaxUid || parts.transferSyntaxUid });
        } catch (err) {
          results[index] = { sopInstanceUid: instance.sopInstanceUid, ok: false, failure: { transient: false, message: (err as Error).message } };
        }
      });
      // A loader without the UIDs (not how the forwarding service calls us): load it now to learn them.
      for (const p of prepared) {
        if (p.parts || (p.sopClassUid && p.transferSyntaxUid)) continue;
        try {
          p.parts = splitPart10(await loadBytes(p.instance));
          p.sopClassUid ||= p.parts.sopClassUid;
          p.transferSyntaxUid ||= p.parts.transferSyntaxUid;
        } catch (err) {
          results[p.index] = { sopInstanceUid: p.instance.sopInstanceUid, ok: false, failure: { transient: false, message: (err as Error).message } };
        }
      }
      const todo = prepared.filter((p) => !results[p.index]);
      if (todo.some((p) => !isUncompressed(p.transferSyntaxUid))) await ensureCodecs(this.log);
      for (const chunk of chunkByContexts(todo)) {
        const chunkResults = await this.storeChunk(chunk);
        chunk.forEach((p, i) => (results[p.index] = chunkResults[i]));
      }
      return results.map((r, i) => r ?? { sopInstanceUid: batch[i]!.sopInstanceUid, ok: false, failure: { transient: true, message: 'not sent' } });
    } catch (err) {
      // never throws: an unexpected error fails the rest of the batch for a retry
      this.log.error('DIMSE send failed unexpectedly', { err: err instanceof Error ? err.message : String(err) });
      const fallback = failAll(batch, { transient: true, message: `internal error: ${err instanceof Error ? err.message : String(err)}` });
      return results.map((r, i) => r ?? fallback[i]!);
    }
  }

  /** One association for the chunk: propose, then per instance load, pick a context (or transcode), C-STORE, read the status. */
  private async storeChunk(chunk: Prepared[]): Promise<InstanceResult[]> {
    const results: (InstanceResult | undefined)[] = chunk.map(() => undefined);
    const done = (i: number, r: { ok: true } | { ok: false; failure: SendFailure }): void => {
      const sopInstanceUid = chunk[i]!.instance.sopInstanceUid;
      results[i] = r.ok ? { sopInstanceUid, ok: true } : { sopInstanceUid, ok: false, failure: r.failure };
    };
    // Per SOP class one context offering explicit + implicit LE (the transcoding targets), and per stored
    // syntax one context with that syntax alone, so the receiver cannot pick a syntax we would have to
    // re-encode into when it accepts the stored one.
    const proposals: { id: number; abstractSyntax: string; transferSyntaxes: string[] }[] = [];
    const seen = new Set<string>();
    const propose = (abstractSyntax: string, transferSyntaxes: string[]): void => {
      const key = `${abstractSyntax}|${transferSyntaxes.join(',')}`;
      if (seen.has(key)) return;
      seen.add(key);
      proposals.push({ id: proposals.length * 2 + 1, abstractSyntax, transferSyntaxes });
    };
    for (const p of chunk) {
      propose(p.sopClassUid, [p.transferSyntaxUid]);
      propose(p.sopClassUid, [Ts.explicitLe, Ts.implicitLe]);
    }

    let ul: UpperLayer | undefined;
    let ended: SendFailure | undefined;
    try {
      ul = await UpperLayer.connect(this.config.host, this.config.port, this.timeoutMs, this.peer, this.secure);
      const accepted = (await ul.associate(this.callingAe, this.config.aeTitle, proposals)).filter((c) => c.result === 0 && c.transferSyntax);
      const contextFor = (sopClassUid: string, ts: string): number | undefined => accepted.find((c) => c.abstractSyntax === sopClassUid && c.transferSyntax === ts)?.id;

      // Prefetch: the next instance is loaded while the receiver stores the current one.
      const load = (i: number): Promise<Loaded> | undefined => {
        const p = chunk[i];
        if (!p || !accepted.some((c) => c.abstractSyntax === p.sopClassUid)) return undefined;
        const inst = p.instance;
        const parts: Promise<Loaded> = p.parts
          ? Promise.resolve({ parts: p.parts })
          : 'stream' in inst
            ? Promise.resolve({ stream: inst.stream, transferSyntaxUid: p.transferSyntaxUid })
            : loadBytes(inst).then((b) => ({ parts: splitPart10(b) }));
        parts.catch(() => undefined); // observed below; never an unhandled rejection if the association ends first
        return parts;
      };
      let nextLoad = load(0);
      for (let i = 0; i < chunk.length; i++) {
        const p = chunk[i]!;
        // The caller's stop check (a cancelled case): the instance answered before this one was the last sent.
        const check = 'beforeSend' in p.instance ? p.instance.beforeSend : undefined;
        if (check) {
          try {
            await check();
          } catch (err) {
            ended = { transient: true, message: `stopped before sending: ${(err as Error).message}` };
            break;
          }
        }
        const loading = nextLoad;
        nextLoad = undefined;
        if (!loading) {
          done(i, { ok: false, failure: { transient: false, message: `receiver does not accept SOP class ${p.sopClassUid}` } });
          nextLoad = load(i + 1);
          continue;
        }
        let loaded: Loaded;
        try {
          loaded = await loading;
        } catch (err) {
          done(i, { ok: false, failure: { transient: false, message: `could not read the instance: ${(err as Error).message}` } });
          nextLoad = load(i + 1);
          continue;
        }
        p.parts = undefined;
        // the bytes are what their meta header says (a stream: what the caller declared, the stored file's syntax)
        const stored = 'parts' in loaded ? loaded.parts.transferSyntaxUid : loaded.transferSyntaxUid;
        let contextId = contextFor(p.sopClassUid, stored);
        const stream = 'stream' in loaded && contextId !== undefined ? loaded.stream : undefined;
        let dataset: Buffer = Buffer.alloc(0);
        if (contextId === undefined || 'parts' in loaded) {
          // Transcoding works on a whole dataset: a streamed instance is read into memory only on this path.
          try {
            dataset = 'parts' in loaded ? loaded.parts.dataset : splitPart10(await streamToBuffer(loaded.stream)).dataset;
          } catch (err) {
            done(i, { ok: false, failure: { transient: false, message: `could not read the instance: ${(err as Error).message}` } });
            nextLoad = load(i + 1);
            continue;
          }
        }
        if (contextId === undefined) {
          const target = UNCOMPRESSED.map((ts) => ({ ts, id: contextFor(p.sopClassUid, ts) })).find((x) => x.id !== undefined);
          const refuse = (message: string): void => done(i, { ok: false, failure: { transient: false, message } });
          if (!target) {
            refuse(`receiver does not accept transfer syntax ${stored}`);
          } else if (!isUncompressed(stored) && !(await ensureCodecs(this.log))) {
            refuse(`receiver does not accept transfer syntax ${stored} (no codecs to transcode)`);
          } else {
            try {
              dataset = Transcoding.transcodeDataset(new Dataset(dataset, stored), target.ts).getDenaturalizedDataset();
              contextId = target.id;
              this.log.debug('transcoding for receiver', { sop: hashId(p.instance.sopInstanceUid), from: stored, to: target.ts });
            } catch (err) {
              refuse(`receiver does not accept transfer syntax ${stored}; transcoding to ${target.ts} failed: ${(err as Error).message}`);
            }
          }
          if (contextId === undefined) {
            nextLoad = load(i + 1);
            continue;
          }
        }
        const messageId = this.nextMessageId();
        const command = encodeCommand({ commandField: 0x0001, messageId, sopClassUid: p.sopClassUid, sopInstanceUid: p.instance.sopInstanceUid, hasDataset: true });
        const answered = stream
          ? ul.requestStream(contextId, command, messageId, readPieces(stream, stream.datasetOffset), stream.length - stream.datasetOffset)
          : ul.request(contextId, command, messageId, dataset);
        nextLoad = load(i + 1);
        const rsp = await answered;
        const c =
          rsp.commandField === 0x8001 && rsp.status >= 0
            ? classifyStoreStatus(rsp.status)
            : { ok: false as const, failure: { transient: true, message: `unexpected response to C-STORE (command 0x${rsp.commandField.toString(16)}, status ${rsp.status})` } };
        if (!c.ok && rsp.errorComment) c.failure.message += `: ${rsp.errorComment}`;
        done(i, c);
      }
      await ul.release();
    } catch (err) {
      ul?.abort();
      if (err instanceof AssociationError && err.rejected) ended = classifyReject(err.rejected);
      else ended = { transient: true, message: err instanceof Error ? err.message : String(err) };
    }
    return results.map((r, i) => r ?? { sopInstanceUid: chunk[i]!.instance.sopInstanceUid, ok: false, failure: { ...(ended ?? { transient: true, message: 'association ended before a response' }) } });
  }
}

/** Splits a batch only when its SOP class / syntax mix needs more than 128 presentation contexts. */
function chunkByContexts(prepared: Prepared[]): Prepared[][] {
  const chunks: Prepared[][] = [];
  let current: Prepared[] = [];
  let keys = new Set<string>();
  const keysOf = (p: Prepared): string[] => [`${p.sopClassUid}|*`, `${p.sopClassUid}|${p.transferSyntaxUid}`];
  for (const p of prepared) {
    const added = keysOf(p).filter((k) => !keys.has(k));
    if (keys.size + added.length > MAX_CONTEXTS && current.length > 0) {
      chunks.push(current);
      current = [];
      keys = new Set();
    }
    current.push(p);
    keysOf(p).forEach((k) => keys.add(k));
  }
  if (current.length > 0) chunks.push(current);
  return chunks;
}
