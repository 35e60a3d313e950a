import type tls from 'node:tls';
import dimse from 'dcmjs-dimse';
import type { Destination } from '../config/schema.js';
import { splitPart10, type Part10Parts } from '../dicom/part10.js';
import { AssociationRejected, DimseClient } from '../dicom/ul/client.js';
import { CommandField, Priority } from '../dicom/ul/dimse.js';
import { RejectReason, RejectResult, RejectSource } from '../dicom/ul/pdu.js';
import { SopClass, TransferSyntax, UNCOMPRESSED_SYNTAXES, isUncompressed } from '../dicom/uids.js';
import { hashId, type Logger } from '../logger.js';
import { clientTlsOptions } from '../tls.js';
import {
  failAll,
  loadBytes,
  openForSending,
  part10Stream,
  readFailure,
  readPieces,
  streamToBuffer,
  type DestinationSender,
  type InstanceResult,
  type Part10Stream,
  type SendableInstance,
  type SendFailure,
} from './destination.js';

// dcmjs-dimse is used unmodified, only for transcoding (a receiver that refuses the stored syntax):
// the association and the C-STORE / C-ECHO data path are the gateway's own upper layer (src/dicom/ul).
const { Dataset, Transcoding, log: dimseLog } = dimse;

type DimseConfig = Extract<Destination, { type: 'dimse' }>;

const UNCOMPRESSED = UNCOMPRESSED_SYNTAXES;

/**
 * A streamed instance up to this size is read into memory as the prefetch of the next instance, while the
 * receiver answers the current one: the file's open, read and close then cost no time on the wire. Larger
 * ones are read as they are sent, so memory stays at two such instances at most.
 */
export const PREFETCH_MAX_BYTES = 8 * 1024 * 1024;

/** The stream's bytes in memory when it is small enough to prefetch; otherwise the stream as it is. */
export async function prefetched(stream: Part10Stream): Promise<Part10Stream> {
  if (stream.length > PREFETCH_MAX_BYTES || stream.pieces.every(Buffer.isBuffer)) return stream;
  return part10Stream([await streamToBuffer(stream)], stream.datasetOffset);
}

/** PS3.8 9.3.2.2: at most 128 presentation contexts (odd ids 1..255) in one A-ASSOCIATE-RQ. */
const MAX_CONTEXTS = 128;

export { splitPart10, type Part10Parts };

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
    r.result === RejectResult.transient ||
    (r.source === RejectSource.serviceProviderPresentation && (r.reason === RejectReason.temporaryCongestion || r.reason === RejectReason.localLimitExceeded));
  const reasons: Record<string, string> = {
    [`${RejectSource.serviceUser}:${RejectReason.callingAeNotRecognized}`]: 'calling AE title not recognized',
    [`${RejectSource.serviceUser}:${RejectReason.calledAeNotRecognized}`]: 'called AE title not recognized',
    [`${RejectSource.serviceUser}:${RejectReason.applicationContextNotSupported}`]: 'application context not supported',
  };
  const why = reasons[`${r.source}:${r.reason}`] ?? `source ${r.source}, reason ${r.reason}`;
  return { transient, message: `association rejected (${transient ? 'transient' : 'permanent'}): ${why}` };
}

