import { createHash, type Hash } from 'node:crypto';
import { closeSync, open, openSync, writeSync } from 'node:fs';
import net from 'node:net';
import { Writable } from 'node:stream';
import tls from 'node:tls';
import dcmjs from 'dcmjs';
import dimse from 'dcmjs-dimse';
import type { GatewayConfig } from '../config/schema.js';
import { ErrorCode, GatewayError, dimseStatusFor, toGatewayError } from '../errors.js';
import { hashId, type Logger } from '../logger.js';
import { serverTlsOptions, subjectAeMismatch, watchHandshakes } from '../tls.js';
import { DatasetHeaderReader, TransferSyntax, toInstanceHeader, unreadable } from './header.js';
import type { InstanceSink } from './instance-record.js';
import { CommandField, decodeRequestCommand, encodeAbortPdu, encodeResponsePdu, forEachPdv, type PdvSink, type RequestCommand } from './dimse-pdata.js';
import type { Spool } from './spool.js';
import type { GuardMetrics } from '../metrics.js';

const { Scp, Implementation, log: dimseLog } = dimse;
const { RejectResult, RejectSource, RejectReason, PresentationContextResult, SopClass, Status } = dimse.constants;

type Association = InstanceType<typeof dimse.association.Association>;

/** Our identity in the Part 10 meta header of every file we write (a UUID-derived UID, PS3.5 B.2). */
export const IMPLEMENTATION_CLASS_UID = '2.25.158065545820595583496560699125202519890';
export const IMPLEMENTATION_VERSION_NAME = 'SECONDREAD_01';

const UNCOMPRESSED = new Set<string>([TransferSyntax.implicitLe, TransferSyntax.explicitLe, TransferSyntax.explicitBe]);
/** Accepted as offered and stored byte-for-byte: we never decode pixel data. */
const ACCEPTED_SYNTAXES = new Set<string>([
  ...UNCOMPRESSED,
  TransferSyntax.deflate,
  '1.2.840.10008.1.2.4.50',
  '1.2.840.10008.1.2.4.51',
  '1.2.840.10008.1.2.4.57',
  '1.2.840.10008.1.2.4.70',
  '1.2.840.10008.1.2.4.80',
  '1.2.840.10008.1.2.4.81',
  '1.2.840.10008.1.2.4.90',
  '1.2.840.10008.1.2.4.91',
  '1.2.840.10008.1.2.5',
]);

/** PS3.7 C.5.8 "Refused: SOP Class not supported". */
const SOP_CLASS_NOT_SUPPORTED = 0x0122;

const STORAGE_PREFIX = '1.2.840.10008.5.1.4.1.1.';
// Storage SOP classes outside the 5.1.4.1.1 arc (PS3.4 B.5).
const OTHER_STORAGE = new Set([
  '1.2.840.10008.5.1.4.34.7',
  '1.2.840.10008.5.1.4.34.10',
  '1.2.840.10008.5.1.4.38.1',
  '1.2.840.10008.5.1.4.39.1',
  '1.2.840.10008.5.1.4.43.1',
  '1.2.840.10008.5.1.4.44.1',
  '1.2.840.10008.5.1.4.45.1',
]);

/**
 * Any storage SOP class, including vendors' private ones (outside the DICOM
 * root): a PACS sends those with a study and refusing them would fail the push.
 * Other standard services (query, MPPS, commitment, print) are not ours.
 */
export function isStorageSopClass(uid: string): boolean {
  if (!/^[0-9.]{1,64}$/.test(uid)) return false;
  if (!uid.startsWith('1.2.840.10008.')) return true;
  return uid.startsWith(STORAGE_PREFIX) || OTHER_STORAGE.has(uid);
}

/** Store as sent: the sender's first acceptable syntax, except that among uncompressed ones explicit VR LE wins. */
export function chooseTransferSyntax(offered: string[]): string | undefined {
  const first = offered.find((ts) => ACCEPTED_SYNTAXES.has(ts));
  if (first && UNCOMPRESSED.has(first) && offered.includes(TransferSyntax.explicitLe)) return TransferSyntax.explicitLe;
  return first;
}

export interface DicomScpOptions {
  config: GatewayConfig['dicom'];
  sink: InstanceSink;
  spool: Spool;
  logger: Logger;
  /** Counts refusals by the resource guards (per-peer connections, association limit, PDU size). */
  guards?: GuardMetrics;
}

/** What the SCP shares with each association. */
interface ScpContext {
  config: GatewayConfig['dicom'];
  sink: InstanceSink;
  spool: Spool;
  logger: Logger;
  /** Associations accepted and not yet closed. */
  active: number;
  draining: boolean;
  guards: GuardMetrics | undefined;
}

/**
 * The C-ECHO / C-STORE SCP. Its own `net` server (dcmjs-dimse's Server binds
 * every interface), one dcmjs-dimse `Scp` per socket.
 */
export class DicomScp {
  private readonly ctx: ScpContext;
  private readonly log: Logger;
  private server: net.Server | undefined;
  /** The DICOM TLS listener (dicom.tls): same association handling, TLS sockets. */
  private tlsServer: tls.Server | undefined;
  private tlsHandshakes: { cutPending(): void } | undefined;
  private readonly connections = new Set<GatewayScp>();
  /** Open connections per remote address. */
  private readonly perPeer = new Map<string, number>();
  private boundPort = 0;
  private boundTlsPort = 0;

