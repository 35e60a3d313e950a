import type { Socket } from 'node:net';
import dimse from 'dcmjs-dimse';
import type { Destination } from '../config/schema.js';
import { hashId, type Logger } from '../logger.js';
import { failAll, type DestinationSender, type InstanceResult, type OutgoingInstance, type SendFailure } from './destination.js';

const { Client, Dataset, Transcoding, log: dimseLog } = dimse;
const { CStoreRequest, CEchoRequest } = dimse.requests;
const { PresentationContext } = dimse.association;
const { PresentationContextResult, RejectResult, RejectSource, RejectReason } = dimse.constants;

type DimseConfig = Extract<Destination, { type: 'dimse' }>;
type DatasetT = InstanceType<typeof Dataset>;
type ClientT = InstanceType<typeof Client>;
type CStoreRequestT = InstanceType<typeof CStoreRequest>;
type AssociationT = InstanceType<typeof dimse.association.Association>;

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

/**
 * A Dataset that puts the file's own dataset bytes on the wire: dcmjs-dimse
 * would otherwise parse and re-encode every file (slower, 10x the memory, and
 * not byte-identical, e.g. SpecificCharacterSet relabelled).
 */
class RawDataset extends Dataset {
  private raw: Buffer | undefined;
  constructor(sopClassUid: string, sopInstanceUid: string, transferSyntaxUid: string, dataset: Buffer) {
    super({ SOPClassUID: sopClassUid, SOPInstanceUID: sopInstanceUid }, transferSyntaxUid);
    this.raw = dataset;
  }
  override getDenaturalizedDataset(): Buffer {
    if (!this.raw) throw new Error('dataset already released');
    return this.raw;
  }
  release(): void {
    this.raw = undefined;
  }
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

interface Prepared {
  index: number;
  instance: OutgoingInstance;
  parts: Part10Parts;
}

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
 * permanently. Every request is answered or timed out: dcmjs-dimse silently
 * skips a request it cannot place or transcode, so this class decides the
 * context for each request itself and counts responses.
 */
export class DimseDestinationSender implements DestinationSender {
  readonly id: string;
  private readonly log: Logger;
  private readonly callingAe: string;
  private readonly timeoutMs: number;

  constructor(
    private readonly config: DimseConfig,
    options: { callingAeTitle: string; logger: Logger },
  ) {
    this.id = config.id;
    this.callingAe = config.callingAeTitle ?? options.callingAeTitle;
    this.log = options.logger.child({ component: 'dimse-destination', destination: config.id });
    this.timeoutMs = config.timeoutSeconds * 1000;
    // dcmjs-dimse logs every PDU at TRACE by default (PHI included), as the SCP notes too.
    dimseLog.setLevel('silent');
  }

  async verify(): Promise<{ ok: boolean; detail: string }> {
    try {
      const req = new CEchoRequest();
      let status: number | undefined;
      req.on('response', (res: { getStatus(): number }) => {
        status = res.getStatus();
      });
      const outcome = await this.associate([req]);
      if (outcome.rejected) return { ok: false, detail: classifyReject(outcome.rejected).message };
      if (status === 0) return { ok: true, detail: `C-ECHO ${this.config.aeTitle}@${this.config.host}:${this.config.port} ok` };
      if (status !== undefined) return { ok: false, detail: `C-ECHO status 0x${status.toString(16)}` };
      if (outcome.accepted && !outcome.error) return { ok: false, detail: 'receiver does not support Verification (C-ECHO)' };
      return { ok: false, detail: outcome.error ?? 'no response' };
    } catch (err) {
      return { ok: false, detail: `C-ECHO failed: ${err instanceof Error ? err.message : String(err)}` };
    }
  }

  async send(batch: OutgoingInstance[]): Promise<InstanceResult[]> {
    const results: (InstanceResult | undefined)[] = batch.map(() => undefined);
    try {
      const prepared: Prepared[] = [];
      batch.forEach((instance, index) => {
        try {
          const parts = splitPart10(instance.bytes);
          // The caller's UIDs win (a de-identified copy carries its own meta); the meta header is the fallback.
          prepared.push({
            index,
            instance,
            parts: {
              ...parts,
              sopClassUid: instance.sopClassUid || parts.sopClassUid,
              sopInstanceUid: instance.sopInstanceUid || parts.sopInstanceUid,
              transferSyntaxUid: instance.transferSyntaxUid || parts.transferSyntaxUid,
            },
          });
        } catch (err) {
          results[index] = { sopInstanceUid: instance.sopInstanceUid, ok: false, failure: { transient: false, message: (err as Error).message } };
        }
      });
      if (prepared.some((p) => !isUncompressed(p.parts.transferSyntaxUid))) await ensureCodecs(this.log);
      for (const chunk of chunkByContexts(prepared)) {
        const chunkResults = await this.storeChunk(chunk);
        chunk.forEach((p, i) => (results[p.index] = chunkResults[i]));
      }
      return results.map((r, i) => r ?? { sopInstanceUid: batch[i]!.sopInstanceUid, ok: false, failure: { transient: true, message: 'not sent' } });
    } catch (err) {
      // never throws: an unexpected library error fails the rest of the batch for a retry
      this.log.error('DIMSE send failed unexpectedly', { err: err instanceof Error ? err.message : String(err) });
      const fallback = failAll(batch, { transient: true, message: `internal error: ${err instanceof Error ? err.message : String(err)}` });
      return results.map((r, i) => r ?? fallback[i]!);
    }
  }

