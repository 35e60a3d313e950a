import { createHash, type Hash } from 'node:crypto';
import { closeSync, open, openSync, writeSync } from 'node:fs';
import net from 'node:net';
import { Writable } from 'node:stream';
import tls from 'node:tls';
import dcmjs from 'dcmjs';
import type { GatewayConfig } from '../config/schema.js';
import { ErrorCode, GatewayError, dimseStatusFor, toGatewayError } from '../errors.js';
import { hashId, type Logger } from '../logger.js';
import { serverTlsOptions, subjectAeMismatch, watchHandshakes } from '../tls.js';
import { DatasetHeaderReader, toInstanceHeader, unreadable } from './header.js';
import { tallyInstance, type InstanceSink } from './instance-record.js';
import { MPPS_SOP_CLASS_UID, type MppsPort } from './mpps.port.js';
import { writeFileMeta } from './part10.js';
import { Association } from './ul/association.js';
import { CommandField, Status, decodeCommand, decodeDataset, encodeCommand, encodeDataset, type Command } from './ul/dimse.js';
import { AbortReason, AbortSource, ContextResult, RejectReason, RejectResult, RejectSource, type AcceptedContextItem, type AssociateRq } from './ul/pdu.js';
import {
  APPLICATION_CONTEXT,
  IMPLEMENTATION_CLASS_UID,
  IMPLEMENTATION_VERSION_NAME,
  STORABLE_SYNTAXES,
  SopClass,
  TransferSyntax,
  isStorageSopClass,
  isUncompressed,
} from './uids.js';
import type { Spool } from './spool.js';
import type { GuardMetrics } from '../metrics.js';

export { isStorageSopClass };

/** PS3.7 C.5.8 "Refused: SOP Class not supported". */
const SOP_CLASS_NOT_SUPPORTED = 0x0122;

/** Store as sent: the sender's first acceptable syntax, except that among uncompressed ones explicit VR LE wins. */
export function chooseTransferSyntax(offered: string[]): string | undefined {
  const first = offered.find((ts) => STORABLE_SYNTAXES.has(ts));
  if (first && isUncompressed(first) && offered.includes(TransferSyntax.explicitLe)) return TransferSyntax.explicitLe;
  return first;
}

/** For services whose data sets we decode (MPPS): explicit VR LE when offered, else implicit. */
function chooseNativeSyntax(offered: string[]): string | undefined {
  if (offered.includes(TransferSyntax.explicitLe)) return TransferSyntax.explicitLe;
  if (offered.includes(TransferSyntax.implicitLe)) return TransferSyntax.implicitLe;
  return undefined;
}

export interface DicomScpOptions {
  config: GatewayConfig['dicom'];
  sink: InstanceSink;
  spool: Spool;
  logger: Logger;
  /** Counts refusals by the resource guards (per-peer connections, association limit, PDU size). */
  guards?: GuardMetrics;
  /** With it, the Modality Performed Procedure Step SOP class is accepted and its N-CREATE / N-SET handed here. */
  mpps?: MppsPort;
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
  mpps: MppsPort | undefined;
}

/**
 * The C-ECHO / C-STORE (and, given an MppsPort, MPPS N-CREATE / N-SET) SCP:
 * its own `net` / `tls` servers, one upper layer Association (ul/) per socket.
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
    this.ctx = { config: o.config, sink: o.sink, spool: o.spool, logger: o.logger, active: 0, draining: false, guards: o.guards, mpps: o.mpps };
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
    // dcmjs warns on console about every odd element of a damaged dataset; the refusal is logged by us.
    dcmjs.log.setLevel('error');
    // Its validation logger prints one console line per bad VR at error level: a hostile peer could flood stderr.
    dcmjs.log.getLogger('validation.dcmjs').setLevel('silent');
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
      const scp = new GatewayScp(socket, this.ctx, fromPeer > limit);
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

/** The Part 10 meta header of a file we receive (PS3.10 7.1): our implementation identity and the sender's AE. */
export function buildFileMeta(o: { sopClassUid: string; sopInstanceUid: string; transferSyntaxUid: string; sourceAe: string }): Buffer {
  return writeFileMeta({ ...o, implementationClassUid: IMPLEMENTATION_CLASS_UID, implementationVersionName: IMPLEMENTATION_VERSION_NAME });
}

