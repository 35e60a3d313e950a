/**
 * The DIMSE service user on one association (requestor role): dial, negotiate,
 * send requests one at a time and read their responses (every pending one of a
 * C-FIND / C-MOVE / C-GET, then the final one), release. Used by the DIMSE
 * destination (C-ECHO, C-STORE) and offered to the rest of the gateway for
 * query/retrieve and MPPS: find(), move(), nCreate(), nSet().
 */
import net from 'node:net';
import tls from 'node:tls';
import { APPLICATION_CONTEXT, IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, SopClass, TransferSyntax } from '../uids.js';
import { Association, AssociationClosed, AssociationRejected } from './association.js';
import { CommandField, Priority, decodeCommand, decodeDataset, encodeCommand, encodeDataset, isPending, type Command, type NaturalDataset } from './dimse.js';
import { ContextResult, type ProposedContext, type RoleSelection } from './pdu.js';

export { AssociationRejected, AssociationClosed };

export interface ClientOptions {
  host: string;
  port: number;
  callingAe: string;
  calledAe: string;
  contexts: ProposedContext[];
  /** Connection, negotiation and response timeout (also the idle timeout of the association). */
  timeoutMs: number;
  /** tls.connect options (read per connection); plain TCP without. */
  tls?: () => tls.ConnectionOptions;
  /** What we announce we take (our responses are small). */
  maxPduLength?: number;
  roles?: RoleSelection[];
  /** Names the peer in error messages. */
  peer?: string;
}

export interface NegotiatedContext {
  id: number;
  abstractSyntax: string;
  transferSyntax: string;
}

export interface Response {
  command: Command;
  /** The response's data set bytes (small: identifiers, MPPS attributes), when one came. */
  dataset?: Buffer;
}

/** A dataset to send with a request: bytes in memory, or a stream of `length` bytes. */
export type Outgoing = Buffer | { chunks: AsyncIterable<Buffer>; length: number };

const OUR_MAX_PDU = 65536;