  constructor(o: DicomScpOptions) {
    this.log = o.logger.child({ component: 'dicom-scp' });
    this.ctx = { config: o.config, sink: o.sink, spool: o.spool, logger: o.logger, active: 0, draining: false, guards: o.guards };
  }

  /** Associations accepted and not yet closed (for /metrics). */
  get associationCount(): number {
    return this.ctx.active;
  }

  /** Open connections, associated or not (for /metrics). */
  get connectionCount(): number {
    return this.connections.size;
  }

  get port(): number {
    return this.boundPort;
  }

  get tlsPort(): number {
    return this.boundTlsPort;
  }

  async start(): Promise<void> {
    if (this.server || this.tlsServer) return;
    // dcmjs-dimse logs every PDU at TRACE by default, PHI included; our own log lines say what matters.
    dimseLog.setLevel('silent');
    // dcmjs warns on console about every odd element of a damaged dataset; the refusal is logged by us.
    dcmjs.log.setLevel('error');
    // Its validation logger prints one console line per bad VR at error level: a hostile peer could flood stderr.
    dcmjs.log.getLogger('validation.dcmjs').setLevel('silent');
    // The library announces min(peer's limit, this) as our receive limit; raise it to what we configured.
    if (Implementation.getMaxPduLength() < this.ctx.config.maxPduLength) Implementation.setMaxPduLength(this.ctx.config.maxPduLength);
    this.ctx.draining = false;
    if (this.ctx.config.plain !== false) {
      const server = net.createServer({ noDelay: true }, (socket) => this.onConnection(socket));
      this.boundPort = await this.listen(server, this.ctx.config.port);
      this.server = server;
      this.log.info('DICOM SCP listening', { host: this.ctx.config.host, port: this.boundPort, aeTitle: this.ctx.config.aeTitle });
    }
    const t = this.ctx.config.tls;
    if (t) {
      // A peer that connects and never completes the handshake is dropped like an idle association.
      const handshakeTimeout = Math.min(120_000, Math.max(1000, Math.round(this.ctx.config.idleTimeoutSeconds * 1000)));
      const server = tls.createServer({ ...serverTlsOptions(t), noDelay: true, handshakeTimeout }, (socket) => this.onConnection(socket));
      // A failed handshake (no or untrusted client certificate, wrong protocol) never reaches the association layer.
      this.tlsHandshakes = watchHandshakes(server, (err, peer) => this.log.warn('DICOM TLS handshake failed', { peer, error: err.message }));
      try {
        this.boundTlsPort = await this.listen(server, t.port);
      } catch (err) {
        this.server?.close();
        this.server = undefined;
        throw err;
      }
      this.tlsServer = server;
      this.log.info('DICOM TLS SCP listening', {
        host: this.ctx.config.host,
        port: this.boundTlsPort,
        aeTitle: this.ctx.config.aeTitle,
        requireClientCert: t.requireClientCert,
        checkSubjectAe: t.checkSubjectAe,
      });
    }
  }

  private async listen(server: net.Server, port: number): Promise<number> {
    server.on('error', (err) => this.log.error('DICOM listener error', { error: err.message }));
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      server.once('error', onError);
      server.listen({ host: this.ctx.config.host, port }, () => {
        server.off('error', onError);
        resolve();
      });
    });
    const addr = server.address();
    return typeof addr === 'object' && addr ? addr.port : port;
  }

  /**
   * Stops accepting, lets C-STOREs in flight finish and answer (bounded), then
   * closes what is left. An association still open after that is aborted: its
   * unanswered instance was never acknowledged, so the sender retries it.
   */
  async stop(graceMs = 10_000): Promise<void> {
    const servers = [this.server, this.tlsServer].filter((s): s is net.Server => s !== undefined);
    if (servers.length === 0) return;
    this.server = undefined;
    this.tlsServer = undefined;
    this.ctx.draining = true;
    const closed = Promise.all(servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
    const deadline = Date.now() + graceMs;
    for (const c of this.connections) c.drain();
    while (Date.now() < deadline && [...this.connections].some((c) => c.busy)) {
      await new Promise((r) => setTimeout(r, 25));
    }
    for (const c of this.connections) c.destroy();
    this.tlsHandshakes?.cutPending();
    await closed;
    this.log.info('DICOM SCP stopped');
  }

  private onConnection(socket: net.Socket): void {
    try {
      socket.setNoDelay(true);
      // One address may not take every association slot: beyond dicom.maxConnectionsPerPeer its request is
      // answered A-ASSOCIATE-RJ (transient); a flood far beyond it is cut without reading anything.
      const ip = socket.remoteAddress ?? '?';
      const fromPeer = (this.perPeer.get(ip) ?? 0) + 1;
      this.perPeer.set(ip, fromPeer);
      socket.once('close', () => {
        const left = (this.perPeer.get(ip) ?? 1) - 1;
        if (left > 0) this.perPeer.set(ip, left);
        else this.perPeer.delete(ip);
      });
      const limit = this.ctx.config.maxConnectionsPerPeer;
      if (fromPeer > 2 * limit) {
        this.ctx.guards?.rejected('dicom.maxConnectionsPerPeer');
        this.log.warn('connection closed: dicom.maxConnectionsPerPeer far exceeded', { remoteAddress: ip, open: fromPeer, limit });
        socket.destroy();
        return;
      }
      const idleMs = Math.max(1, Math.round(this.ctx.config.idleTimeoutSeconds * 1000));
      const scp = new GatewayScp(socket, { connectTimeout: idleMs, associationTimeout: idleMs, pduTimeout: idleMs }, this.ctx, fromPeer > limit);
      this.connections.add(scp);
      socket.once('close', () => this.connections.delete(scp));
    } catch (err) {
      this.log.error('could not set up a DICOM connection', { error: (err as Error).message });
      socket.destroy();
    }
  }
}

