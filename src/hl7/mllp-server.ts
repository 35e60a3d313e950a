import { once } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';
import type { Logger } from '../logger.js';
import { serverTlsOptions, watchHandshakes, type TlsListenerConfig } from '../tls.js';
import type { GuardMetrics } from '../metrics.js';

const VT = 0x0b;
const FS = 0x1c;
const CR = 0x0d;
/** How much of an oversized frame we keep to read its MSH (for MSA-2) before dropping the rest. */
const HEAD_BYTES = 4096;

export interface MllpMeta {
  remoteAddress: string;
  /**
   * The frame's bytes. `message` is them read as UTF-8 (Latin-1 when not valid UTF-8); a handler that
   * honours MSH-18 decodes these again in the named character set.
   */
  bytes?: Buffer;
}

/**
 * Resolves to the reply (ACK): text is sent as UTF-8, bytes as they are (an ACK in the message's own
 * character set). Anything it throws is turned into a `handler-failed` reply, never into a closed socket.
 */
export type MllpHandler = (message: string, meta: MllpMeta) => Promise<string | Buffer>;

export type MllpFailure = { kind: 'too-large'; head: string; limit: number } | { kind: 'handler-failed'; message: string; error: unknown };

export interface MllpServerOptions {
  host: string;
  port: number;
  maxMessageBytes: number;
  idleTimeoutSeconds: number;
  maxConnections: number;
  /** Open connections from one IP address; one beyond this is closed at once (unlimited when absent). */
  maxConnectionsPerPeer?: number;
  /** Counts connections and frames refused by a limit. */
  guards?: GuardMetrics;
  handler: MllpHandler;
  /** The reply for a frame the handler could not answer (too large, or the handler failed). */
  failureReply: (failure: MllpFailure) => string | Promise<string>;
  logger: Logger;
  /** Frames queued on one connection before we stop reading from it (back-pressure on a sender that does not wait for ACKs). */
  maxQueuedFrames?: number;
  /** How long stop() lets in-flight frames finish before cutting connections. */
  stopGraceMs?: number;
  /** The plain listener on `port` (default true). */
  plain?: boolean;
  /** An MLLP-over-TLS listener on `tls.port` (same host), handled exactly like the plain one. */
  tls?: TlsListenerConfig;
}

type Job = { kind: 'frame'; bytes: Buffer } | { kind: 'failure'; failure: MllpFailure };

/**
 * MLLP (HL7 v2 over TCP, framed VT ... FS CR) listener on node:net.
 * Per connection: one receive buffer, frames taken strictly in order and
 * answered in order, one handler call in flight. A bad frame is answered (or
 * dropped, if it is not a frame at all) and the next one is read normally.
 */
export class MllpServer {
  private server: net.Server | undefined;
  private tlsServer: tls.Server | undefined;
  private tlsHandshakes: { cutPending(): void } | undefined;
  private readonly connections = new Set<MllpConnection>();
  private readonly log: Logger;
  private nextConnectionId = 1;
  /** Open connections per remote address. */
  private readonly perPeer = new Map<string, number>();

  constructor(private readonly o: MllpServerOptions) {
    this.log = o.logger.child({ component: 'hl7-in' });
  }

  async start(): Promise<void> {
    // allowHalfOpen: a peer may send its last frame and FIN at once; it still gets every ACK before we close.
    const socketOptions = { noDelay: true, keepAlive: true, allowHalfOpen: true };
    if (this.o.plain !== false) {
      this.server = await this.listen(
        net.createServer(socketOptions, (socket) => this.accept(socket)),
        this.o.port,
      );
      this.log.info('listening', { host: this.o.host, port: this.port });
    }
    const t = this.o.tls;
    if (t) {
      // Half-open only once the handshake is done: node keeps a half-open socket whose peer hung up
      // mid-handshake open for ever (it never reaches accept(), and stop() would wait for it).
      const handshakeTimeout = Math.min(120_000, Math.max(1000, this.o.idleTimeoutSeconds * 1000));
      const server = tls.createServer({ ...serverTlsOptions(t), ...socketOptions, allowHalfOpen: false, handshakeTimeout }, (socket) => {
        socket.allowHalfOpen = true;
        this.accept(socket);
      });
      this.tlsHandshakes = watchHandshakes(server, (err, remote) => this.log.warn('TLS handshake failed', { remote, error: err.message }));
      try {
        this.tlsServer = await this.listen(server, t.port);
      } catch (err) {
        this.server?.close();
        this.server = undefined;
        throw err;
      }
      this.log.info('listening (TLS)', { host: this.o.host, port: this.tlsPort, requireClientCert: t.requireClientCert });
    }
  }

  /** Each listener has its own hl7.maxConnections. */
  private async listen<S extends net.Server>(server: S, port: number): Promise<S> {
    server.maxConnections = this.o.maxConnections;
    server.on('drop', (d?: { remoteAddress?: string }) => {
      this.o.guards?.rejected('hl7.maxConnections');
      this.log.warn('connection refused: hl7.maxConnections reached', { remoteAddress: d?.remoteAddress, maxConnections: this.o.maxConnections });
    });
    server.on('error', (err) => this.log.error('listener error', { error: err.message }));
    server.listen(port, this.o.host);
    await Promise.race([
      once(server, 'listening'),
      once(server, 'error').then(([err]) => {
        throw err as Error;
      }),
    ]);
    return server;
  }

