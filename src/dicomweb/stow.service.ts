import { createHash } from 'node:crypto';
import { closeSync, openSync, writeSync } from 'node:fs';
import type { Readable } from 'node:stream';
import { Part10HeaderReader } from '../dicom/header.js';
import { tallyInstance, type InstanceSink, type StoreOutcome } from '../dicom/instance-record.js';
import type { Spool } from '../dicom/spool.js';
import { ErrorCode, GatewayError, dimseStatusFor, toGatewayError } from '../errors.js';
import { hashId, type Logger } from '../logger.js';
import { contentTypeParams, MultipartReader } from './multipart.js';

/** PS3.18 10.5.3 / PS3.4 B.2.3 failure reasons in FailedSOPSequence. */
export const FailureReason = {
  processingFailure: 0x0110,
  outOfResources: 0xa700,
  datasetDoesNotMatch: 0xa900,
  cannotUnderstand: 0xc000,
  /** The instance's StudyInstanceUID is not the one of the request URL (PS3.18 10.5.3.2). */
  studyMismatch: 0xa900,
} as const;

export interface StowInstanceResult {
  sopClassUid: string | null;
  sopInstanceUid: string | null;
  studyInstanceUid: string | null;
  ok: boolean;
  /** For a stored part: new, or a duplicate of an instance already held. */
  outcome?: StoreOutcome;
  failureReason?: number;
  /** Why, for the log and the response's warning text; never PHI. */
  message?: string;
}

export interface StowOutcome {
  results: StowInstanceResult[];
  /** Set when the body as a whole could not be read (no part at all, bad boundary). */
  bodyError?: GatewayError;
}

/** One part being received: its bytes go to a temp file as they arrive, its header is read on the way. */
interface PartFile {
  tmpPath: string;
  fd: number | undefined;
  header: Part10HeaderReader;
  hash: ReturnType<typeof createHash>;
  size: number;
  failure: GatewayError | undefined;
}

export interface StowServiceOptions {
  sink: InstanceSink;
  spool: Spool;
  logger: Logger;
  maxHeaderBytes: number;
}

/**
 * STOW-RS receive. Each part of a multipart/related body is written to the
 * spool's temp folder as it streams in (never the whole body in memory), its
 * header read on the way, and handed to the same sink C-STORE uses: so each
 * instance is acknowledged (listed in ReferencedSOPSequence) only after its
 * file is synced and its row committed, and a re-sent or conflicting instance
 * is treated exactly as over DIMSE (duplicate, new version, identity hold).
 * One part's failure (truncated, unreadable, wrong type) fails that part only.
 */
export class StowService {
  private readonly log: Logger;

  constructor(private readonly o: StowServiceOptions) {
    this.log = o.logger.child({ component: 'dicomweb-stow' });
  }

  async receive(body: Readable, contentType: string, o: { studyInstanceUid?: string; sender: string; remoteAddress?: string }): Promise<StowOutcome> {
    const outcome = await this.receiveParts(body, contentType, o);
    await this.reportTransfer(outcome.results, o);
    return outcome;
  }

  /** One audit event per study this request stored (the instances are committed already: a failure here is logged, never turned into a refusal). */
  private async reportTransfer(results: readonly StowInstanceResult[], o: { sender: string; remoteAddress?: string }): Promise<void> {
    if (!this.o.sink.transferEnded) return;
    const studies = new Map<string, { stored: number; duplicates: number }>();
    for (const r of results) if (r.ok && r.studyInstanceUid) tallyInstance(studies, r.studyInstanceUid, r.outcome ?? 'stored');
    if (studies.size === 0) return;
    await this.o.sink
      .transferEnded({ protocol: 'stow-rs', sender: o.sender, remoteAddress: o.remoteAddress ?? '?', studies })
      .catch((err: unknown) => this.log.error('could not audit the instances received', { error: (err as Error).message }));
  }

  private async receiveParts(body: Readable, contentType: string, o: { studyInstanceUid?: string; sender: string }): Promise<StowOutcome> {
    const { mediaType, params } = contentTypeParams(contentType);
    if (mediaType !== 'multipart/related') throw new GatewayError(ErrorCode.unsupported, 'STOW-RS takes multipart/related; type="application/dicom"');
    const type = (params['type'] ?? 'application/dicom').toLowerCase();
    if (type !== 'application/dicom')
      throw new GatewayError(ErrorCode.unsupported, `multipart/related type "${type}" is not supported: only application/dicom (no bulk-data/metadata parts)`);
    const boundary = params['boundary'];
    // RFC 2046 caps a boundary at 70 characters; Orthanc's DICOMweb plugin sends 73: be lenient, within reason.
    if (!boundary || boundary.length > 200) throw new GatewayError(ErrorCode.invalidInput, 'multipart/related without a valid boundary');
    const reader = new MultipartReader(boundary);
    const results: StowInstanceResult[] = [];
    let current: PartFile | undefined;
    let partType = type;
    try {
      for await (const chunk of body as AsyncIterable<Buffer>) {
        for (const ev of reader.push(chunk)) {
          if (ev.type === 'part') {
            partType = contentTypeParams(ev.headers['content-type'] ?? type).mediaType || type;
            current = this.openPart();
            if (partType !== 'application/dicom') current.failure = new GatewayError(ErrorCode.unsupported, `part of type ${partType}`);
          } else if (ev.type === 'data') {
            if (current) this.write(current, ev.data);
          } else if (current) {
            const part = current;
            current = undefined;
            // One part at a time: the next bytes are read only once this one is stored and answered.
            results.push(await this.storePart(part, o, true));
          }
        }
      }
    } catch (err) {
      // The client went away mid-body (or a malformed body): a part still open was never acknowledged.
      if (current) this.drop(current);
      current = undefined;
      const bodyError = err instanceof GatewayError ? err : new GatewayError(ErrorCode.invalidInput, 'the request body was cut off', { cause: err });
      this.log.warn('STOW request body ended early', {
        stored: results.filter((r) => r.ok).length,
        failed: results.filter((r) => !r.ok).length,
        reason: bodyError.message,
      });
      return { results, bodyError };
    }
    if (current) {
      // The body ended inside a part (no closing delimiter): that part is truncated, whatever its bytes say.
      results.push(await this.storePart(current, o, false));
    }
    if (reader.partCount === 0) return { results, bodyError: new GatewayError(ErrorCode.invalidInput, 'multipart body without any part') };
    this.log.info('STOW request stored', { sender: o.sender, stored: results.filter((r) => r.ok).length, failed: results.filter((r) => !r.ok).length });
    return { results };
  }

