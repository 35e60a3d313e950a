/**
 * One association over one connection (PS3.8 9.2): the upper layer state
 * machine shared by our SCP (acceptor) and our SCU (requestor). It frames
 * PDUs, decodes them in the state that expects them and answers any other
 * with A-ABORT, runs the ARTIM timer (waiting for the A-ASSOCIATE-RQ, and for
 * the close after a reject, release or abort) and an idle timer over the
 * association, and carries P-DATA both ways without copying dataset bytes:
 * PDVs arrive as views into the received PDU, and go out as a 12-byte header
 * plus a view of the caller's bytes, waiting for the socket's 'drain' when a
 * stream is sent (back-pressure).
 */
import { EventEmitter } from 'node:events';
import type net from 'node:net';
import {
  AbortReason,
  AbortSource,
  PduError,
  PduFramer,
  PduType,
  decodePduBody,
  encodePdu,
  forEachPdv,
  pDataHeader,
  type AcceptedContextItem,
  type AssociateAc,
  type AssociateRj,
  type AssociateRq,
  type UserInformation,
} from './pdu.js';

/**
 * PS3.8 Table 9-10 states this implementation passes through. Sta4 (awaiting
 * transport connection) is the dialling before an Association exists.
 */
export type State =
  | 'Sta1' // idle: connection closed
  | 'Sta2' // transport open, awaiting A-ASSOCIATE-RQ (ARTIM running)
  | 'Sta3' // awaiting the local A-ASSOCIATE response
  | 'Sta5' // awaiting A-ASSOCIATE-AC or -RJ
  | 'Sta6' // association established, data transfer
  | 'Sta7' // awaiting A-RELEASE-RP
  | 'Sta8' // awaiting the local A-RELEASE response
  | 'Sta13'; // awaiting the transport close (ARTIM running)

export interface AssociationOptions {
  role: 'requestor' | 'acceptor';
  /** The largest PDU taken in: one declaring more is answered A-ABORT before its bytes are buffered. */
  maxPduBytes: number;
  /** ARTIM (PS3.8 9.1.5): for the A-ASSOCIATE-RQ to arrive, and for the peer to close after a reject, release or abort. */
  artimMs: number;
  /** Sta13: how long the peer has to close after our reject, release response or abort (default artimMs). */
  closeMs?: number;
  /** An established association with nothing received or sent for this long ends (timeout 'idle'). */
  idleMs: number;
  /** While true the idle clock is held (our side is still working on an answer). */
  busy?: () => boolean;
  /** Used when the peer announces 0 (no limit) as its maximum PDU length. */
  unlimitedPduCap?: number;
}

export class AssociationRejected extends Error {
  constructor(readonly rejection: Omit<AssociateRj, 'type'>) {
    super(`association rejected (result ${rejection.result}, source ${rejection.source}, reason ${rejection.reason})`);
  }
}

export class AssociationClosed extends Error {}

export interface AssociationEvents {
  /** Acceptor, Sta3: answer with accept() or reject(). */
  'associate-rq': [rq: AssociateRq];
  /** Sta6/Sta7: one PDV, its data a view into the PDU (valid only during the call). */
  pdv: [contextId: number, command: boolean, last: boolean, data: Buffer];
  /** Sta8: answer with releaseResponse() (or abort()). */
  'release-rq': [];
  /** The peer aborted. */
  aborted: [info: { source: number; reason: number }];
  /** The peer announced a PDU over maxPduBytes (answered A-ABORT; 'protocol-error' follows). */
  'pdu-too-large': [declared: number];
  /** We aborted for the peer's protocol error. */
  'protocol-error': [why: string, reason: number];
  timeout: [kind: 'artim' | 'idle'];
  /** A socket error (the connection is then closed). */
  'network-error': [err: Error];
  close: [];
}

const DEFAULT_UNLIMITED_CAP = 1 << 20;