/** Dials `host:port` (TLS when given), bounded by `timeoutMs`. */
export function dial(o: { host: string; port: number; timeoutMs: number; tls?: () => tls.ConnectionOptions; peer: string }): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    let socket: net.Socket;
    try {
      socket = o.tls ? tls.connect(o.tls()) : net.connect({ host: o.host, port: o.port });
    } catch (err) {
      reject(new Error(`TLS setup for ${o.peer} failed: ${(err as Error).message}`));
      return;
    }
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no connection to ${o.peer} within ${o.timeoutMs / 1000}s`));
    }, o.timeoutMs);
    socket.once('error', (e) => {
      clearTimeout(timer);
      reject(new Error(o.tls ? `TLS connection to ${o.peer} failed: ${e.message}` : `network error: ${e.message}`));
    });
    socket.once(o.tls ? 'secureConnect' : 'connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      socket.setNoDelay(true);
      resolve(socket);
    });
  });
}

export class DimseClient {
  private messageId = 0;
  /** Command fragments of the message being received. */
  private commandParts: Buffer[] = [];
  private datasetParts: Buffer[] = [];
  private current: Command | undefined;
  private waiter: { resolve: (r: Response) => void; reject: (e: Error) => void } | undefined;
  private queue: Response[] = [];
  private failure: Error | undefined;

  private constructor(
    readonly association: Association,
    readonly contexts: NegotiatedContext[],
    private readonly peer: string,
  ) {
    association.on('pdv', (contextId, command, last, data) => this.onPdv(contextId, command, last, data));
    association.on('close', () => this.fail(this.failure ?? new AssociationClosed(`connection to ${peer} closed`)));
    association.on('aborted', (a) => this.fail(new AssociationClosed(`association aborted by ${peer} (source ${a.source}, reason ${a.reason})`)));
    association.on('protocol-error', (why) => this.fail(new AssociationClosed(`protocol error from ${peer}: ${why}`)));
    association.on('timeout', () => this.fail(new AssociationClosed(`no response from ${peer} within the timeout`)));
    association.on('network-error', (e) => this.fail(new AssociationClosed(`network error: ${e.message}`)));
    association.on('release-rq', () => {
      // the peer wants to end the association (not expected of an SCP): agree, and fail what is waiting
      this.fail(new AssociationClosed(`${peer} released the association`));
      association.releaseResponse();
    });
  }

  /** Dials and negotiates. Throws AssociationRejected on an A-ASSOCIATE-RJ. */
  static async connect(o: ClientOptions): Promise<DimseClient> {
    const peer = o.peer ?? `${o.calledAe}@${o.host}:${o.port}`;
    const socket = await dial({ host: o.host, port: o.port, timeoutMs: o.timeoutMs, tls: o.tls, peer });
    const association = new Association(socket, {
      role: 'requestor',
      // what we announce, with room for a peer that overshoots it a little (as the SCP's dicom.maxPduBytes)
      maxPduBytes: Math.max(o.maxPduLength ?? OUR_MAX_PDU, 1 << 20),
      artimMs: o.timeoutMs,
      idleMs: o.timeoutMs,
    });
    socket.on('error', () => undefined);
    try {
      const ac = await association.associate({
        protocolVersion: 1,
        calledAe: o.calledAe,
        callingAe: o.callingAe,
        applicationContext: APPLICATION_CONTEXT,
        contexts: o.contexts,
        user: {
          maxPduLength: o.maxPduLength ?? OUR_MAX_PDU,
          implementationClassUid: IMPLEMENTATION_CLASS_UID,
          implementationVersionName: IMPLEMENTATION_VERSION_NAME,
          ...(o.roles ? { roles: o.roles } : {}),
        },
      });
      const proposed = new Map(o.contexts.map((c) => [c.id, c.abstractSyntax]));
      const contexts = ac.contexts
        .filter((c) => c.result === ContextResult.acceptance && c.transferSyntax && proposed.has(c.id))
        .map((c) => ({ id: c.id, abstractSyntax: proposed.get(c.id)!, transferSyntax: c.transferSyntax }));
      return new DimseClient(association, contexts, peer);
    } catch (err) {
      association.destroy();
      throw err;
    }
  }

  /** An accepted context for the SOP class (and transfer syntax, when given). */
  contextFor(abstractSyntax: string, transferSyntax?: string): NegotiatedContext | undefined {
    return this.contexts.find((c) => c.abstractSyntax === abstractSyntax && (transferSyntax === undefined || c.transferSyntax === transferSyntax));
  }

  nextMessageId(): number {
    this.messageId = (this.messageId % 0xffff) + 1;
    return this.messageId;
  }

  /**
   * Sends a request (its command, then its data set) and resolves with every
   * response to it: the pending ones (C-FIND / C-MOVE / C-GET) and the final
   * one, last. `onPending` sees each pending response as it comes.
   */
  async request(contextId: number, command: Command, dataset?: Outgoing, onPending?: (r: Response) => void): Promise<Response[]> {
    if (this.failure) throw this.failure;
    const messageId = command.messageId ?? this.nextMessageId();
    const cmd = encodeCommand({ ...command, messageId, hasDataset: dataset !== undefined });
    this.association.send(contextId, true, cmd);
    if (dataset !== undefined) {
      if (Buffer.isBuffer(dataset)) this.association.send(contextId, false, dataset);
      else await this.association.sendStream(contextId, dataset.chunks, dataset.length);
    }
    const out: Response[] = [];
    for (;;) {
      const r = await this.next();
      // a late answer to an earlier request (cannot happen with one outstanding): skip it
      if (r.command.messageIdBeingRespondedTo !== messageId) continue;
      out.push(r);
      if (r.command.status !== undefined && isPending(r.command.status)) {
        onPending?.(r);
        continue;
      }
      return out;
    }
  }

  async echo(): Promise<number> {
    const ctx = this.contextFor(SopClass.verification);
    if (!ctx) throw new Error(`${this.peer} does not accept Verification (C-ECHO)`);
    const [rsp] = await this.request(ctx.id, { commandField: CommandField.cEchoRq, affectedSopClassUid: SopClass.verification, hasDataset: false });
    return rsp!.command.status ?? -1;
  }

  /**
   * C-FIND (study root unless `sopClassUid` says otherwise): the identifier with
   * QueryRetrieveLevel set to `level`; resolves with the pending matches' data
   * sets, naturalized, and the final status (with its Error Comment, when the
   * peer sent one). When `signal` aborts, a C-CANCEL is sent: the peer ends
   * with 0xFE00 (or whatever it answers), and the matches so far are returned
   * with that status.
   */
  async find(
    identifier: NaturalDataset,
    level: 'PATIENT' | 'STUDY' | 'SERIES' | 'IMAGE',
    sopClassUid: string = SopClass.studyRootFind,
    o: { signal?: AbortSignal } = {},
  ): Promise<{ status: number; matches: NaturalDataset[]; errorComment?: string }> {
    const ctx = this.contextFor(sopClassUid);
    if (!ctx) throw new Error(`${this.peer} does not accept C-FIND ${sopClassUid}`);
    const messageId = this.nextMessageId();
    const responses = await this.cancellable(ctx.id, messageId, o.signal, () =>
      this.request(
        ctx.id,
        { commandField: CommandField.cFindRq, messageId, affectedSopClassUid: sopClassUid, priority: Priority.medium, hasDataset: true },
        encodeDataset({ ...identifier, QueryRetrieveLevel: level }, ctx.transferSyntax),
      ),
    );
    const matches = responses.filter((r) => r.dataset && isPending(r.command.status ?? 0)).map((r) => decodeDataset(r.dataset!, ctx.transferSyntax));
    const last = responses.at(-1)!.command;
    return { status: last.status ?? -1, matches, ...(last.errorComment ? { errorComment: last.errorComment } : {}) };
  }

  /**
   * C-MOVE to `destinationAe`: resolves with the final status, sub-operation
   * counts and Error Comment. `onPending` sees the counts of each pending
   * response; `signal` cancels as for find().
   */
  async move(
    identifier: NaturalDataset,
    destinationAe: string,
    level: 'PATIENT' | 'STUDY' | 'SERIES' | 'IMAGE' = 'STUDY',
    sopClassUid: string = SopClass.studyRootMove,
    o: { signal?: AbortSignal; onPending?: (counts: { completed: number; failed: number; warning: number; remaining: number }) => void } = {},
  ): Promise<{ status: number; completed: number; failed: number; warning: number; remaining: number; errorComment?: string }> {
    const ctx = this.contextFor(sopClassUid);
    if (!ctx) throw new Error(`${this.peer} does not accept C-MOVE ${sopClassUid}`);
    const messageId = this.nextMessageId();
    const responses = await this.cancellable(ctx.id, messageId, o.signal, () =>
      this.request(
        ctx.id,
        {
          commandField: CommandField.cMoveRq,
          messageId,
          affectedSopClassUid: sopClassUid,
          priority: Priority.medium,
          moveDestination: destinationAe,
          hasDataset: true,
        },
        encodeDataset({ ...identifier, QueryRetrieveLevel: level }, ctx.transferSyntax),
        (r) => o.onPending?.(counts(r.command)),
      ),
    );
    const last = responses.at(-1)!.command;
    return { status: last.status ?? -1, ...counts(last), ...(last.errorComment ? { errorComment: last.errorComment } : {}) };
  }

  /** C-CANCEL-RQ for the request `messageId` on `contextId` (PS3.7 9.3.2.3): no response of its own; the request ends with its final status. */
  cancel(contextId: number, messageId: number): void {
    if (this.failure || !this.association.established) return;
    this.association.send(contextId, true, encodeCommand({ commandField: CommandField.cCancelRq, messageIdBeingRespondedTo: messageId, hasDataset: false }));
  }

  /** Runs `run`, sending a C-CANCEL for `messageId` if `signal` aborts before it settles. */
  private async cancellable<T>(contextId: number, messageId: number, signal: AbortSignal | undefined, run: () => Promise<T>): Promise<T> {
    if (!signal) return run();
    const onAbort = (): void => this.cancel(contextId, messageId);
    const pending = run();
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    try {
      return await pending;
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
  }

  /** N-CREATE of `sopInstanceUid` (MPPS by default). */
  async nCreate(sopInstanceUid: string, dataset: NaturalDataset, sopClassUid: string = SopClass.mpps): Promise<{ status: number; dataset?: NaturalDataset }> {
    return this.normalized(CommandField.nCreateRq, sopClassUid, sopInstanceUid, dataset);
  }

  /** N-SET of `sopInstanceUid` (MPPS by default). */
  async nSet(sopInstanceUid: string, dataset: NaturalDataset, sopClassUid: string = SopClass.mpps): Promise<{ status: number; dataset?: NaturalDataset }> {
    return this.normalized(CommandField.nSetRq, sopClassUid, sopInstanceUid, dataset);
  }

  private async normalized(
    commandField: number,
    sopClassUid: string,
    sopInstanceUid: string,
    dataset: NaturalDataset,
  ): Promise<{ status: number; dataset?: NaturalDataset }> {
    const ctx = this.contextFor(sopClassUid);
    if (!ctx) throw new Error(`${this.peer} does not accept ${sopClassUid}`);
    const command: Command =
      commandField === CommandField.nCreateRq
        ? { commandField, affectedSopClassUid: sopClassUid, affectedSopInstanceUid: sopInstanceUid, hasDataset: true }
        : { commandField, requestedSopClassUid: sopClassUid, requestedSopInstanceUid: sopInstanceUid, hasDataset: true };
    const [rsp] = await this.request(ctx.id, command, encodeDataset(dataset, ctx.transferSyntax));
    return { status: rsp!.command.status ?? -1, ...(rsp!.dataset ? { dataset: decodeDataset(rsp!.dataset, ctx.transferSyntax) } : {}) };
  }

  /** A-RELEASE-RQ, the RP (bounded), the close; never throws. */
  async release(): Promise<void> {
    await this.association.release();
  }

  abort(): void {
    this.association.abort();
  }

  private onPdv(_contextId: number, command: boolean, last: boolean, data: Buffer): void {
    if (command) {
      this.commandParts.push(Buffer.from(data));
      if (!last) return;
      const parts = this.commandParts;
      this.commandParts = [];
      let c: Command;
      try {
        c = decodeCommand(Buffer.concat(parts));
      } catch (err) {
        this.fail(new AssociationClosed(`unreadable response from ${this.peer}: ${(err as Error).message}`));
        this.association.abort();
        return;
      }
      if (c.hasDataset) this.current = c;
      else this.deliver({ command: c });
      return;
    }
    if (!this.current) return; // a data set without its command: nothing to attach it to
    this.datasetParts.push(Buffer.from(data));
    if (!last) return;
    const dataset = Buffer.concat(this.datasetParts);
    this.datasetParts = [];
    const c = this.current;
    this.current = undefined;
    this.deliver({ command: c, dataset });
  }

  private deliver(r: Response): void {
    const w = this.waiter;
    if (w) {
      this.waiter = undefined;
      w.resolve(r);
    } else this.queue.push(r);
  }

  private next(): Promise<Response> {
    const q = this.queue.shift();
    if (q) return Promise.resolve(q);
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject }));
  }

  private fail(e: Error): void {
    this.failure ??= e;
    const w = this.waiter;
    this.waiter = undefined;
    w?.reject(this.failure);
  }
}

const counts = (c: Command): { completed: number; failed: number; warning: number; remaining: number } => ({
  completed: c.completed ?? 0,
  failed: c.failed ?? 0,
  warning: c.warning ?? 0,
  remaining: c.remaining ?? 0,
});

/** The usual proposal for a query/retrieve or MPPS association: one context per SOP class, implicit and explicit LE. */
export function proposeContexts(sopClassUids: string[]): ProposedContext[] {
  return sopClassUids.map((abstractSyntax, i) => ({ id: i * 2 + 1, abstractSyntax, transferSyntaxes: [TransferSyntax.explicitLe, TransferSyntax.implicitLe] }));
}
