import net from 'node:net';
import tls from 'node:tls';
import { ErrorCode, GatewayError } from '../errors.js';
import type { Logger } from '../logger.js';
import { Hl7Message, type Segment } from './hl7-message.js';

const VT = 0x0b;
const FS = 0x1c;
const CR = 0x0d;

/**
 * What became of one send. The sender never retries by itself:
 * - `accepted`: AA (or CA, commit accept): done.
 * - `rejected`: AR or CR: the receiver will never take this message; fail the write-back visibly, do not resend.
 * - `retry`: AE/CE from the receiver, no matching ACK within `ackTimeoutMs`, no connection, or the
 *   connection closed before the ACK. Resend later (with backoff) the IDENTICAL text, same MSH-10:
 *   after a timeout or a close the receiver may already have the message, and only an unchanged
 *   MSH-10 lets it recognise the resend as a duplicate.
 */
export type SendOutcome =
  | { kind: 'accepted'; ack: string }
  | { kind: 'rejected'; ack: string; code: 'AR' | 'CR'; text: string }
  | { kind: 'retry'; reason: 'AE' | 'CE' | 'timeout' | 'connect-failed' | 'closed'; text: string };

export interface MllpTarget {
  host: string;
  port: number;
}

/**
 * Opens the socket to the receiver. The default is plain TCP; a TLS setup
 * passes `(t) => tls.connect({ host: t.host, port: t.port, ca, cert, key })`.
 * A `tls.TLSSocket` is taken as ready on `secureConnect`, any other socket on `connect`.
 */
export type MllpConnectFactory = (target: MllpTarget) => net.Socket;

export interface MllpSenderOptions extends MllpTarget {
  /** How long to wait for the ACK whose MSA-2 is the message's MSH-10. */
  ackTimeoutMs: number;
  /** How long to wait for the TCP (and TLS) connection. */
  connectTimeoutMs: number;
  logger: Logger;
  /** Close our side after this long with nothing to send (0: keep the connection open). Default 60 s. */
  idleCloseMs?: number;
  /** Largest ACK frame we buffer before giving up on the connection. Default 1 MiB. */
  maxAckBytes?: number;
  connect?: MllpConnectFactory;
}

interface Pending {
  message: string;
  frame: Buffer;
  controlIdRaw: string;
  controlId: string;
  resolve: (o: SendOutcome) => void;
}

interface InFlight {
  socket: net.Socket;
  pending: Pending;
  finish: (o: SendOutcome) => void;
}

/**
 * MLLP sender on node:net (node-hl7-client's Connection is not used: see
 * LIBRARY-NOTES). One connection, exactly one message in flight on it: further
 * sends wait in a queue, in order. The ACK is the frame whose MSA-2 equals the
 * message's MSH-10; an ACK for another control id is logged and ignored.
 * After an ACK timeout the socket is destroyed (a late ACK on it would be
 * ambiguous) and the next send connects again. Nothing here throws because of
 * the socket: every network failure is a `retry` outcome.
 *
 * The caller owns retrying (a durable queue with backoff) and must resend the
 * identical message text, same MSH-10.
 */
export class MllpSender {
  private readonly log: Logger;
  private readonly queue: Pending[] = [];
  private socket: net.Socket | undefined;
  private current: InFlight | undefined;
  private rx: Buffer[] = [];
  private rxBytes = 0;
  private pumping: Promise<void> | undefined;
  private closed = false;
  private idleTimer: NodeJS.Timeout | undefined;
  private readonly connectFactory: MllpConnectFactory;

  constructor(private readonly o: MllpSenderOptions) {
    this.log = o.logger.child({ component: 'hl7-out', host: o.host, port: o.port });
    this.connectFactory = o.connect ?? ((t) => net.connect({ host: t.host, port: t.port, noDelay: true, keepAlive: true }));
  }

  /** Messages waiting behind the one in flight. */
  get queued(): number {
    return this.queue.length;
  }