export class Association extends EventEmitter<AssociationEvents> {
  state: State;
  /** The peer's A-ASSOCIATE-RQ (acceptor) or -AC (requestor), once known. */
  request: AssociateRq | undefined;
  accepted: AssociateAc | undefined;
  /** The most dataset bytes per P-DATA-TF the peer takes (its maximum PDU length less the PDV item header). */
  private maxPdv = 16384 - 6;
  private readonly framer: PduFramer;
  private artim: NodeJS.Timeout | undefined;
  private idle: NodeJS.Timeout | undefined;
  private lastReceived = Date.now();
  private lastSent = 0;
  private lastWritable = 0;
  private pendingRq: { resolve: (ac: AssociateAc) => void; reject: (e: Error) => void } | undefined;
  private pendingRelease: (() => void) | undefined;
  private drainWaiters: { resolve: () => void; reject: (e: Error) => void }[] = [];

  constructor(
    readonly socket: net.Socket,
    private readonly o: AssociationOptions,
  ) {
    super();
    this.state = o.role === 'acceptor' ? 'Sta2' : 'Sta5';
    this.framer = new PduFramer(
      (type, body) => this.onPdu(type, body),
      o.maxPduBytes,
      (n) => {
        this.emit('pdu-too-large', n);
        this.providerAbort(`PDU of ${n} bytes is over the limit (${o.maxPduBytes})`, AbortReason.invalidPduParameterValue);
      },
    );
    socket.on('data', (d: Buffer) => this.framer.push(d));
    socket.on('error', (err) => {
      if (this.state !== 'Sta1') this.emit('network-error', err);
      socket.destroy();
    });
    socket.on('drain', () => this.settleDrain());
    socket.on('close', () => this.onClose());
    if (o.role === 'acceptor') this.startArtim();
  }

  get closed(): boolean {
    return this.state === 'Sta1';
  }

  /** True in Sta6 (and Sta7 / Sta8: the data phase may still be finishing). */
  get established(): boolean {
    return this.state === 'Sta6' || this.state === 'Sta7' || this.state === 'Sta8';
  }

  // ------------------------------------------------------------------------------------------
  // association establishment

  /** Requestor: A-ASSOCIATE-RQ, resolved by the AC, rejected by an RJ (AssociationRejected), an abort or a close. */
  associate(rq: Omit<AssociateRq, 'type'>): Promise<AssociateAc> {
    if (this.o.role !== 'requestor' || this.state !== 'Sta5' || this.pendingRq) return Promise.reject(new Error('association already requested'));
    return new Promise<AssociateAc>((resolve, reject) => {
      this.pendingRq = { resolve, reject };
      this.request = { type: PduType.associateRq, ...rq };
      this.write(encodePdu(this.request));
      this.startArtim();
    });
  }

  /** Acceptor, Sta3: A-ASSOCIATE-AC with these results and our user information. */
  accept(contexts: AcceptedContextItem[], user: UserInformation): void {
    const rq = this.request;
    if (this.state !== 'Sta3' || !rq) throw new Error(`accept() in ${this.state}`);
    this.accepted = {
      type: PduType.associateAc,
      protocolVersion: 1,
      calledAe: rq.calledAe,
      callingAe: rq.callingAe,
      applicationContext: rq.applicationContext,
      contexts,
      user,
    };
    this.setPeerMax(rq.user.maxPduLength);
    this.state = 'Sta6';
    this.write(encodePdu(this.accepted));
    this.armIdle();
  }

  /** Acceptor, Sta3: A-ASSOCIATE-RJ; the peer should close, ARTIM closes it if not. */
  reject(r: Omit<AssociateRj, 'type'>): void {
    if (this.state !== 'Sta3') throw new Error(`reject() in ${this.state}`);
    this.write(encodePdu({ type: PduType.associateRj, ...r }));
    this.toSta13();
  }

  // ------------------------------------------------------------------------------------------
  // data transfer