// The association, PDUs, P-DATA framing and command sets are the shared upper layer (src/dicom/ul/):
// a dataset goes on the wire as 12-byte P-DATA-TF headers plus `subarray` views of the file bytes (no
// copy), each PDU sized to the receiver's maximum. One request is outstanding at a time (no
// asynchronous operations window is negotiated), as with storescu.

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
  /** Why an association of several ended early, logged once each (a receiver's association limit repeats per batch). */
  private readonly warnedEndings = new Set<string>();

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
    // dcmjs-dimse logs at TRACE/INFO by default (transcoding included).
    dimseLog.setLevel('silent');
  }

  private nextMessageId(): number {
    this.messageId = (this.messageId % 0xffff) + 1;
    return this.messageId;
  }

  private connect(contexts: { id: number; abstractSyntax: string; transferSyntaxes: string[] }[]): Promise<DimseClient> {
    return DimseClient.connect({
      host: this.config.host,
      port: this.config.port,
      callingAe: this.callingAe,
      calledAe: this.config.aeTitle,
      contexts,
      timeoutMs: this.timeoutMs,
      peer: this.peer,
      ...(this.secure ? { tls: this.secure } : {}),
    });
  }

  async verify(): Promise<{ ok: boolean; detail: string }> {
    let client: DimseClient | undefined;
    try {
      client = await this.connect([{ id: 1, abstractSyntax: SopClass.verification, transferSyntaxes: [TransferSyntax.implicitLe, TransferSyntax.explicitLe] }]);
      if (!client.contextFor(SopClass.verification)) {
        await client.release();
        return { ok: false, detail: 'receiver does not support Verification (C-ECHO)' };
      }
      const [rsp] = await client.request(1, {
        commandField: CommandField.cEchoRq,
        messageId: this.nextMessageId(),
        affectedSopClassUid: SopClass.verification,
        hasDataset: false,
      });
      await client.release();
      const status = rsp?.command.status ?? -1;
      if (status === 0) return { ok: true, detail: `C-ECHO ${this.peer} ok` };
      return { ok: false, detail: `C-ECHO status 0x${status.toString(16)}` };
    } catch (err) {
      client?.abort();
      if (err instanceof AssociationRejected) return { ok: false, detail: classifyReject(err.rejection).message };
      return { ok: false, detail: `C-ECHO failed: ${err instanceof Error ? err.message : String(err)}` };
    }
  }

  async send(batch: readonly SendableInstance[]): Promise<InstanceResult[]> {
    const results: (InstanceResult | undefined)[] = batch.map(() => undefined);
    try {
      const prepared: Prepared[] = [];
      batch.forEach((instance, index) => {
        if ('stream' in instance || 'file' in instance || typeof instance.bytes === 'function') {
          prepared.push({ index, instance, sopClassUid: instance.sopClassUid, transferSyntaxUid: instance.transferSyntaxUid });
          return;
        }
        try {
          const parts = splitPart10(instance.bytes as Buffer);
          // The caller's UIDs win (a de-identified copy carries its own meta); the meta header is the fallback.
          prepared.push({
            index,
            instance,
            parts,
            sopClassUid: instance.sopClassUid || parts.sopClassUid,
            transferSyntaxUid: instance.transferSyntaxUid || parts.transferSyntaxUid,
          });
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

  /**
   * The chunk over up to `maxAssociations` associations at once: each takes the next instance not yet taken when it is
   * free (so every association sends in batch order), and an association that cannot open or breaks leaves the rest to
   * the others. With one association (the default) this is storescu's order and pace.
   */
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
      propose(p.sopClassUid, [TransferSyntax.explicitLe, TransferSyntax.implicitLe]);
    }
    const work: Work = { chunk, proposals, done, cursor: 0, returned: [], stopped: undefined };
    const width = Math.min(this.config.maxAssociations, chunk.length);
    const endings = await Promise.all(Array.from({ length: width }, () => this.storeOver(work)));
    // Not sent: the stop (a cancelled case) if there was one, else why the associations ended.
    const ended = work.stopped ?? endings.find((e) => e !== undefined);
    if (width > 1) {
      // A receiver that refuses associations beyond its own limit is served by the ones it took: said once per reason.
      for (const e of endings) {
        if (!e || this.warnedEndings.has(e.message)) continue;
        if (this.warnedEndings.size >= 64) this.warnedEndings.clear();
        this.warnedEndings.add(e.message);
        this.log.warn('an association of a batch ended early; the others carried on with its instances', {
          reason: e.message,
          maxAssociations: this.config.maxAssociations,
        });
      }
    }
    return results.map(
      (r, i) =>
        r ?? {
          sopInstanceUid: chunk[i]!.instance.sopInstanceUid,
          ok: false,
          failure: { ...(ended ?? { transient: true, message: 'association ended before a response' }) },
        },
    );
  }

  /**
   * One association: propose, then per instance taken load, pick a context (or transcode), C-STORE, read the status.
   * Returns why it ended early (association rejected, broken, timed out), or undefined once nothing is left.
   */
  private async storeOver(work: Work): Promise<SendFailure | undefined> {
    const { chunk, done } = work;
    // The next instance for this association: one another association gave back first, then the batch's next.
    const take = (): number | undefined => {
      if (work.stopped) return undefined;
      if (work.returned.length > 0) return work.returned.shift();
      return work.cursor < chunk.length ? work.cursor++ : undefined;
    };
    let ul: DimseClient | undefined;
    /** Taken for the prefetch and not yet sent: given back if this association ends first. */
    let upcoming: number | undefined;
    /** Taken and being readied, its request not yet started: given back too (an instance on the wire is not). */
    let current: number | undefined;
    try {
      ul = await this.connect(work.proposals);
      const accepted = ul.contexts;
      const contextFor = (sopClassUid: string, ts: string): number | undefined => ul?.contextFor(sopClassUid, ts)?.id;

      // Prefetch: the next instance is loaded (read into memory up to PREFETCH_MAX_BYTES) while the receiver
      // stores the current one.
      const load = (i: number | undefined): Promise<Loaded> | undefined => {
        const p = i === undefined ? undefined : chunk[i];
        if (!p || !accepted.some((c) => c.abstractSyntax === p.sopClassUid)) return undefined;
        const inst = p.instance;
        const parts: Promise<Loaded> = p.parts
          ? Promise.resolve({ parts: p.parts })
          : 'file' in inst
            ? openForSending(inst.file, PREFETCH_MAX_BYTES).then((stream) => ({ stream, transferSyntaxUid: p.transferSyntaxUid }))
            : 'stream' in inst
              ? prefetched(inst.stream).then((stream) => ({ stream, transferSyntaxUid: p.transferSyntaxUid }))
              : loadBytes(inst).then((b) => ({ parts: splitPart10(b) }));
        parts.catch(() => undefined); // observed below; never an unhandled rejection if the association ends first
        return parts;
      };
      upcoming = take();
      let nextLoad = load(upcoming);
      while (upcoming !== undefined) {
        const i = upcoming;
        current = i;
        upcoming = undefined;
        const p = chunk[i]!;
        // The caller's stop check (a cancelled case): the instance answered before this one was the last this
        // association sent; the others stop at their own next check.
        const check = 'beforeSend' in p.instance ? p.instance.beforeSend : undefined;
        if (check) {
          try {
            await check();
          } catch (err) {
            work.stopped ??= { transient: true, message: `stopped before sending: ${(err as Error).message}` };
            break;
          }
        }
        const loading = nextLoad;
        nextLoad = undefined;
        const next = (): void => {
          upcoming = take();
          nextLoad = load(upcoming);
        };
        if (!loading) {
          done(i, { ok: false, failure: { transient: false, message: `receiver does not accept SOP class ${p.sopClassUid}` } });
          next();
          continue;
        }
        let loaded: Loaded;
        try {
          loaded = await loading;
        } catch (err) {
          done(i, { ok: false, failure: { transient: false, message: `could not read the instance: ${readFailure(err)}` } });
          next();
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
            done(i, { ok: false, failure: { transient: false, message: `could not read the instance: ${readFailure(err)}` } });
            next();
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
            next();
            continue;
          }
        }
        current = undefined;
        const answered = ul.request(
          contextId,
          {
            commandField: CommandField.cStoreRq,
            messageId: this.nextMessageId(),
            affectedSopClassUid: p.sopClassUid,
            affectedSopInstanceUid: p.instance.sopInstanceUid,
            priority: Priority.medium,
            hasDataset: true,
          },
          stream ? { chunks: readPieces(stream, stream.datasetOffset), length: stream.length - stream.datasetOffset } : dataset,
        );
        next();
        const rsp = (await answered).at(-1)!.command;
        const status = rsp.status ?? -1;
        const c =
          rsp.commandField === CommandField.cStoreRsp && status >= 0
            ? classifyStoreStatus(status)
            : {
                ok: false as const,
                failure: { transient: true, message: `unexpected response to C-STORE (command 0x${rsp.commandField.toString(16)}, status ${status})` },
              };
        if (!c.ok && rsp.errorComment) c.failure.message += `: ${rsp.errorComment}`;
        done(i, c);
      }
      // Out of the loop the last one taken is answered, refused or stopped: nothing of it to give back.
      current = undefined;
      if (upcoming !== undefined) work.returned.push(upcoming);
      upcoming = undefined;
      await ul.release();
      return undefined;
    } catch (err) {
      ul?.abort();
      // The instance in flight has no answer (it fails with the others not sent); one taken and not yet on the wire,
      // and the prefetched one, were never sent: the other associations take them.
      if (current !== undefined) work.returned.push(current);
      if (upcoming !== undefined) work.returned.push(upcoming);
      if (err instanceof AssociationRejected) return classifyReject(err.rejection);
      return { transient: true, message: err instanceof Error ? err.message : String(err) };
    }
  }
}

/** A chunk shared by the associations sending it. */
interface Work {
  chunk: Prepared[];
  proposals: { id: number; abstractSyntax: string; transferSyntaxes: string[] }[];
  done: (i: number, r: { ok: true } | { ok: false; failure: SendFailure }) => void;
  /** The next instance no association has taken yet. */
  cursor: number;
  /** Taken (prefetched) by an association that then ended, not sent: the next association to be free takes them. */
  returned: number[];
  /** Set by the first failed stop check: no association takes another instance. */
  stopped: SendFailure | undefined;
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