/**
 * One file being received: Part 10 header we wrote, then the dataset bytes as
 * they come off the wire, written synchronously as each PDV arrives (as DCMTK's
 * storescp does). A write into the page cache takes tens of microseconds per
 * PDU, and storescu waits for each response, so every thread-pool round trip
 * (and its wake-up under CPU load) was latency on the critical path. It also
 * bounds memory by construction: nothing is queued, a transfer holds at most
 * the PDU being handled, whatever the instance size. The data is synced once,
 * with the rename into place (Spool.place).
 */
class InstanceFile extends Writable {
  readonly hash: Hash = createHash('sha256');
  readonly header: DatasetHeaderReader;
  size = 0;
  failure: Error | undefined;
  private fd: number | undefined;
  private readonly flushed: Promise<void>;

  constructor(
    readonly tmpPath: string,
    meta: Buffer,
    readonly transferSyntaxUid: string,
    maxHeaderBytes: number,
    /** A descriptor already opened on tmpPath ('wx', empty), taken over by this file. */
    openedFd?: number,
  ) {
    // Never report backpressure: the data phase writes each PDV synchronously as it arrives
    // (GatewayScp.pdv) and ignores write()'s answer. Nothing is queued anyway.
    super({ highWaterMark: Number.MAX_SAFE_INTEGER, decodeStrings: false });
    this.header = new DatasetHeaderReader(transferSyntaxUid, maxHeaderBytes);
    // A disk error must end this transfer, never the process.
    this.on('error', (err) => this.fail(err));
    this.flushed = new Promise<void>((resolve) => {
      this.once('finish', resolve);
      this.once('close', resolve);
    });
    try {
      this.fd = openedFd ?? openSync(tmpPath, 'wx');
    } catch (err) {
      this.fail(err as Error);
      return;
    }
    this.hash.update(meta);
    this.size += meta.length;
    this.writeOut(meta);
  }

  private fail(err: Error): void {
    this.failure ??= err;
  }

  override write(chunk: unknown): boolean {
    const b = chunk as Buffer;
    this.header.push(b);
    if (this.failure || this.destroyed || this.writableEnded) return true;
    this.hash.update(b);
    this.size += b.length;
    this.writeOut(b);
    return true;
  }

  /** Writes all of `b` at the file's current end; a failure ends the transfer (answered 0xA700), not the process. */
  private writeOut(b: Buffer): void {
    const fd = this.fd;
    if (fd === undefined || this.failure) return;
    try {
      let off = 0;
      while (off < b.length) off += writeSync(fd, b, off, b.length - off);
    } catch (err) {
      this.fail(err as Error);
    }
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    // Not reached (write() is overridden); kept so the stream contract holds.
    this.writeOut(chunk);
    cb();
  }

  override _final(cb: (err?: Error | null) => void): void {
    // Every byte is written. The data is synced later, together with the rename into
    // place (Spool.place), before the row commits: one disk flush for both instead of two.
    cb(this.fd === undefined ? this.failure : undefined);
  }

  /** The open descriptor, once every byte is written (after complete()); the sink syncs through it. */
  get descriptor(): number | undefined {
    return this.fd;
  }

  /** Closes the file; after the sink has synced it, or when the transfer is abandoned. */
  closeFile(): void {
    const fd = this.fd;
    this.fd = undefined;
    if (fd !== undefined) {
      try {
        closeSync(fd);
      } catch {
        // already closed
      }
    }
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.closeFile();
    cb(err);
  }

  /** Resolves once every byte is written (not yet synced: see _final), or failed. */
  async complete(): Promise<void> {
    if (!this.writableEnded && !this.destroyed) this.end();
    await this.flushed;
    if (this.failure) throw this.failure;
    if (this.errored) throw this.errored;
  }
}

/** Stand-in for a C-STORE that is refused before its bytes are kept: the bytes are read and dropped. */
class Discard extends Writable {
  constructor(
    readonly reason: GatewayError,
    /** The DIMSE status to answer when it is not the one the error code maps to. */
    readonly status?: number,
  ) {
    super({ highWaterMark: Number.MAX_SAFE_INTEGER });
  }
  override write(): boolean {
    return true;
  }
  override _write(_c: unknown, _e: BufferEncoding, cb: () => void): void {
    cb();
  }
}