  private openPart(): PartFile {
    const part: PartFile = {
      tmpPath: '',
      fd: undefined,
      header: new Part10HeaderReader(this.o.maxHeaderBytes),
      hash: createHash('sha256'),
      size: 0,
      failure: undefined,
    };
    try {
      if (!this.o.spool.hasRoom()) {
        part.failure = new GatewayError(ErrorCode.outOfResources, 'storage below its free-space watermark');
        return part;
      }
      part.tmpPath = this.o.spool.newTmpPath();
      part.fd = openSync(part.tmpPath, 'wx');
    } catch (err) {
      part.failure = toGatewayError(err);
    }
    return part;
  }

  private write(part: PartFile, data: Buffer): void {
    if (part.failure || part.fd === undefined) return;
    part.header.push(data);
    part.hash.update(data);
    part.size += data.length;
    try {
      let off = 0;
      while (off < data.length) off += writeSync(part.fd, data, off, data.length - off);
    } catch (err) {
      part.failure = toGatewayError(err);
    }
  }

  private drop(part: PartFile): void {
    part.header.dispose();
    if (part.fd !== undefined) {
      try {
        closeSync(part.fd);
      } catch {
        // already closed
      }
      part.fd = undefined;
    }
    if (part.tmpPath) this.o.spool.discard(part.tmpPath);
  }

  private async storePart(part: PartFile, o: { studyInstanceUid?: string; sender: string }, ended: boolean): Promise<StowInstanceResult> {
    const result: StowInstanceResult = { sopClassUid: null, sopInstanceUid: null, studyInstanceUid: null, ok: false };
    try {
      if (part.failure) throw part.failure;
      let header;
      try {
        header = await part.header.finish();
      } catch (err) {
        throw ended ? err : new GatewayError(ErrorCode.unreadableData, 'the body ended inside this part', { cause: err });
      }
      result.sopClassUid = header.sopClassUid;
      result.sopInstanceUid = header.sopInstanceUid;
      result.studyInstanceUid = header.studyInstanceUid;
      if (!ended) throw new GatewayError(ErrorCode.unreadableData, 'the body ended inside this part (no closing boundary)');
      if (o.studyInstanceUid && header.studyInstanceUid !== o.studyInstanceUid) {
        result.failureReason = FailureReason.studyMismatch;
        throw new GatewayError(ErrorCode.invalidInput, 'StudyInstanceUID differs from the one in the request URL');
      }
      const outcome = await this.o.sink.storeInstance({
        ...header,
        tmpPath: part.tmpPath,
        fd: part.fd,
        sizeBytes: part.size,
        sha256: part.hash.digest('hex'),
        callingAe: o.sender,
      });
      if (part.fd !== undefined) closeSync(part.fd);
      part.fd = undefined;
      result.ok = true;
      result.outcome = outcome;
      this.log.debug('STOW instance stored', { sopUid: hashId(header.sopInstanceUid), outcome });
      return result;
    } catch (err) {
      result.sopClassUid ??= part.header.metaUids?.sopClassUid ?? null;
      result.sopInstanceUid ??= part.header.metaUids?.sopInstanceUid ?? null;
      this.drop(part);
      const ge = toGatewayError(err);
      result.failureReason ??= failureReasonFor(ge);
      result.message = ge.code === 'internal' ? 'internal error' : ge.message;
      this.log.warn('STOW instance refused', {
        sopUid: result.sopInstanceUid ? hashId(result.sopInstanceUid) : null,
        failureReason: `0x${result.failureReason.toString(16).padStart(4, '0')}`,
        code: ge.code,
        reason: ge.code === 'internal' ? ((ge.cause as Error | undefined)?.message ?? ge.message) : ge.message,
      });
      return result;
    }
  }
}

/** The DIMSE status C-STORE would answer, as PS3.18 asks (FailureReason uses the C-STORE status codes). */
function failureReasonFor(ge: GatewayError): number {
  if (ge.code === 'internal') return FailureReason.processingFailure;
  return dimseStatusFor(ge);
}