  /**
   * Sends `data` as one message part (command or data set), fragmented to the
   * peer's maximum: each fragment is a 12-byte header and a view of `data`,
   * corked into one writev. False when the socket wants a 'drain' (drained()).
   */
  send(contextId: number, command: boolean, data: Buffer): boolean {
    if (!this.established || this.socket.destroyed) throw new AssociationClosed('association is not established');
    this.lastSent = Date.now();
    this.socket.cork();
    let o = 0;
    let ok = true;
    do {
      const n = Math.min(this.maxPdv, data.length - o);
      const last = o + n >= data.length;
      this.socket.write(pDataHeader(contextId, command, last, n));
      ok = this.socket.write(data.subarray(o, o + n));
      o += n;
    } while (o < data.length);
    this.socket.uncork();
    return ok;
  }

  /**
   * Sends a data set read as it goes: fragments of the peer's maximum are cut
   * from the chunks as they come, and the next chunk is awaited only once the
   * socket has taken the previous ones. `length` is the total: a source that
   * gives more or fewer bytes fails the transfer.
   */
  async sendStream(contextId: number, chunks: AsyncIterable<Buffer>, length: number): Promise<void> {
    let pending: Buffer[] = [];
    let pendingLength = 0;
    let sent = 0;
    const take = (n: number): Buffer => {
      const first = pending[0]!;
      if (first.length >= n) {
        pending[0] = first.subarray(n);
        if (pending[0].length === 0) pending.shift();
        pendingLength -= n;
        return first.subarray(0, n);
      }
      const all = Buffer.concat(pending, pendingLength);
      pending = all.length > n ? [all.subarray(n)] : [];
      pendingLength -= n;
      return all.subarray(0, n);
    };
    for await (const chunk of chunks) {
      if (!this.established || this.socket.destroyed) throw new AssociationClosed('association ended while sending');
      if (chunk.length === 0) continue;
      pending.push(chunk);
      pendingLength += chunk.length;
      // The fragments cut from this chunk go out corked into one writev, as send() does: not two writes a PDU.
      let more = true;
      this.socket.cork();
      try {
        while (pendingLength >= this.maxPdv || (pendingLength > 0 && sent + pendingLength >= length)) {
          const n = Math.min(this.maxPdv, pendingLength);
          const data = take(n);
          sent += n;
          this.socket.write(pDataHeader(contextId, false, sent >= length, n));
          more = this.socket.write(data);
        }
      } finally {
        this.socket.uncork();
      }
      this.lastSent = Date.now();
      if (!more) await this.drained();
    }
    if (sent !== length) throw new Error(`the data set source gave ${sent} of ${length} bytes (changed or truncated)`);
  }

  /** Resolves once the socket takes more; rejects when the connection ends first. */
  drained(): Promise<void> {
    if (this.closed || this.socket.destroyed) return Promise.reject(new AssociationClosed('connection closed'));
    if (!this.socket.writableNeedDrain) return Promise.resolve();
    return new Promise((resolve, reject) => this.drainWaiters.push({ resolve, reject }));
  }

  /** Stops reading from the peer (receive back-pressure) until resume(). */
  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  // ------------------------------------------------------------------------------------------
  // release and abort

  /** Requestor: A-RELEASE-RQ, then the RP (bounded by ARTIM), then the close. Never throws. */
  async release(): Promise<void> {
    if (this.state !== 'Sta6') {
      this.destroy();
      return;
    }
    this.state = 'Sta7';
    await new Promise<void>((resolve) => {
      this.pendingRelease = resolve;
      this.write(encodePdu({ type: PduType.releaseRq }));
      this.startArtim();
    });
    this.destroy();
  }

  /** Sta8: A-RELEASE-RP; the requestor closes (ARTIM closes it if not). */
  releaseResponse(): void {
    if (this.state !== 'Sta8') return;
    this.write(encodePdu({ type: PduType.releaseRp }));
    this.toSta13();
  }