/** PS3.10 7.1 file meta information, explicit VR little endian. */
export function buildFileMeta(o: { sopClassUid: string; sopInstanceUid: string; transferSyntaxUid: string; sourceAe: string }): Buffer {
  const el = (element: number, vr: string, value: Buffer): Buffer => {
    const long = vr === 'OB';
    const h = Buffer.alloc(long ? 12 : 8);
    h.writeUInt16LE(0x0002, 0);
    h.writeUInt16LE(element, 2);
    h.write(vr, 4, 'latin1');
    if (long) h.writeUInt32LE(value.length, 8);
    else h.writeUInt16LE(value.length, 6);
    return Buffer.concat([h, value]);
  };
  const ui = (s: string): Buffer => Buffer.from(s.length % 2 ? `${s}\0` : s, 'latin1');
  const text = (s: string): Buffer => Buffer.from(s.length % 2 ? `${s} ` : s, 'latin1');
  const body = Buffer.concat([
    el(0x0001, 'OB', Buffer.from([0x00, 0x01])),
    el(0x0002, 'UI', ui(o.sopClassUid)),
    el(0x0003, 'UI', ui(o.sopInstanceUid)),
    el(0x0010, 'UI', ui(o.transferSyntaxUid)),
    el(0x0012, 'UI', ui(IMPLEMENTATION_CLASS_UID)),
    el(0x0013, 'SH', text(IMPLEMENTATION_VERSION_NAME)),
    ...(o.sourceAe ? [el(0x0016, 'AE', text(o.sourceAe))] : []),
  ]);
  const groupLength = Buffer.alloc(12);
  groupLength.writeUInt16LE(0x0002, 0);
  groupLength.writeUInt16LE(0x0000, 2);
  groupLength.write('UL', 4, 'latin1');
  groupLength.writeUInt16LE(4, 6);
  groupLength.writeUInt32LE(body.length, 8);
  return Buffer.concat([Buffer.alloc(128), Buffer.from('DICM', 'latin1'), groupLength, body]);
}

/**
 * The one override of dcmjs-dimse's receive path (0.3.3). Its PDU accumulator
 * Buffer.concat()s the partial PDU with every socket chunk: a 256 KB PDU read
 * in 64 KB chunks is copied four times (2.5x its size), which was a visible
 * share of CPU and GC per instance and about 130 MB of garbage for a 52 MB
 * instance. Given a chunk that is exactly one PDU, the accumulator takes its
 * no-copy path, so this re-frames the socket's 'data' events before dcmjs-dimse
 * (which listens from its constructor) sees them: a PDU inside one chunk is
 * passed as a view, a PDU spanning chunks is assembled with one copy. Byte
 * order and counts are unchanged; every other event passes through. Like
 * dcmjs-dimse, it trusts the PDU length field (we announce our maximum).
 * `intercept`, when given, sees each whole PDU first and keeps those it
 * returns true for from dcmjs-dimse (the SCP takes P-DATA-TF this way).
 */