  get port(): number {
    return (this.server?.address() as net.AddressInfo | null)?.port ?? 0;
  }

  get tlsPort(): number {
    return (this.tlsServer?.address() as net.AddressInfo | null)?.port ?? 0;
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  /** Stops accepting, lets every connection finish (answer) the frames it has, then closes them. */
  async stop(): Promise<void> {
    const servers = [this.server, this.tlsServer].filter((s): s is net.Server => s !== undefined);
    if (servers.length === 0) return;
    this.server = undefined;
    this.tlsServer = undefined;
    const closed = Promise.all(servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
    const grace = this.o.stopGraceMs ?? 5000;
    // Nothing was received on a connection still in its TLS handshake.
    this.tlsHandshakes?.cutPending();
    await Promise.all([...this.connections].map((c) => c.drainAndClose(grace)));
    await closed;
  }

  private accept(socket: net.Socket): void {
    // One sender (or a runaway client) may not take every slot of hl7.maxConnections.
    const ip = socket.remoteAddress ?? 'unknown';
    const fromPeer = (this.perPeer.get(ip) ?? 0) + 1;
    const limit = this.o.maxConnectionsPerPeer;
    if (limit !== undefined && fromPeer > limit) {
      this.o.guards?.rejected('hl7.maxConnectionsPerPeer');
      this.log.warn('connection refused: hl7.maxConnectionsPerPeer reached', { remoteAddress: ip, limit });
      socket.on('error', () => undefined);
      socket.destroy();
      return;
    }
    this.perPeer.set(ip, fromPeer);
    socket.once('close', () => {
      const left = (this.perPeer.get(ip) ?? 1) - 1;
      if (left > 0) this.perPeer.set(ip, left);
      else this.perPeer.delete(ip);
    });
    const id = this.nextConnectionId++;
    const conn = new MllpConnection(socket, id, this.o, this.log);
    this.connections.add(conn);
    socket.once('close', () => this.connections.delete(conn));
  }
}

class MllpConnection {
  private state: 'idle' | 'frame' | 'discard' = 'idle';
  private parts: Buffer[] = [];
  private size = 0;
  /** FS seen; a CR may follow (and belongs to the trailer), or may be missing. */
  private afterFs = false;
  private garbage = 0;
  private readonly queue: Job[] = [];
  private pumping = false;
  private paused = false;
  private closing = false;
  private stopping = false;
  private messages = 0;
  private readonly remoteAddress: string;
  private readonly decoder = new TextDecoder('utf-8', { fatal: true });
  private readonly log: Logger;
  private readonly maxQueued: number;
  private idleSince: number;
  private readonly drained: { promise: Promise<void>; resolve: () => void };

  constructor(
    private readonly socket: net.Socket,
    private readonly id: number,
    private readonly o: MllpServerOptions,
    parentLog: Logger,
  ) {
    this.remoteAddress = socket.remoteAddress ?? 'unknown';
    this.log = parentLog.child({ connection: id });
    this.maxQueued = o.maxQueuedFrames ?? 32;
    this.idleSince = Date.now();
    let resolve!: () => void;
    this.drained = { promise: new Promise<void>((r) => (resolve = r)), resolve };
    this.log.info('connection open', { remoteAddress: this.remoteAddress });

    socket.setTimeout(o.idleTimeoutSeconds * 1000);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('timeout', () => this.onIdle());
    socket.on('end', () => {
      // The peer finished sending; answer what it sent, then close our side.
      this.closing = true;
      this.closeIfDone();
    });
    socket.on('error', (err) => this.log.debug('socket error', { error: err.message }));
    socket.on('close', () => {
      this.drained.resolve();
      this.log.info('connection closed', { remoteAddress: this.remoteAddress, messages: this.messages, pending: this.queue.length });
    });
  }

  private onData(chunk: Buffer): void {
    // Stopping: frames already read are answered, anything after is not taken on.
    if (this.stopping) return;
    let i = 0;
    const n = chunk.length;
    while (i < n) {
      if (this.state === 'idle') {
        if (this.afterFs) {
          this.afterFs = false;
          if (chunk[i] === CR) {
            i++;
            continue;
          }
        }
        const start = chunk.indexOf(VT, i);
        if (start < 0) {
          this.noteGarbage(n - i);
          return;
        }
        this.noteGarbage(start - i);
        this.beginFrame();
        i = start + 1;
      } else if (this.state === 'frame') {
        const end = chunk.indexOf(FS, i);
        const restart = chunk.indexOf(VT, i);
        if (restart >= 0 && (end < 0 || restart < end)) {
          // A start block inside a frame: the sender gave up on the frame it was sending and began again.
          this.log.warn('incomplete frame abandoned by the sender', { bytes: this.size + (restart - i) });
          this.beginFrame();
          i = restart + 1;
          continue;
        }
        const stop = end < 0 ? n : end;
        if (this.size + (stop - i) > this.o.maxMessageBytes) {
          this.tooLarge(chunk.subarray(i, stop));
          if (end >= 0) {
            this.state = 'idle';
            this.afterFs = true;
            i = end + 1;
          } else {
            this.state = 'discard';
            i = n;
          }
          continue;
        }
        if (stop > i) this.parts.push(chunk.subarray(i, stop));
        this.size += stop - i;
        if (end < 0) return;
        const bytes = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.size);
        this.parts = [];
        this.size = 0;
        this.state = 'idle';
        this.afterFs = true;
        this.enqueue({ kind: 'frame', bytes });
        i = end + 1;
      } else {
        // Resynchronise on the next start block; the oversized frame's remainder is dropped unread.
        const start = chunk.indexOf(VT, i);
        if (start < 0) return;
        this.beginFrame();
        i = start + 1;
      }
    }
  }

  private beginFrame(): void {
    this.state = 'frame';
    this.parts = [];
    this.size = 0;
  }

  private tooLarge(tail: Buffer): void {
    const head = Buffer.concat([...this.parts, tail.subarray(0, HEAD_BYTES)])
      .subarray(0, HEAD_BYTES)
      .toString('latin1');
    this.log.warn('frame over hl7.maxMessageBytes rejected', { limit: this.o.maxMessageBytes });
    this.o.guards?.rejected('hl7.maxMessageBytes');
    this.parts = [];
    this.size = 0;
    this.enqueue({ kind: 'failure', failure: { kind: 'too-large', head, limit: this.o.maxMessageBytes } });
  }

  private noteGarbage(bytes: number): void {
    if (bytes <= 0) return;
    this.garbage += bytes;
    // A peer that is not speaking MLLP at all would otherwise hold the connection forever.
    if (this.garbage > this.o.maxMessageBytes) {
      this.log.warn('closing: too many bytes outside MLLP frames', { bytes: this.garbage });
      this.o.guards?.rejected('hl7.maxMessageBytes');
      this.socket.destroy();
    }
  }

  private enqueue(job: Job): void {
    this.queue.push(job);
    if (!this.paused && this.queue.length >= this.maxQueued) {
      this.paused = true;
      this.socket.pause();
    }
    if (!this.pumping) void this.pump();
  }

  private async pump(): Promise<void> {
    this.pumping = true;
    try {
      while (this.queue.length > 0) {
        const job = this.queue.shift()!;
        const reply = await this.answer(job);
        this.messages++;
        if (reply !== undefined && !this.socket.destroyed && this.socket.writable) {
          const length = typeof reply === 'string' ? Buffer.byteLength(reply, 'utf8') : reply.length;
          const out = Buffer.allocUnsafe(length + 3);
          out[0] = VT;
          if (typeof reply === 'string') out.write(reply, 1, 'utf8');
          else reply.copy(out, 1);
          out[length + 1] = FS;
          out[length + 2] = CR;
          this.socket.write(out);
        }
        if (this.paused && this.queue.length < this.maxQueued / 2) {
          this.paused = false;
          this.socket.resume();
        }
      }
    } finally {
      this.pumping = false;
      this.idleSince = Date.now();
    }
    this.closeIfDone();
  }

  private async answer(job: Job): Promise<string | Buffer | undefined> {
    if (job.kind === 'failure') return this.failureReply(job.failure);
    const text = this.decode(job.bytes);
    try {
      return await this.o.handler(text, { remoteAddress: this.remoteAddress, bytes: job.bytes });
    } catch (error) {
      this.log.error('handler failed', { error: (error as Error)?.message });
      return this.failureReply({ kind: 'handler-failed', message: text, error });
    }
  }

  private async failureReply(f: MllpFailure): Promise<string | undefined> {
    try {
      return await this.o.failureReply(f);
    } catch (err) {
      // Without a reply the sender would wait for an ACK that never comes: close so it reconnects and resends.
      this.log.error('could not build a reply; closing the connection', { error: (err as Error).message });
      this.socket.destroy();
      return undefined;
    }
  }

  /** UTF-8 when it is valid UTF-8, otherwise Latin-1 (what most 8-bit HL7 senders mean); never a decoding exception. */
  private decode(bytes: Buffer): string {
    try {
      return this.decoder.decode(bytes);
    } catch {
      return bytes.toString('latin1');
    }
  }

  private onIdle(): void {
    if (this.pumping || this.queue.length > 0) return;
    this.o.guards?.rejected('hl7.idleTimeoutSeconds');
    this.log.info('closing idle connection', { idleSeconds: Math.round((Date.now() - this.idleSince) / 1000) });
    this.socket.end();
    this.socket.destroySoon();
  }

  private closeIfDone(): void {
    if (this.closing && !this.pumping && this.queue.length === 0) {
      this.socket.end();
    }
  }

  async drainAndClose(graceMs: number): Promise<void> {
    this.closing = true;
    this.stopping = true;
    this.closeIfDone();
    const timer = setTimeout(() => this.socket.destroy(), graceMs);
    timer.unref();
    await this.drained.promise;
    clearTimeout(timer);
  }
}