  /** A-ABORT from us as the service user (or provider), then the close. */
  abort(source: number = AbortSource.serviceUser, reason: number = AbortReason.notSpecified): void {
    if (this.state === 'Sta1' || this.state === 'Sta13') {
      if (this.state === 'Sta13') return;
      this.destroy();
      return;
    }
    this.write(encodePdu({ type: PduType.abort, source, reason }));
    this.toSta13();
  }

  destroy(): void {
    this.socket.destroy();
  }

  // ------------------------------------------------------------------------------------------

  private providerAbort(why: string, reason: number): void {
    if (this.state === 'Sta1' || this.state === 'Sta13') return;
    this.framer.stop();
    this.emit('protocol-error', why, reason);
    this.abort(AbortSource.serviceProvider, reason);
  }

  private toSta13(): void {
    this.state = 'Sta13';
    this.framer.stop();
    this.clearIdle();
    this.failPending(new AssociationClosed('association ended'));
    if (!this.socket.destroyed) this.socket.end();
    this.startArtim(this.o.closeMs);
  }

  private write(b: Buffer): void {
    if (!this.socket.destroyed && this.socket.writable) this.socket.write(b);
  }

  private setPeerMax(max: number): void {
    const cap = this.o.unlimitedPduCap ?? DEFAULT_UNLIMITED_CAP;
    this.maxPdv = (max === 0 ? cap : Math.min(max, cap)) - 6;
  }

  private onPdu(type: number, body: Buffer): void {
    this.lastReceived = Date.now();
    try {
      switch (this.state) {
        case 'Sta2':
          return this.inSta2(type, body);
        case 'Sta5':
          return this.inSta5(type, body);
        case 'Sta6':
        case 'Sta7':
          return this.inDataPhase(type, body);
        case 'Sta3':
        case 'Sta8':
          // AA-8: nothing is expected while we prepare our answer (a peer's A-ABORT ends it all the same)
          if (type === PduType.abort) return this.peerAborted(body);
          return this.unexpected(type);
        default:
          // Sta13 / Sta1: ignored (AA-6, AA-7)
          return;
      }
    } catch (err) {
      if (err instanceof PduError) this.providerAbort(err.message, err.abortReason);
      else this.providerAbort(`PDU could not be handled: ${(err as Error).message}`, AbortReason.notSpecified);
    }
  }

  private unexpected(type: number): void {
    if (type < PduType.associateRq || type > PduType.abort) this.providerAbort(`unrecognized PDU type 0x${type.toString(16)}`, AbortReason.unrecognizedPdu);
    else this.providerAbort(`unexpected PDU type 0x${type.toString(16)} in ${this.state}`, AbortReason.unexpectedPdu);
  }

  private peerAborted(body: Buffer): void {
    const a = body.length >= 4 ? { source: body[2]!, reason: body[3]! } : { source: 0, reason: 0 };
    this.framer.stop();
    this.emit('aborted', a);
    this.failPending(new AssociationClosed(`association aborted by the peer (source ${a.source}, reason ${a.reason})`));
    this.destroy();
  }

  private inSta2(type: number, body: Buffer): void {
    if (type === PduType.abort) return this.peerAborted(body);
    if (type !== PduType.associateRq) return this.unexpected(type);
    const rq = decodePduBody(type, body) as AssociateRq;
    this.clearArtim();
    this.request = rq;
    this.state = 'Sta3';
    this.emit('associate-rq', rq);
  }

  private inSta5(type: number, body: Buffer): void {
    if (type === PduType.abort) return this.peerAborted(body);
    if (type === PduType.associateAc) {
      const ac = decodePduBody(type, body) as AssociateAc;
      this.clearArtim();
      this.accepted = ac;
      this.setPeerMax(ac.user.maxPduLength);
      if (this.maxPdv < 1) throw new PduError(`peer announced an unusable maximum PDU length (${ac.user.maxPduLength})`);
      this.state = 'Sta6';
      this.armIdle();
      const p = this.pendingRq;
      this.pendingRq = undefined;
      p?.resolve(ac);
      return;
    }
    if (type === PduType.associateRj) {
      const rj = decodePduBody(type, body) as AssociateRj;
      const p = this.pendingRq;
      this.pendingRq = undefined;
      p?.reject(new AssociationRejected({ result: rj.result, source: rj.source, reason: rj.reason }));
      this.clearArtim();
      this.destroy();
      return;
    }
    this.unexpected(type);
  }

