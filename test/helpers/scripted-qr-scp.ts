/**
 * A query/retrieve SCP whose answers a test writes: it runs on the gateway's
 * upper layer (acceptor role), accepts every proposed context in implicit VR
 * LE, and hands each request (command, decoded identifier) to `answer`, which
 * sends responses through `reply` (and may wait for the C-CANCEL). Real socket
 * on 127.0.0.1, port 0. The statuses and failure modes a real PACS produces
 * only rarely (0xA700, 0xFE00, an abort after pending answers) come from here.
 */
import net from 'node:net';
import { Association } from '../../src/dicom/ul/association.js';
import { CommandField, decodeCommand, decodeDataset, encodeCommand, encodeDataset, type Command, type NaturalDataset } from '../../src/dicom/ul/dimse.js';
import { ContextResult } from '../../src/dicom/ul/pdu.js';
import { IMPLEMENTATION_CLASS_UID, TransferSyntax } from '../../src/dicom/uids.js';

export interface QrRequest {
  command: Command;
  identifier: NaturalDataset | undefined;
  callingAe: string;
}

export interface QrExchange {
  /** Sends a response to the request being answered (its Message ID and SOP class filled in). */
  reply(
    status: number,
    o?: { identifier?: NaturalDataset; counts?: Partial<Record<'remaining' | 'completed' | 'failed' | 'warning', number>>; errorComment?: string },
  ): void;
  /** Resolves when the C-CANCEL-RQ for this request arrives. */
  cancelled: Promise<void>;
  /** A-ABORT (as a PACS that gives up mid-answer). */
  abort(): void;
}

export type QrAnswer = (rq: QrRequest, x: QrExchange) => Promise<void> | void;

export class ScriptedQrScp {
  port = 0;
  readonly requests: QrRequest[] = [];
  readonly cancels: number[] = [];
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();

  constructor(public answer: QrAnswer) {
    this.server = net.createServer((socket) => this.serve(socket));
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as net.AddressInfo).port;
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private serve(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    const assoc = new Association(socket, { role: 'acceptor', maxPduBytes: 1 << 20, artimMs: 5000, idleMs: 30_000 });
    const contexts = new Map<number, string>();
    let commandParts: Buffer[] = [];
    let datasetParts: Buffer[] = [];
    let current: Command | undefined;
    const cancelWaiters = new Map<number, () => void>();
    assoc.on('associate-rq', (rq) => {
      const results = rq.contexts.map((pc) => {
        const ok = pc.transferSyntaxes.includes(TransferSyntax.implicitLe);
        if (ok) contexts.set(pc.id, pc.abstractSyntax);
        return {
          id: pc.id,
          result: ok ? ContextResult.acceptance : ContextResult.transferSyntaxesNotSupported,
          transferSyntax: ok ? TransferSyntax.implicitLe : '',
        };
      });
      assoc.accept(results, { maxPduLength: 16384, implementationClassUid: IMPLEMENTATION_CLASS_UID });
    });
    assoc.on('release-rq', () => assoc.releaseResponse());
    socket.on('error', () => undefined);
    const dispatch = (contextId: number, command: Command, dataset: Buffer | undefined): void => {
      if (command.commandField === CommandField.cCancelRq) {
        this.cancels.push(command.messageIdBeingRespondedTo ?? -1);
        cancelWaiters.get(command.messageIdBeingRespondedTo ?? -1)?.();
        return;
      }
      const rq: QrRequest = {
        command,
        identifier: dataset ? decodeDataset(dataset, TransferSyntax.implicitLe) : undefined,
        callingAe: assoc.request?.callingAe ?? '',
      };
      this.requests.push(rq);
      const messageId = command.messageId ?? 0;
      const cancelled = new Promise<void>((resolve) => cancelWaiters.set(messageId, resolve));
      const x: QrExchange = {
        reply: (status, o = {}) => {
          const rsp: Command = {
            commandField: command.commandField | 0x8000,
            messageIdBeingRespondedTo: messageId,
            affectedSopClassUid: command.affectedSopClassUid ?? contexts.get(contextId) ?? '',
            status,
            hasDataset: o.identifier !== undefined,
            ...o.counts,
            ...(o.errorComment ? { errorComment: o.errorComment } : {}),
          };
          assoc.send(contextId, true, encodeCommand(rsp));
          if (o.identifier) assoc.send(contextId, false, encodeDataset(o.identifier, TransferSyntax.implicitLe));
        },
        cancelled,
        abort: () => assoc.abort(),
      };
      void Promise.resolve(this.answer(rq, x)).catch(() => assoc.abort());
    };
    assoc.on('pdv', (contextId, command, last, data) => {
      if (command) {
        commandParts.push(Buffer.from(data));
        if (!last) return;
        const c = decodeCommand(Buffer.concat(commandParts));
        commandParts = [];
        if (c.hasDataset) current = c;
        else dispatch(contextId, c, undefined);
        return;
      }
      datasetParts.push(Buffer.from(data));
      if (!last || !current) return;
      const c = current;
      const d = Buffer.concat(datasetParts);
      current = undefined;
      datasetParts = [];
      dispatch(contextId, c, d);
    });
  }
}