export function deliverWholePdus<S extends net.Socket>(
  socket: S,
  intercept?: (pdu: Buffer) => boolean,
  limit?: { maxPduBytes: number; onTooLarge(declaredLength: number): void },
): S {
  const emit = socket.emit as (this: S, event: string | symbol, ...args: unknown[]) => boolean;
  const parts: Buffer[] = [];
  let have = 0;
  let need = -1;
  /** A PDU over the limit was announced: nothing more from this socket is kept. */
  let refused = false;
  const take = (n: number): Buffer => {
    const first = parts[0] as Buffer;
    have -= n;
    if (first.length >= n) {
      if (first.length === n) parts.shift();
      else parts[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    let used = 0;
    while (off < n) {
      const p = parts[used] as Buffer;
      const k = Math.min(p.length, n - off);
      p.copy(out, off, 0, k);
      off += k;
      if (k === p.length) used++;
      else parts[used] = p.subarray(k);
    }
    parts.splice(0, used);
    return out;
  };
  const peekLength = (): number => {
    // PDU header: type (1), reserved (1), length (4, big endian); the 6 bytes may span chunks.
    const first = parts[0] as Buffer;
    const head = first.length >= 6 ? first : Buffer.concat(parts, Math.min(have, 6));
    return 6 + head.readUInt32BE(2);
  };
  socket.emit = function (this: S, event: string | symbol, ...args: unknown[]): boolean {
    if (event !== 'data') return emit.call(this, event, ...args);
    if (refused) return false;
    const chunk = args[0] as Buffer;
    parts.push(chunk);
    have += chunk.length;
    let delivered = false;
    while (have > 0 && !this.destroyed) {
      if (need < 0) {
        if (have < 6) break;
        need = peekLength();
        // The length field is only a claim: a PDU over the limit is refused before its bytes are buffered.
        if (limit && need - 6 > limit.maxPduBytes) {
          refused = true;
          parts.length = 0;
          have = 0;
          limit.onTooLarge(need - 6);
          return delivered;
        }
      }
      if (have < need) break;
      const pdu = take(need);
      need = -1;
      // A PDU the interceptor takes (the SCP's data phase) never reaches dcmjs-dimse.
      if (intercept?.(pdu)) delivered = true;
      else delivered = emit.call(this, 'data', pdu) || delivered;
    }
    return delivered;
  } as S['emit'];
  return socket;
}

interface ScpTimeouts {
  connectTimeout: number;
  associationTimeout: number;
  pduTimeout: number;
}

/** The SCP's data-phase hook per socket: set once the association object exists (after super()). */
const interceptors = new WeakMap<net.Socket, (pdu: Buffer) => boolean>();
/** The SCP's answer to a PDU over dicom.maxPduBytes, per socket (set after super(), like interceptors). */
const oversize = new WeakMap<net.Socket, (declaredLength: number) => void>();

/** An accepted presentation context, as the data phase needs it. */
interface AcceptedContext {
  abstractSyntax: string;
  transferSyntax: string;
}

/** The message being received: its command (once complete) and where its dataset goes. */
interface Incoming {
  contextId: number;
  command: RequestCommand;
  writer: InstanceFile | Discard | undefined;
}

/**
 * One association. dcmjs-dimse negotiates it (A-ASSOCIATE-RQ/AC/RJ), releases,
 * aborts and times it out; the data phase (P-DATA-TF) is ours: PDVs are read
 * straight off the re-framed socket, command sets decoded and responses
 * encoded by hand (dimse-pdata.ts), dataset fragments written to the
 * InstanceFile as they come. Every handler catches: nothing thrown here may
 * reach the socket or the process.
 */
class GatewayScp extends Scp implements PdvSink {
  private readonly ctx: ScpContext;
  private readonly sock: net.Socket;
  private log: Logger;
  private readonly peer: string;
  private readonly openedAt = Date.now();
  private callingAe = '';
  private accepted = false;
  private closed = false;
  /** An A-ABORT is on its way out: nothing more is read from this peer. */
  private aborting = false;
  private readonly contexts = new Map<number, AcceptedContext>();
  /** Command fragments of the message being received, until its last one. */
  private commandParts: Buffer[] = [];
  private incoming: Incoming | undefined;
  /**
   * The next instance's temp file, created off the main thread while the current one
   * streams in: creating a file on ext4 took ~0.5 ms of the event loop per instance.
   */
  private spare: { path: string; fd?: number; failed?: boolean; opened: Promise<void> } | undefined;
  /** Received datasets whose C-STORE is being stored or answered. */
  private inFlight = 0;
  private stats = { stored: 0, duplicates: 0, failed: 0, bytes: 0, echoes: 0 };
  private endReason = 'released';
  /** An A-ASSOCIATE-RQ was seen: a second one is a protocol error (dcmjs-dimse would negotiate it again). */
  private requested = false;
  /** Refused (A-ASSOCIATE-RJ sent): whatever else the peer sends is ignored until the socket closes. */
  private rejected = false;

  constructor(
    socket: net.Socket,
    timeouts: ScpTimeouts,
    ctx: ScpContext,
    /** Opened while its address already had dicom.maxConnectionsPerPeer connections: its request is rejected. */
    private readonly overPeerLimit = false,
  ) {
    super(
      deliverWholePdus(socket, (pdu) => interceptors.get(socket)?.(pdu) ?? false, {
        maxPduBytes: ctx.config.maxPduBytes,
        onTooLarge: (n) => oversize.get(socket)?.(n),
      }),
      timeouts,
    );
    interceptors.set(socket, (pdu) => this.onPdu(pdu));
    oversize.set(socket, (n) => {
      this.ctx.guards?.rejected('dicom.maxPduBytes');
      this.protocolAbort(`PDU of ${n} bytes is over dicom.maxPduBytes (${this.ctx.config.maxPduBytes})`, 6);
    });
    this.ctx = ctx;
    this.sock = socket;
    this.peer = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
    this.log = ctx.logger.child({ component: 'dicom-scp' });
    // dcmjs-dimse starts its association timer only for connections it dialled: an accepted
    // socket is already connected, so set the clock it checks or an idle peer is never dropped.
    const self = this as unknown as { connected: boolean; connectedTime: number };
    self.connected = true;
    self.connectedTime = Date.now();
    this.on('networkError', (err: Error) => {
      if (this.closed) return;
      // dcmjs-dimse reports a PDU it could not read (bad lengths, truncated items) like a socket error:
      // the peer is told with an A-ABORT rather than just cut off.
      if (!/Connection (error|timeout)/.test(err.message)) {
        this.protocolAbort(`unreadable PDU: ${err.message.slice(0, 200)}`, 6);
        return;
      }
      this.endReason = /timeout/i.test(err.message) ? 'idle timeout' : 'network error';
      if (this.endReason === 'idle timeout') this.ctx.guards?.rejected('dicom.idleTimeoutSeconds');
      this.log.debug('association network error', { peer: this.peer, error: err.message });
      this.sock.destroy();
    });
    this.on('close', () => this.onClose());
    socket.on('error', () => {
      // reported through dcmjs-dimse's networkError; this listener only keeps the error from being unhandled
    });
  }

  /** True while a C-STORE is being received or answered. */
  get busy(): boolean {
    return this.inFlight > 0 || this.incoming !== undefined;
  }

  drain(): void {
    if (!this.busy) this.destroy();
  }

  destroy(): void {
    if (!this.closed) {
      if (this.busy) this.endReason = 'shutdown';
      else if (this.endReason === 'released' && this.accepted) this.endReason = 'shutdown';
      this.sock.destroy();
    }
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    interceptors.delete(this.sock);
    // A transfer cut off by the peer or a timeout was never acknowledged: leave nothing half-written.
    this.dropIncoming();
    this.dropSpare();
    this.commandParts = [];
    if (this.accepted) {
      this.ctx.active--;
      this.log.info('association closed', {
        peer: this.peer,
        stored: this.stats.stored,
        duplicates: this.stats.duplicates,
        failed: this.stats.failed,
        echoes: this.stats.echoes,
        megabytes: Number((this.stats.bytes / 1e6).toFixed(1)),
        durationMs: Date.now() - this.openedAt,
        end: this.endReason,
      });
    }
  }

  private dropIncoming(): void {
    const w = this.incoming?.writer;
    this.incoming = undefined;
    if (w instanceof InstanceFile) {
      w.header.dispose();
      w.destroy();
      this.ctx.spool.discard(w.tmpPath);
    }
  }

  /** Every whole PDU passes here first: P-DATA-TF is ours, anything else goes on to dcmjs-dimse. */
  private onPdu(pdu: Buffer): boolean {
    if (this.closed || this.aborting || this.rejected) return true;
    const type = pdu[0]!;
    if (type !== 0x04) return !this.acceptableControlPdu(type);
    // dcmjs-dimse's idle clock counts from the last PDU it saw; it no longer sees these.
    (this as unknown as { lastPduTime: number }).lastPduTime = Date.now();
    if (!this.accepted) {
      this.protocolAbort('P-DATA-TF before an association was accepted');
      return true;
    }
    try {
      forEachPdv(pdu, this);
    } catch (err) {
      this.protocolAbort((err as Error).message);
    }
    return true;
  }

  /**
   * PS3.8 9.3 / state machine: what dcmjs-dimse would mishandle is refused here first. It reads a second
   * A-ASSOCIATE-RQ as a new negotiation (counting the association twice), and answers an unknown PDU
   * type by dropping the connection without a word. False: the PDU was refused (A-ABORT sent).
   */
  private acceptableControlPdu(type: number): boolean {
    if (type < 0x01 || type > 0x07) {
      this.protocolAbort(`unrecognized PDU type 0x${type.toString(16)}`, 1);
      return false;
    }
    // A-ASSOCIATE-AC/RJ and A-RELEASE-RP answer requests we never make as an SCP.
    const unexpected = (type === 0x01 && this.requested) || type === 0x02 || type === 0x03 || type === 0x06 || (type === 0x05 && !this.accepted);
    if (unexpected) {
      this.protocolAbort(`unexpected PDU type 0x${type.toString(16)}`, 2);
      return false;
    }
    if (type === 0x01) this.requested = true;
    return true;
  }

  /** A peer that breaks the protocol gets an A-ABORT (provider; reason per PS3.8 Table 9-26, default invalid PDU parameter value) and the connection ends. */
  private protocolAbort(why: string, reason = 6): void {
    if (this.closed || this.aborting) return;
    this.aborting = true;
    this.log.warn('association aborted: protocol error', { peer: this.peer, reason: why });
    this.endReason = 'protocol error';
    this.dropIncoming();
    this.dropSpare();
    this.commandParts = [];
    this.sock.end(encodeAbortPdu(reason));
    setTimeout(() => this.sock.destroy(), 2000).unref();
  }

  pdv(contextId: number, command: boolean, last: boolean, data: Buffer): void {
    if (this.closed || this.aborting) return;
    if (!this.contexts.has(contextId)) throw new Error(`PDV on presentation context ${contextId}, which was not accepted`);
    if (command) {
      if (this.incoming) throw new Error('command fragment while a dataset was expected');
      // a view into the PDU: copied only when the command spans fragments (never with DCMTK or dcmjs-dimse)
      this.commandParts.push(data);
      if (!last) return;
      const parts = this.commandParts;
      this.commandParts = [];
      this.onCommand(contextId, decodeRequestCommand(parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts)));
      return;
    }
    const inc = this.incoming;
    if (!inc || inc.contextId !== contextId || this.commandParts.length > 0) throw new Error('dataset fragment without its command');
    inc.writer?.write(data);
    if (!last) return;
    this.incoming = undefined;
    this.answerStore(inc);
  }

  private onCommand(contextId: number, command: RequestCommand): void {
    const context = this.contexts.get(contextId) as AcceptedContext;
    if (command.commandField === CommandField.cEchoRq) {
      if (command.hasDataset) throw new Error('C-ECHO-RQ announces a dataset');
      this.stats.echoes++;
      this.respond(contextId, { commandField: CommandField.cEchoRsp, respondedTo: command.messageId, status: Status.Success, affectedSopClassUid: command.affectedSopClassUid });
      return;
    }
    if (command.commandField === CommandField.cStoreRq) {
      if (!command.hasDataset) {
        // nothing to store: refuse it as a dataset that does not match (no bytes follow)
        this.stats.failed++;
        this.respond(contextId, {
          commandField: CommandField.cStoreRsp,
          respondedTo: command.messageId,
          status: 0xc000,
          affectedSopClassUid: command.affectedSopClassUid,
          affectedSopInstanceUid: command.affectedSopInstanceUid,
          errorComment: 'C-STORE without a dataset',
        });
        return;
      }
      // PS3.7 9.1.1 / PS3.8 9.3.5: a DIMSE message travels on a presentation context negotiated for its SOP class.
      // A C-STORE of another class (even on the Verification context) was never negotiated: 0x0122, nothing kept.
      const writer =
        command.affectedSopClassUid !== context.abstractSyntax
          ? new Discard(new GatewayError(ErrorCode.unsupported, 'SOP class differs from the presentation context'), SOP_CLASS_NOT_SUPPORTED)
          : this.openWriter(context, command);
      this.incoming = { contextId, command, writer };
      return;
    }
    if (command.hasDataset) throw new Error(`unsupported command 0x${command.commandField.toString(16)} with a dataset`);
    // Any other request on a context we accepted (Verification or storage): unrecognized operation.
    this.respond(contextId, { commandField: command.commandField | 0x8000, respondedTo: command.messageId, status: 0x0211, affectedSopClassUid: command.affectedSopClassUid });
  }

  private respond(contextId: number, r: Omit<Parameters<typeof encodeResponsePdu>[0], 'contextId'>): void {
    if (this.closed || this.aborting || this.sock.destroyed) return;
    this.sock.write(encodeResponsePdu({ contextId, ...r }));
  }

  private openWriter(context: AcceptedContext, command: RequestCommand): InstanceFile | Discard {
    try {
      if (!this.ctx.spool.hasRoom()) return new Discard(new GatewayError(ErrorCode.outOfResources, 'storage below its free-space watermark'));
      const ts = context.transferSyntax;
      const meta = buildFileMeta({
        sopClassUid: command.affectedSopClassUid,
        sopInstanceUid: command.affectedSopInstanceUid,
        transferSyntaxUid: ts,
        sourceAe: this.callingAe,
      });
      const spare = this.spare;
      let file: InstanceFile;
      if (spare?.fd !== undefined) {
        this.spare = undefined;
        file = new InstanceFile(spare.path, meta, ts, this.ctx.config.maxHeaderBytes, spare.fd);
      } else {
        if (spare?.failed) this.spare = undefined;
        file = new InstanceFile(this.ctx.spool.newTmpPath(), meta, ts, this.ctx.config.maxHeaderBytes);
      }
      this.prepareSpare();
      return file;
    } catch (err) {
      return new Discard(toGatewayError(err));
    }
  }

  /** Starts creating the next temp file on the thread pool (one at a time). */
  private prepareSpare(): void {
    if (this.spare || this.closed || this.aborting) return;
    const path = this.ctx.spool.newTmpPath();
    let done!: () => void;
    const spare: NonNullable<GatewayScp['spare']> = { path, opened: new Promise<void>((r) => (done = r)) };
    this.spare = spare;
    open(path, 'wx', (err, fd) => {
      if (err) spare.failed = true;
      else if (this.spare !== spare) {
        // dropped meanwhile (association ended): never leave it behind
        closeSync(fd);
        this.ctx.spool.discard(path);
      } else spare.fd = fd;
      done();
    });
  }

  /** Closes and removes an unused spare; resolves once nothing of it is left on disk. */
  private dropSpare(): Promise<void> {
    const spare = this.spare;
    this.spare = undefined;
    if (!spare) return Promise.resolve();
    if (spare.fd !== undefined) {
      try {
        closeSync(spare.fd);
      } catch {
        // already closed
      }
      this.ctx.spool.discard(spare.path);
      return Promise.resolve();
    }
    // still being created: its callback sees it dropped, closes and removes it
    return spare.opened;
  }

  private answerStore(inc: Incoming): void {
    this.inFlight++;
    const { command } = inc;
    this.handleStore(command, inc.writer)
      .then(({ status, comment }) => {
        this.respond(inc.contextId, {
          commandField: CommandField.cStoreRsp,
          respondedTo: command.messageId,
          status,
          affectedSopClassUid: command.affectedSopClassUid,
          affectedSopInstanceUid: command.affectedSopInstanceUid,
          ...(comment ? { errorComment: comment.slice(0, 64) } : {}),
        });
      })
      .catch((err: unknown) => this.log.error('C-STORE response failed', { error: (err as Error).message }))
      .finally(() => {
        this.inFlight--;
      });
  }

  override associationRequested(association: Association): void {
    try {
      this.callingAe = association.getCallingAeTitle().trim();
      this.log = this.ctx.logger.child({ component: 'dicom-scp', callingAe: this.callingAe });
      const { config } = this.ctx;
      const called = association.getCalledAeTitle().trim();
      if (called !== config.aeTitle) {
        return this.reject(RejectResult.Permanent, RejectSource.ServiceUser, RejectReason.CalledAeNotRecognized, `called AE "${called}" is not ours`);
      }
      if (config.allowedCallers.length > 0 && !config.allowedCallers.includes(this.callingAe)) {
        return this.reject(RejectResult.Permanent, RejectSource.ServiceUser, RejectReason.CallingAeNotRecognized, 'calling AE not recognized');
      }
      // On the TLS listener the certificate, not just the AE title the peer chose to send, names the caller.
      if (this.sock instanceof tls.TLSSocket && config.tls?.checkSubjectAe) {
        const mismatch = subjectAeMismatch(this.sock, this.callingAe);
        if (mismatch) return this.reject(RejectResult.Permanent, RejectSource.ServiceUser, RejectReason.CallingAeNotRecognized, mismatch);
      }
      if (this.ctx.draining) {
        return this.reject(RejectResult.Transient, RejectSource.ServiceProviderPresentation, RejectReason.TemporaryCongestion, 'shutting down');
      }
      if (this.overPeerLimit) {
        this.ctx.guards?.rejected('dicom.maxConnectionsPerPeer');
        return this.reject(RejectResult.Transient, RejectSource.ServiceProviderPresentation, RejectReason.LocalLimitExceeded, 'too many connections from this address');
      }
      if (this.ctx.active >= config.maxAssociations) {
        this.ctx.guards?.rejected('dicom.maxAssociations');
        return this.reject(RejectResult.Transient, RejectSource.ServiceProviderPresentation, RejectReason.LocalLimitExceeded, 'too many associations');
      }
      let acceptedContexts = 0;
      for (const { context } of association.getPresentationContexts()) {
        const abstract = context.getAbstractSyntaxUid();
        if (abstract !== SopClass.Verification && !isStorageSopClass(abstract)) {
          context.setResult(PresentationContextResult.RejectAbstractSyntaxNotSupported);
          continue;
        }
        const ts = chooseTransferSyntax(context.getTransferSyntaxUids());
        if (!ts) {
          context.setResult(PresentationContextResult.RejectTransferSyntaxesNotSupported);
          continue;
        }
        context.setResult(PresentationContextResult.Accept, ts);
        this.contexts.set(context.getPresentationContextId(), { abstractSyntax: abstract, transferSyntax: ts });
        acceptedContexts++;
      }
      // The limit we announce is what we receive; the library would otherwise announce the peer's own limit.
      association.setMaxPduLength(config.maxPduLength);
      this.accepted = true;
      this.ctx.active++;
      this.sendAssociationAccept();
      if ([...this.contexts.values()].some((c) => c.abstractSyntax !== SopClass.Verification)) this.prepareSpare();
      this.log.debug('association accepted', { peer: this.peer, contexts: acceptedContexts });
    } catch (err) {
      // A request dcmjs-dimse parsed but could not answer (odd items) is the peer's protocol error, not ours to hang on.
      this.protocolAbort(`association request could not be answered: ${(err as Error).message}`, 6);
    }
  }

  private reject(result: number, source: number, reason: number, why: string): void {
    this.rejected = true;
    this.log.warn('association rejected', { peer: this.peer, reason: why });
    this.sendAssociationReject(result, source, reason);
    // The peer should close after A-ASSOCIATE-RJ; do not keep a socket for one that does not.
    this.sock.end();
    setTimeout(() => this.sock.destroy(), 2000).unref();
  }

  override associationReleaseRequested(): void {
    // The unused spare goes first: once the peer has the A-RELEASE-RP no temp file of ours is left.
    void this.dropSpare().then(() => {
      try {
        if (!this.closed) this.sendAssociationReleaseResponse();
      } catch (err) {
        this.log.debug('release response failed', { error: (err as Error).message });
      }
    });
  }

  override abort(): void {
    this.endReason = 'aborted by peer';
    this.sock.destroy();
  }

  private async handleStore(command: RequestCommand, w: InstanceFile | Discard | undefined): Promise<{ status: number; comment?: string }> {
    const sopUid = command.affectedSopInstanceUid;
    const sopClassUid = command.affectedSopClassUid;
    let tmpPath: string | undefined;
    try {
      if (!w) throw new GatewayError(ErrorCode.internal, 'no transfer for this C-STORE');
      if (w instanceof Discard && w.status !== undefined) {
        this.stats.failed++;
        this.log.warn('C-STORE refused', { peer: this.peer, sopUid: hashId(sopUid), status: `0x${w.status.toString(16).padStart(4, '0')}`, reason: w.reason.message });
        return { status: w.status, comment: w.reason.message };
      }
      if (w instanceof Discard) throw w.reason;
      tmpPath = w.tmpPath;
      await w.complete();
      const dict = await w.header.finish(true);
      const header = toInstanceHeader(dict, w.transferSyntaxUid, sopClassUid);
      if (header.sopInstanceUid !== sopUid) {
        throw unreadable(`dataset SOPInstanceUID ${hashId(header.sopInstanceUid)} differs from the command's ${hashId(sopUid)}`);
      }
      if (header.sopClassUid !== sopClassUid) {
        throw new GatewayError(ErrorCode.unsupported, 'dataset SOP class differs from the command');
      }
      const outcome = await this.ctx.sink.storeInstance({
        ...header,
        tmpPath,
        fd: w.descriptor,
        sizeBytes: w.size,
        sha256: w.hash.digest('hex'),
        callingAe: this.callingAe,
      });
      w.closeFile();
      tmpPath = undefined;
      if (outcome === 'duplicate') this.stats.duplicates++;
      else this.stats.stored++;
      this.stats.bytes += w.size;
      return { status: Status.Success };
    } catch (err) {
      if (w instanceof InstanceFile) {
        w.header.dispose();
        w.closeFile();
      }
      if (tmpPath) this.ctx.spool.discard(tmpPath);
      const ge = toGatewayError(err);
      const status = dimseStatusFor(ge);
      this.stats.failed++;
      this.log.warn('C-STORE refused', {
        peer: this.peer,
        sopUid: hashId(sopUid),
        status: `0x${status.toString(16).padStart(4, '0')}`,
        code: ge.code,
        reason: ge.code === 'internal' ? (ge.cause as Error | undefined)?.message ?? ge.message : ge.message,
      });
      return { status, comment: ge.code === 'internal' ? 'internal error' : ge.message };
    }
  }
}