  private inDataPhase(type: number, body: Buffer): void {
    switch (type) {
      case PduType.pData:
        forEachPdv(body, (contextId, command, last, data) => {
          if (this.state === 'Sta6' || this.state === 'Sta7') this.emit('pdv', contextId, command, last, data);
        });
        return;
      case PduType.releaseRq:
        decodePduBody(type, body);
        if (this.state === 'Sta7') {
          // release collision (PS3.8 9.2.2): answer and end
          this.write(encodePdu({ type: PduType.releaseRp }));
          this.settleRelease();
          return;
        }
        this.state = 'Sta8';
        this.clearIdle();
        this.emit('release-rq');
        return;
      case PduType.releaseRp:
        if (this.state !== 'Sta7') return this.unexpected(type);
        decodePduBody(type, body);
        this.settleRelease();
        return;
      case PduType.abort:
        return this.peerAborted(body);
      default:
        return this.unexpected(type);
    }
  }

  private settleRelease(): void {
    const r = this.pendingRelease;
    this.pendingRelease = undefined;
    this.clearArtim();
    r?.();
  }

  private startArtim(ms: number = this.o.artimMs): void {
    this.clearArtim();
    this.artim = setTimeout(() => {
      this.artim = undefined;
      if (this.state === 'Sta1') return;
      if (this.state !== 'Sta13') this.emit('timeout', 'artim');
      this.settleRelease();
      this.failPending(new AssociationClosed('no answer from the peer within the ARTIM timeout'));
      this.destroy();
    }, ms);
    this.artim.unref?.();
  }

  private clearArtim(): void {
    if (this.artim) clearTimeout(this.artim);
    this.artim = undefined;
  }

  /**
   * The idle clock counts from the last PDU received or sent, and holds while our own
   * bytes are still leaving (a large data set on a slow link: the peer cannot
   * answer yet; one that stops reading stops that progress too) or while busy().
   */
  private armIdle(): void {
    this.clearIdle();
    this.lastWritable = this.socket.writableLength;
    const check = (): void => {
      this.idle = undefined;
      if (!this.established) return;
      const now = Date.now();
      const writable = this.socket.writableLength;
      const progressing = writable > 0 && writable !== this.lastWritable;
      this.lastWritable = writable;
      const since = now - Math.max(this.lastReceived, this.lastSent);
      if (progressing || this.o.busy?.() || since < this.o.idleMs) {
        this.idle = setTimeout(check, progressing || this.o.busy?.() ? this.o.idleMs : this.o.idleMs - since);
        this.idle.unref?.();
        return;
      }
      this.emit('timeout', 'idle');
      this.failPending(new AssociationClosed(`nothing from the peer within ${this.o.idleMs / 1000}s`));
      this.destroy();
    };
    this.idle = setTimeout(check, this.o.idleMs);
    this.idle.unref?.();
  }

  private clearIdle(): void {
    if (this.idle) clearTimeout(this.idle);
    this.idle = undefined;
  }

  private settleDrain(): void {
    const w = this.drainWaiters;
    this.drainWaiters = [];
    for (const d of w) d.resolve();
  }

  private failPending(err: Error): void {
    const rq = this.pendingRq;
    this.pendingRq = undefined;
    rq?.reject(err);
    const w = this.drainWaiters;
    this.drainWaiters = [];
    for (const d of w) d.reject(err);
  }

  private onClose(): void {
    if (this.state === 'Sta1') return;
    this.state = 'Sta1';
    this.framer.stop();
    this.clearArtim();
    this.clearIdle();
    this.settleRelease();
    this.failPending(new AssociationClosed('connection closed'));
    this.emit('close');
  }
}