  private async storeChunk(chunk: Prepared[]): Promise<InstanceResult[]> {
    const results: (InstanceResult | undefined)[] = chunk.map(() => undefined);
    const requests = chunk.map((p) => {
      const ds = new RawDataset(p.parts.sopClassUid, p.parts.sopInstanceUid, p.parts.transferSyntaxUid, p.parts.dataset);
      return { request: new CStoreRequest(ds), raw: ds as DatasetT, sendAs: ds as DatasetT | undefined };
    });
    // Besides the library's (SOP class: implicit + explicit LE) context, one context per uncompressed stored syntax
    // alone, so the receiver cannot pick a syntax we would have to re-encode into; the library already adds a
    // context of its own for each compressed syntax.
    const extra = new Map<string, InstanceType<typeof PresentationContext>>();
    for (const p of chunk) {
      const key = `${p.parts.sopClassUid}|${p.parts.transferSyntaxUid}`;
      if (isUncompressed(p.parts.transferSyntaxUid) && !extra.has(key)) {
        extra.set(key, new PresentationContext(0, p.parts.sopClassUid, p.parts.transferSyntaxUid));
      }
    }
    let answered = 0;
    requests.forEach((r, i) => {
      r.request.on('response', (res: { getStatus(): number }) => {
        const p = chunk[i]!;
        const c = classifyStoreStatus(res.getStatus());
        results[i] = c.ok ? { sopInstanceUid: p.instance.sopInstanceUid, ok: true } : { sopInstanceUid: p.instance.sopInstanceUid, ok: false, failure: c.failure };
        answered++;
        // dcmjs-dimse keeps every request's dataset until the association ends: drop ours now.
        (r.raw as RawDataset).release();
        r.sendAs = undefined;
        r.request.setDataset(undefined as unknown as DatasetT);
      });
    });

    /** Runs synchronously between A-ASSOCIATE-AC and the first P-DATA: decides, per request, what goes on the wire. */
    const onAccepted = (association: AssociationT): CStoreRequestT[] => {
      const accepted = new Map<string, Set<string>>();
      for (const { id } of association.getPresentationContexts()) {
        const pc = association.getPresentationContext(id);
        const ts = pc.getAcceptedTransferSyntaxUid();
        if (pc.getResult() !== PresentationContextResult.Accept || !ts) continue;
        const set = accepted.get(pc.getAbstractSyntaxUid()) ?? new Set<string>();
        set.add(ts);
        accepted.set(pc.getAbstractSyntaxUid(), set);
      }
      requests.forEach((r, i) => {
        const p = chunk[i]!;
        const fail = (failure: SendFailure): void => {
          results[i] = { sopInstanceUid: p.instance.sopInstanceUid, ok: false, failure };
          (r.raw as RawDataset).release();
          r.sendAs = undefined;
        };
        const syntaxes = accepted.get(p.parts.sopClassUid);
        const stored = p.parts.transferSyntaxUid;
        if (!syntaxes) return fail({ transient: false, message: `receiver does not accept SOP class ${p.parts.sopClassUid}` });
        if (syntaxes.has(stored)) return; // as stored, byte for byte
        const target = UNCOMPRESSED.find((ts) => syntaxes.has(ts));
        if (!target) return fail({ transient: false, message: `receiver does not accept transfer syntax ${stored}` });
        if (!isUncompressed(stored) && !Transcoding.isInitialized()) {
          return fail({ transient: false, message: `receiver does not accept transfer syntax ${stored} (no codecs to transcode)` });
        }
        try {
          const full = new Dataset(p.parts.dataset, stored);
          r.sendAs = Transcoding.transcodeDataset(full, target);
          r.request.setDataset(r.sendAs);
          (r.raw as RawDataset).release();
          this.log.debug('transcoding for receiver', { sop: hashId(p.parts.sopInstanceUid), from: stored, to: target });
        } catch (err) {
          fail({ transient: false, message: `receiver does not accept transfer syntax ${stored}; transcoding to ${target} failed: ${(err as Error).message}` });
        }
      });
      return requests.filter((_, i) => results[i] === undefined).map((r) => r.request);
    };

    const outcome = await this.associate(requests.map((r) => r.request), { contexts: [...extra.values()], onAccepted, progress: () => answered });
    return results.map((r, i) => {
      if (r) return r;
      const sopInstanceUid = chunk[i]!.instance.sopInstanceUid;
      if (outcome.rejected) return { sopInstanceUid, ok: false, failure: classifyReject(outcome.rejected) };
      return { sopInstanceUid, ok: false, failure: { transient: true, message: outcome.error ?? 'association ended before a response' } };
    });
  }