/** An accepted presentation context, as the data phase needs it. */
interface AcceptedContext {
  abstractSyntax: string;
  transferSyntax: string;
}

/** The message being received: its command (once complete) and where its data set goes. */
interface Incoming {
  contextId: number;
  command: Command;
  /** C-STORE: the file its bytes stream into. */
  writer: InstanceFile | Discard | undefined;
  /** N-CREATE / N-SET: the (small) data set, collected. */
  collected?: { parts: Buffer[]; length: number };
}

/**
 * One association on one accepted connection. The upper layer state machine
 * (ul/association.ts) negotiates, releases, aborts and times out; this class
 * decides what to accept and runs the data phase: PDVs arrive as views into
 * the received PDU, command sets are decoded (ul/dimse.ts), C-STORE data set
 * fragments are written to the InstanceFile as they come. Every handler
 * catches: nothing thrown here may reach the socket or the process.
 */
class GatewayScp {
  private readonly sock: net.Socket;
  private readonly assoc: Association;
  private log: Logger;
  private readonly peer: string;
  private readonly remoteAddress: string;
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
  /** Received messages being stored or answered. */
  private inFlight = 0;
  private stats = { stored: 0, duplicates: 0, failed: 0, bytes: 0, echoes: 0, mpps: 0 };
  private endReason = 'released';
  /** Instances stored per study on this association: one audit event each when it ends. */
  private readonly received = new Map<string, { stored: number; duplicates: number }>();

  constructor(
    socket: net.Socket,
    private readonly ctx: ScpContext,
    /** Opened while its address already had dicom.maxConnectionsPerPeer connections: its request is rejected. */
    private readonly overPeerLimit = false,
  ) {
    this.sock = socket;
    this.peer = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
    this.remoteAddress = (socket.remoteAddress ?? '?').replace(/^::ffff:/, '');
    this.log = ctx.logger.child({ component: 'dicom-scp' });
    const idleMs = Math.max(1, Math.round(ctx.config.idleTimeoutSeconds * 1000));
    this.assoc = new Association(socket, {
      role: 'acceptor',
      maxPduBytes: ctx.config.maxPduBytes,
      artimMs: idleMs,
      // a peer that does not close after our A-ASSOCIATE-RJ / A-ABORT / A-RELEASE-RP does not keep its slot
      closeMs: Math.min(idleMs, 2000),
      idleMs,
      busy: () => this.inFlight > 0,
    });
    this.assoc.on('associate-rq', (rq) => this.associationRequested(rq));
    this.assoc.on('pdv', (contextId, command, last, data) => {
      try {
        this.pdv(contextId, command, last, data);
      } catch (err) {
        this.protocolAbort((err as Error).message);
      }
    });
    this.assoc.on('release-rq', () => this.releaseRequested());
    this.assoc.on('aborted', () => {
      this.endReason = 'aborted by peer';
    });
    this.assoc.on('pdu-too-large', () => this.ctx.guards?.rejected('dicom.maxPduBytes'));
    this.assoc.on('protocol-error', (why) => {
      this.aborting = true;
      this.endReason = 'protocol error';
      this.log.warn('association aborted: protocol error', { peer: this.peer, reason: why });
      this.dropIncoming();
      void this.dropSpare();
      this.commandParts = [];
    });
    this.assoc.on('timeout', () => {
      this.endReason = 'idle timeout';
      this.ctx.guards?.rejected('dicom.idleTimeoutSeconds');
      this.log.debug('association timed out', { peer: this.peer });
    });
    this.assoc.on('network-error', (err) => {
      if (this.endReason === 'released') this.endReason = 'network error';
      this.log.debug('association network error', { peer: this.peer, error: err.message });
    });
    this.assoc.on('close', () => this.onClose());
  }