  get inFlight(): boolean {
    return this.current !== undefined;
  }

  /**
   * Queues one message (segments ending in CR, no MLLP framing) and resolves
   * with its outcome. Rejects only for a message that cannot be sent at all
   * (no MSH-10, or MLLP framing bytes inside): GatewayError('invalid-input').
   */
  send(message: string): Promise<SendOutcome> {
    let controlIdRaw: string;
    let controlId: string;
    try {
      ({ controlIdRaw, controlId } = readControlId(message));
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.closed) return Promise.resolve({ kind: 'retry', reason: 'closed', text: 'sender closed' });
    const body = Buffer.from(message, 'utf8');
    const frame = Buffer.allocUnsafe(body.length + 3);
    frame[0] = VT;
    body.copy(frame, 1);
    frame[body.length + 1] = FS;
    frame[body.length + 2] = CR;
    return new Promise<SendOutcome>((resolve) => {
      this.queue.push({ message, frame, controlIdRaw, controlId, resolve });
      this.kick();
    });
  }

  /**
   * Stops taking messages: queued ones resolve `retry`/`closed` at once, the
   * one in flight gets its ACK or its timeout, then the connection is closed.
   */
  async close(): Promise<void> {
    this.closed = true;
    for (const p of this.queue.splice(0)) p.resolve({ kind: 'retry', reason: 'closed', text: 'sender closed' });
    await this.pumping;
    this.clearIdle();
    const s = this.socket;
    this.socket = undefined;
    if (s && !s.destroyed) {
      const gone = new Promise<void>((resolve) => s.once('close', () => resolve()));
      s.end();
      const t = setTimeout(() => s.destroy(), 1000);
      await gone;
      clearTimeout(t);
    }
  }

  private kick(): void {
    if (this.pumping) return;
    this.pumping = this.pump().finally(() => {
      this.pumping = undefined;
      // A send that arrived while the loop was finishing.
      if (this.queue.length > 0 && !this.closed) this.kick();
      else this.armIdle();
    });
  }

  private async pump(): Promise<void> {
    while (this.queue.length > 0) {
      const p = this.queue.shift()!;
      let outcome: SendOutcome;
      try {
        outcome = await this.deliver(p);
      } catch (err) {
        // Not expected: deliver handles socket failures itself. Never lose the caller's promise.
        this.log.error('send failed unexpectedly', { controlId: p.controlId, error: (err as Error)?.message });
        this.dropSocket();
        outcome = { kind: 'retry', reason: 'closed', text: `internal error: ${(err as Error)?.message ?? String(err)}` };
      }
      p.resolve(outcome);
    }
  }