  /**
   * One association: connects, negotiates, sends, releases. Resolves when the
   * socket closes; a watchdog aborts it when no response arrives for
   * `timeoutSeconds` (the library's own timers do not cover a peer that
   * accepts and then never answers a request).
   */
  private associate(
    requests: (CStoreRequestT | InstanceType<typeof CEchoRequest>)[],
    opts: { contexts?: InstanceType<typeof PresentationContext>[]; onAccepted?: (a: AssociationT) => CStoreRequestT[]; progress?: () => number } = {},
  ): Promise<{ accepted: boolean; rejected?: { result: number; source: number; reason: number }; error?: string }> {
    return new Promise((resolve) => {
      const client: ClientT = new Client();
      const outcome: { accepted: boolean; rejected?: { result: number; source: number; reason: number }; error?: string } = { accepted: false };
      for (const req of requests) client.addRequest(req);
      for (const ctx of opts.contexts ?? []) client.addAdditionalPresentationContext(ctx, true);
      let settled = false;
      let lastProgress = -1;
      const finish = (): void => {
        if (settled) return;
        settled = true;
        clearInterval(watchdog);
        resolve(outcome);
      };
      let deadline = Date.now() + this.timeoutMs;
      const socket = (): Socket | undefined => (client as unknown as { network?: { socket?: Socket } }).network?.socket;
      const watchdog = setInterval(
        () => {
          const p = opts.progress?.() ?? 0;
          if (p !== lastProgress) {
            lastProgress = p;
            deadline = Date.now() + this.timeoutMs;
            return;
          }
          if (Date.now() < deadline) return;
          outcome.error ??= `no response from ${this.config.aeTitle}@${this.config.host}:${this.config.port} within ${this.config.timeoutSeconds}s`;
          try {
            if (outcome.accepted) client.abort();
          } catch {
            /* not connected */
          }
          socket()?.destroy();
          // a socket that never closes must not hold the batch
          setTimeout(finish, 1000).unref();
        },
        Math.min(1000, Math.max(50, this.timeoutMs / 10)),
      );
      client.on('connected', () => socket()?.setNoDelay(true));
      client.on('associationAccepted', (association: AssociationT) => {
        outcome.accepted = true;
        if (!opts.onAccepted) return;
        // The library sends `client.requests` right after this event, synchronously: keep only those still to send.
        const keep = new Set(opts.onAccepted(association));
        const list = (client as unknown as { requests: unknown[] }).requests;
        for (let i = list.length - 1; i >= 0; i--) if (!keep.has(list[i] as CStoreRequestT)) list.splice(i, 1);
      });
      client.on('associationRejected', (r: { result: number; source: number; reason: number }) => {
        outcome.rejected = r;
      });
      client.on('networkError', (e: Error) => {
        outcome.error ??= `network error: ${e.message}`;
      });
      client.on('closed', finish);
      try {
        client.send(this.config.host, this.config.port, this.callingAe, this.config.aeTitle, {
          connectTimeout: this.timeoutMs,
          associationTimeout: this.timeoutMs,
          pduTimeout: this.timeoutMs,
        });
      } catch (err) {
        outcome.error = (err as Error).message;
        finish();
      }
    });
  }
}

/** Splits a batch only when its SOP class / syntax mix needs more than 128 presentation contexts. */
function chunkByContexts(prepared: Prepared[]): Prepared[][] {
  const chunks: Prepared[][] = [];
  let current: Prepared[] = [];
  let keys = new Set<string>();
  const keysOf = (p: Prepared): string[] => [`${p.parts.sopClassUid}|*`, `${p.parts.sopClassUid}|${p.parts.transferSyntaxUid}`];
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