  /** True while a message is being received, stored or answered. */
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
      this.assoc.destroy();
    }
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    // A transfer cut off by the peer or a timeout was never acknowledged: leave nothing half-written.
    this.dropIncoming();
    void this.dropSpare();
    this.commandParts = [];
    if (this.accepted) {
      this.ctx.active--;
      this.log.info('association closed', {
        peer: this.peer,
        stored: this.stats.stored,
        duplicates: this.stats.duplicates,
        failed: this.stats.failed,
        echoes: this.stats.echoes,
        mpps: this.stats.mpps,
        megabytes: Number((this.stats.bytes / 1e6).toFixed(1)),
        durationMs: Date.now() - this.openedAt,
        end: this.endReason,
      });
    }
    if (this.inFlight === 0) this.reportTransfer();
  }

  /** Hands what this association stored to the sink (the audit trail), once. */
  private reportTransfer(): void {
    if (this.received.size === 0 || !this.ctx.sink.transferEnded) return;
    const studies = new Map(this.received);
    this.received.clear();
    this.ctx.sink
      .transferEnded({ protocol: 'dimse', sender: this.callingAe, remoteAddress: this.remoteAddress, studies })
      .catch((err: unknown) => this.log.error('could not audit the instances received', { peer: this.peer, error: (err as Error).message }));
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

  /** A peer that breaks the DIMSE protocol gets an A-ABORT (provider, invalid PDU parameter value by default) and the connection ends. */
  private protocolAbort(why: string, reason: number = AbortReason.invalidPduParameterValue): void {
    if (this.closed || this.aborting) return;
    this.aborting = true;
    this.log.warn('association aborted: protocol error', { peer: this.peer, reason: why });
    this.endReason = 'protocol error';
    this.dropIncoming();
    void this.dropSpare();
    this.commandParts = [];
    this.assoc.abort(AbortSource.serviceProvider, reason);
  }

  private pdv(contextId: number, command: boolean, last: boolean, data: Buffer): void {
    if (this.closed || this.aborting) return;
    if (!this.contexts.has(contextId)) throw new Error(`PDV on presentation context ${contextId}, which was not accepted`);
    if (command) {
      if (this.incoming) throw new Error('command fragment while a data set was expected');
      // a view into the PDU: copied only when the command spans fragments (never with DCMTK)
      this.commandParts.push(last && this.commandParts.length === 0 ? data : Buffer.from(data));
      if (!last) return;
      const parts = this.commandParts;
      this.commandParts = [];
      this.onCommand(contextId, decodeCommand(parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts)));
      return;
    }
    const inc = this.incoming;
    if (!inc || inc.contextId !== contextId || this.commandParts.length > 0) throw new Error('data set fragment without its command');
    if (inc.collected) {
      inc.collected.length += data.length;
      if (inc.collected.length > this.ctx.config.maxHeaderBytes) throw new Error('N-CREATE / N-SET data set over dicom.maxHeaderBytes');
      inc.collected.parts.push(Buffer.from(data));
    } else inc.writer?.write(data);
    if (!last) return;
    this.incoming = undefined;
    if (inc.collected) this.answerMpps(inc, Buffer.concat(inc.collected.parts));
    else this.answerStore(inc);
  }

  private onCommand(contextId: number, command: Command): void {
    const context = this.contexts.get(contextId) as AcceptedContext;
    const sopClass = command.affectedSopClassUid ?? '';
    if (command.commandField === CommandField.cEchoRq) {
      if (command.hasDataset) throw new Error('C-ECHO-RQ announces a data set');
      this.stats.echoes++;
      this.respond(contextId, {
        commandField: CommandField.cEchoRsp,
        messageIdBeingRespondedTo: command.messageId ?? 0,
        status: Status.success,
        affectedSopClassUid: sopClass,
        hasDataset: false,
      });
      return;
    }
    if (command.commandField === CommandField.cStoreRq) {
      if (!command.hasDataset) {
        // nothing to store: refuse it as a data set that does not match (no bytes follow)
        this.stats.failed++;
        this.respond(contextId, {
          commandField: CommandField.cStoreRsp,
          messageIdBeingRespondedTo: command.messageId ?? 0,
          status: 0xc000,
          affectedSopClassUid: sopClass,
          affectedSopInstanceUid: command.affectedSopInstanceUid ?? '',
          errorComment: 'C-STORE without a dataset',
          hasDataset: false,
        });
        return;
      }
      // PS3.7 9.1.1 / PS3.8 9.3.5: a DIMSE message travels on a presentation context negotiated for its SOP class.
      // A C-STORE of another class (even on the Verification context) was never negotiated: 0x0122, nothing kept.
      const writer =
        sopClass !== context.abstractSyntax || context.abstractSyntax === MPPS_SOP_CLASS_UID
          ? new Discard(new GatewayError(ErrorCode.unsupported, 'SOP class differs from the presentation context'), SOP_CLASS_NOT_SUPPORTED)
          : this.openWriter(context, command);
      this.incoming = { contextId, command, writer };
      return;
    }
    if ((command.commandField === CommandField.nCreateRq || command.commandField === CommandField.nSetRq) && context.abstractSyntax === MPPS_SOP_CLASS_UID) {
      const incoming: Incoming = { contextId, command, writer: undefined, collected: { parts: [], length: 0 } };
      if (command.hasDataset) this.incoming = incoming;
      else this.answerMpps(incoming, undefined);
      return;
    }
    if (command.hasDataset) throw new Error(`unsupported command 0x${command.commandField.toString(16)} with a data set`);
    // Any other request on a context we accepted: unrecognized operation.
    this.respond(contextId, {
      commandField: command.commandField | 0x8000,
      messageIdBeingRespondedTo: command.messageId ?? 0,
      status: Status.unrecognizedOperation,
      affectedSopClassUid: sopClass,
      hasDataset: false,
    });
  }

  private respond(contextId: number, r: Command, dataset?: Buffer): void {
    if (this.closed || this.aborting || this.sock.destroyed || !this.assoc.established) return;
    this.assoc.send(contextId, true, encodeCommand({ ...r, hasDataset: dataset !== undefined }));
    if (dataset) this.assoc.send(contextId, false, dataset);
  }

  /** N-CREATE / N-SET of an MPPS instance: handed to the port, answered with its status (0x0110 when it throws). */
  private answerMpps(inc: Incoming, bytes: Buffer | undefined): void {
    const { command, contextId } = inc;
    const isCreate = command.commandField === CommandField.nCreateRq;
    const sopInstanceUid = (isCreate ? command.affectedSopInstanceUid : command.requestedSopInstanceUid) ?? '';
    const transferSyntax = (this.contexts.get(contextId) as AcceptedContext).transferSyntax;
    const port = this.ctx.mpps;
    this.inFlight++;
    const run = async (): Promise<{ status: number; dataset?: Buffer }> => {
      if (!port) return { status: Status.noSuchSopClass };
      if (isCreate ? false : !sopInstanceUid) return { status: 0x0112 };
      let dataset: Record<string, unknown>;
      try {
        dataset = bytes && bytes.length > 0 ? decodeDataset(bytes, transferSyntax) : {};
      } catch (err) {
        this.log.warn('MPPS data set unreadable', { peer: this.peer, sopUid: hashId(sopInstanceUid), error: (err as Error).message });
        return { status: 0x0110 };
      }
      const request = { sopInstanceUid, dataset, callingAeTitle: this.callingAe };
      const result = isCreate ? await port.nCreate(request) : await port.nSet(request);
      this.stats.mpps++;
      return { status: result.status, ...(result.dataset ? { dataset: encodeDataset(result.dataset, transferSyntax) } : {}) };
    };
    run()
      .catch((err: unknown) => {
        this.log.warn('MPPS request failed', { peer: this.peer, sopUid: hashId(sopInstanceUid), error: (err as Error).message });
        return { status: Status.processingFailure } as { status: number; dataset?: Buffer };
      })
      .then((r) => {
        this.respond(
          contextId,
          {
            commandField: command.commandField | 0x8000,
            messageIdBeingRespondedTo: command.messageId ?? 0,
            status: r.status,
            affectedSopClassUid: MPPS_SOP_CLASS_UID,
            affectedSopInstanceUid: sopInstanceUid,
            hasDataset: false,
          },
          r.dataset,
        );
      })
      .catch((err: unknown) => this.log.error('MPPS response failed', { error: (err as Error).message }))
      .finally(() => {
        this.inFlight--;
      });
  }

  private openWriter(context: AcceptedContext, command: Command): InstanceFile | Discard {
    try {
      if (!this.ctx.spool.hasRoom()) return new Discard(new GatewayError(ErrorCode.outOfResources, 'storage below its free-space watermark'));
      const ts = context.transferSyntax;
      const meta = buildFileMeta({
        sopClassUid: command.affectedSopClassUid ?? '',
        sopInstanceUid: command.affectedSopInstanceUid ?? '',
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
          messageIdBeingRespondedTo: command.messageId ?? 0,
          status,
          affectedSopClassUid: command.affectedSopClassUid ?? '',
          affectedSopInstanceUid: command.affectedSopInstanceUid ?? '',
          ...(comment ? { errorComment: comment.slice(0, 64) } : {}),
          hasDataset: false,
        });
      })
      .catch((err: unknown) => this.log.error('C-STORE response failed', { error: (err as Error).message }))
      .finally(() => {
        this.inFlight--;
        // A store still running when the peer went away is counted once it settles.
        if (this.closed && this.inFlight === 0) this.reportTransfer();
      });
  }

  private associationRequested(rq: AssociateRq): void {
    try {
      this.callingAe = rq.callingAe.trim();
      this.log = this.ctx.logger.child({ component: 'dicom-scp', callingAe: this.callingAe });
      const { config } = this.ctx;
      const called = rq.calledAe.trim();
      if ((rq.protocolVersion & 1) === 0) {
        return this.reject(
          RejectResult.permanent,
          RejectSource.serviceProviderAcse,
          RejectReason.protocolVersionNotSupported,
          'protocol version not supported',
        );
      }
      if (rq.applicationContext !== APPLICATION_CONTEXT) {
        return this.reject(RejectResult.permanent, RejectSource.serviceUser, RejectReason.applicationContextNotSupported, 'application context not supported');
      }
      if (called !== config.aeTitle) {
        return this.reject(RejectResult.permanent, RejectSource.serviceUser, RejectReason.calledAeNotRecognized, `called AE "${called}" is not ours`);
      }
      if (config.allowedCallers.length > 0 && !config.allowedCallers.includes(this.callingAe)) {
        return this.reject(RejectResult.permanent, RejectSource.serviceUser, RejectReason.callingAeNotRecognized, 'calling AE not recognized');
      }
      // On the TLS listener the certificate, not just the AE title the peer chose to send, names the caller.
      if (this.sock instanceof tls.TLSSocket && config.tls?.checkSubjectAe) {
        const mismatch = subjectAeMismatch(this.sock, this.callingAe);
        if (mismatch) return this.reject(RejectResult.permanent, RejectSource.serviceUser, RejectReason.callingAeNotRecognized, mismatch);
      }
      if (this.ctx.draining) {
        return this.reject(RejectResult.transient, RejectSource.serviceProviderPresentation, RejectReason.temporaryCongestion, 'shutting down');
      }
      if (this.overPeerLimit) {
        this.ctx.guards?.rejected('dicom.maxConnectionsPerPeer');
        return this.reject(
          RejectResult.transient,
          RejectSource.serviceProviderPresentation,
          RejectReason.localLimitExceeded,
          'too many connections from this address',
        );
      }
      if (this.ctx.active >= config.maxAssociations) {
        this.ctx.guards?.rejected('dicom.maxAssociations');
        return this.reject(RejectResult.transient, RejectSource.serviceProviderPresentation, RejectReason.localLimitExceeded, 'too many associations');
      }
      const results: AcceptedContextItem[] = [];
      for (const pc of rq.contexts) {
        const abstract = pc.abstractSyntax;
        const mpps = abstract === MPPS_SOP_CLASS_UID && this.ctx.mpps !== undefined;
        if (abstract !== SopClass.verification && !mpps && !isStorageSopClass(abstract)) {
          results.push({ id: pc.id, result: ContextResult.abstractSyntaxNotSupported, transferSyntax: '' });
          continue;
        }
        const ts = mpps ? chooseNativeSyntax(pc.transferSyntaxes) : chooseTransferSyntax(pc.transferSyntaxes);
        if (!ts || this.contexts.has(pc.id) || pc.id % 2 === 0) {
          results.push({ id: pc.id, result: ContextResult.transferSyntaxesNotSupported, transferSyntax: '' });
          continue;
        }
        results.push({ id: pc.id, result: ContextResult.acceptance, transferSyntax: ts });
        this.contexts.set(pc.id, { abstractSyntax: abstract, transferSyntax: ts });
      }
      this.accepted = true;
      this.ctx.active++;
      // The limit we announce is what we receive.
      this.assoc.accept(results, {
        maxPduLength: config.maxPduLength,
        implementationClassUid: IMPLEMENTATION_CLASS_UID,
        implementationVersionName: IMPLEMENTATION_VERSION_NAME,
      });
      if ([...this.contexts.values()].some((c) => isStorageSopClass(c.abstractSyntax))) this.prepareSpare();
      this.log.debug('association accepted', { peer: this.peer, contexts: this.contexts.size });
    } catch (err) {
      this.protocolAbort(`association request could not be answered: ${(err as Error).message}`, AbortReason.invalidPduParameterValue);
    }
  }

  private reject(result: number, source: number, reason: number, why: string): void {
    this.log.warn('association rejected', { peer: this.peer, reason: why });
    this.assoc.reject({ result, source, reason });
  }

  private releaseRequested(): void {
    // The unused spare goes first: once the peer has the A-RELEASE-RP no temp file of ours is left.
    void this.dropSpare().then(() => {
      if (!this.closed) this.assoc.releaseResponse();
    });
  }

  private async handleStore(command: Command, w: InstanceFile | Discard | undefined): Promise<{ status: number; comment?: string }> {
    const sopUid = command.affectedSopInstanceUid ?? '';
    const sopClassUid = command.affectedSopClassUid ?? '';
    let tmpPath: string | undefined;
    try {
      if (!w) throw new GatewayError(ErrorCode.internal, 'no transfer for this C-STORE');
      if (w instanceof Discard && w.status !== undefined) {
        this.stats.failed++;
        this.log.warn('C-STORE refused', {
          peer: this.peer,
          sopUid: hashId(sopUid),
          status: `0x${w.status.toString(16).padStart(4, '0')}`,
          reason: w.reason.message,
        });
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
      tallyInstance(this.received, header.studyInstanceUid, outcome);
      this.stats.bytes += w.size;
      return { status: Status.success };
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
        reason: ge.code === 'internal' ? ((ge.cause as Error | undefined)?.message ?? ge.message) : ge.message,
      });
      return { status, comment: ge.code === 'internal' ? 'internal error' : ge.message };
    }
  }
}