  private async deliver(p: Pending): Promise<SendOutcome> {
    this.clearIdle();
    const socket = await this.ensureSocket();
    if (typeof socket === 'string') {
      this.log.warn('no connection to the receiver', { controlId: p.controlId, reason: socket });
      return { kind: 'retry', reason: 'connect-failed', text: socket };
    }
    return new Promise<SendOutcome>((resolve) => {
      let done = false;
      const timer = setTimeout(() => {
        this.log.warn('no ACK in time; dropping the connection', { controlId: p.controlId, ackTimeoutMs: this.o.ackTimeoutMs });
        this.dropSocket(socket);
        finish({ kind: 'retry', reason: 'timeout', text: `no ACK within ${this.o.ackTimeoutMs} ms` });
      }, this.o.ackTimeoutMs);
      const finish = (o: SendOutcome) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (this.current?.pending === p) this.current = undefined;
        resolve(o);
      };
      this.current = { socket, pending: p, finish };
      socket.write(p.frame, (err) => {
        if (err) {
          this.log.warn('write failed', { controlId: p.controlId, error: err.message });
          this.dropSocket(socket);
          finish({ kind: 'retry', reason: 'closed', text: `write failed: ${err.message}` });
        }
      });
    });
  }

  /** The open socket, or a new one; a string says why there is none. */
  private async ensureSocket(): Promise<net.Socket | string> {
    const s = this.socket;
    if (s && !s.destroyed && s.writable && !s.readableEnded) return s;
    this.dropSocket();
    if (this.closed) return 'sender closed';
    let socket: net.Socket;
    try {
      socket = this.connectFactory({ host: this.o.host, port: this.o.port });
    } catch (err) {
      return `connect failed: ${(err as Error)?.message ?? String(err)}`;
    }
    // Attached before anything else: an unhandled 'error' would kill the process.
    socket.on('error', (err: NodeJS.ErrnoException) => this.log.debug('socket error', { error: err.message, code: err.code }));
    const ready = socket instanceof tls.TLSSocket ? 'secureConnect' : 'connect';
    const result = await new Promise<net.Socket | string>((resolve) => {
      const cleanup = () => {
        clearTimeout(timer);
        socket.off(ready, onReady);
        socket.off('error', onError);
        socket.off('close', onClose);
      };
      const onReady = () => {
        cleanup();
        resolve(socket);
      };
      const onError = (err: NodeJS.ErrnoException) => {
        cleanup();
        socket.destroy();
        resolve(`connect failed: ${err.code ?? err.message}`);
      };
      const onClose = () => {
        cleanup();
        resolve('connection closed while connecting');
      };
      const timer = setTimeout(() => {
        cleanup();
        socket.destroy();
        resolve(`no connection within ${this.o.connectTimeoutMs} ms`);
      }, this.o.connectTimeoutMs);
      socket.once(ready, onReady);
      socket.once('error', onError);
      socket.once('close', onClose);
    });
    if (typeof result === 'string') return result;
    if (this.closed) {
      socket.destroy();
      return 'sender closed';
    }
    this.socket = socket;
    this.rx = [];
    this.rxBytes = 0;
    socket.on('data', (chunk: Buffer) => this.onData(socket, chunk));
    // The receiver will send nothing more: the ACK in flight (if any) is not coming.
    socket.on('end', () => this.onGone(socket, 'connection closed by the receiver before the ACK'));
    socket.on('close', () => this.onGone(socket, 'connection lost before the ACK'));
    this.log.info('connected');
    return socket;
  }

  private onGone(socket: net.Socket, why: string): void {
    if (this.socket === socket) {
      this.socket = undefined;
      this.log.info('connection closed', { inFlight: this.current?.socket === socket ? this.current.pending.controlId : undefined });
    }
    socket.destroy();
    if (this.current?.socket === socket) this.current.finish({ kind: 'retry', reason: 'closed', text: why });
  }

  private onData(socket: net.Socket, chunk: Buffer): void {
    if (socket !== this.socket) return;
    this.rx.push(chunk);
    this.rxBytes += chunk.length;
    let buf = this.rx.length === 1 ? this.rx[0]! : Buffer.concat(this.rx, this.rxBytes);
    for (;;) {
      const start = buf.indexOf(VT);
      if (start < 0) {
        buf = Buffer.alloc(0);
        break;
      }
      const end = buf.indexOf(FS, start + 1);
      if (end < 0) {
        buf = buf.subarray(start);
        break;
      }
      const ack = buf.subarray(start + 1, end).toString('utf8');
      buf = buf.subarray(buf[end + 1] === CR ? end + 2 : end + 1);
      this.onAck(ack);
      if (socket !== this.socket) return; // onAck may not drop it today, but never parse into a dropped socket's buffer
    }
    this.rx = buf.length > 0 ? [buf] : [];
    this.rxBytes = buf.length;
    if (this.rxBytes > (this.o.maxAckBytes ?? 1024 * 1024)) {
      this.log.warn('oversized or unframed data from the receiver; dropping the connection', { bytes: this.rxBytes });
      this.dropSocket(socket);
      this.current?.finish({ kind: 'retry', reason: 'closed', text: 'receiver sent an oversized ACK' });
    }
  }

  private onAck(text: string): void {
    const cur = this.current;
    let ack: Hl7Message;
    try {
      ack = Hl7Message.parse(text);
    } catch {
      this.log.warn('unreadable frame from the receiver ignored', { inFlight: cur?.pending.controlId });
      return;
    }
    const msa = ack.segment('MSA');
    const code = msa ? (ack.read(msa, { field: 1 }) ?? '').toUpperCase() : '';
    const acked = msa ? ack.rawField(msa, 2) : '';
    if (!cur) {
      this.log.warn('ACK with nothing in flight ignored', { ackedControlId: acked });
      return;
    }
    const p = cur.pending;
    if (!msa || (acked !== p.controlIdRaw && ack.read(msa, { field: 2 }) !== p.controlId)) {
      this.log.warn('ACK for another message ignored', { controlId: p.controlId, ackedControlId: acked, code });
      return;
    }
    const why = ackText(ack, msa);
    switch (code) {
      case 'AA':
      case 'CA':
        cur.finish({ kind: 'accepted', ack: text });
        return;
      case 'AR':
      case 'CR':
        this.log.warn('message rejected by the receiver', { controlId: p.controlId, code, text: why });
        cur.finish({ kind: 'rejected', ack: text, code, text: why });
        return;
      case 'AE':
      case 'CE':
        this.log.warn('receiver reported an error; the caller will retry', { controlId: p.controlId, code, text: why });
        cur.finish({ kind: 'retry', reason: code, text: why });
        return;
      default:
        // Not a code from table 0008: nothing says the receiver kept it, so ask for a retry.
        this.log.warn('unknown acknowledgment code; treated as AE', { controlId: p.controlId, code });
        cur.finish({ kind: 'retry', reason: 'AE', text: `unknown acknowledgment code '${code}'${why ? `: ${why}` : ''}` });
    }
  }

  private dropSocket(socket: net.Socket | undefined = this.socket): void {
    if (!socket) return;
    if (this.socket === socket) this.socket = undefined;
    socket.destroy();
  }

  private armIdle(): void {
    const ms = this.o.idleCloseMs ?? 60_000;
    if (ms <= 0 || !this.socket || this.closed) return;
    this.clearIdle();
    this.idleTimer = setTimeout(() => {
      this.idleTimer = undefined;
      if (this.current || this.queue.length > 0 || !this.socket) return;
      this.log.debug('closing idle connection');
      const s = this.socket;
      this.socket = undefined;
      s.end();
      s.setTimeout(1000, () => s.destroy());
    }, ms);
    this.idleTimer.unref();
  }

  private clearIdle(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
  }
}

/** MSH-10 as sent (MSA-2 echoes it byte for byte) and unescaped. */
function readControlId(message: string): { controlIdRaw: string; controlId: string } {
  if (typeof message !== 'string' || /[\x0b\x1c]/.test(message)) {
    throw new GatewayError(ErrorCode.invalidInput, 'message contains MLLP framing characters (VT or FS)');
  }
  let m: Hl7Message;
  try {
    m = Hl7Message.parse(message);
  } catch (err) {
    throw new GatewayError(ErrorCode.invalidInput, `not an HL7 message: ${(err as Error).message}`, { cause: err });
  }
  const msh = m.segments[0]!;
  const controlIdRaw = m.rawField(msh, 10);
  const controlId = m.read(msh, { field: 10 });
  if (!controlIdRaw || !controlId) throw new GatewayError(ErrorCode.invalidInput, 'message has no MSH-10 control id');
  return { controlIdRaw, controlId };
}

/** Why the receiver did not accept: ERR-8 user message, else MSA-3, else ERR-3 text, else the code. */
function ackText(ack: Hl7Message, msa: Segment): string {
  const err = ack.segment('ERR');
  const userMessage = err ? ack.read(err, { field: 8 }) : null;
  const errorCode = err ? (ack.read(err, { field: 3, component: 2 }) ?? ack.read(err, { field: 3 })) : null;
  return userMessage ?? ack.read(msa, { field: 3 }) ?? errorCode ?? '';
}
