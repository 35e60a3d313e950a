import { api } from 'dicomweb-client';
import XMLHttpRequest from 'xhr2';
import type { Destination } from '../config/schema.js';
import type { Logger } from '../logger.js';
import { failAll, loadBytes, type DestinationSender, type InstanceResult, type SendableInstance, type SendFailure } from './destination.js';
import { classifyStoreStatus } from './dimse.destination.js';

type DicomwebConfig = Extract<Destination, { type: 'dicomweb' }>;

/** What we call on dicomweb-client: its shipped typings omit `request` on QIDO and require options we do not use. */
interface StowClient {
  storeInstances(options: { datasets: ArrayBuffer[]; request: { instance: XMLHttpRequest } }): Promise<unknown>;
  searchForStudies(options: { queryParams: Record<string, string>; request: { instance: XMLHttpRequest } }): Promise<unknown>;
}

interface HttpOutcome {
  status: number;
  body: unknown;
  timedOut: boolean;
}

// PS3.18 / PS3.3 tags in the STOW-RS response (DICOM JSON, PS3.18 F.2).
const FAILED_SOP_SEQUENCE = '00081198';
const REFERENCED_SOP_SEQUENCE = '00081199';
const REFERENCED_SOP_INSTANCE_UID = '00081155';
const FAILURE_REASON = '00081197';

type JsonDataset = Record<string, { vr?: string; Value?: unknown[] } | undefined>;

function parseBody(body: unknown): JsonDataset | undefined {
  let value = body;
  if (typeof value === 'string') {
    if (!value.trim().startsWith('{') && !value.trim().startsWith('[')) return undefined;
    try {
      value = JSON.parse(value);
    } catch {
      return undefined;
    }
  }
  if (Array.isArray(value)) value = value[0];
  return value && typeof value === 'object' ? (value as JsonDataset) : undefined;
}

function items(ds: JsonDataset | undefined, tag: string): JsonDataset[] {
  const v = ds?.[tag]?.Value;
  return Array.isArray(v) ? (v.filter((x) => x && typeof x === 'object') as JsonDataset[]) : [];
}

function first(ds: JsonDataset, tag: string): unknown {
  return ds[tag]?.Value?.[0];
}

/** HTTP status of a whole STOW request (PS3.18 10.5.3) when the body names no instance. */
export function classifyHttpStatus(status: number, timedOut = false): SendFailure | undefined {
  if (timedOut) return { transient: true, message: 'STOW-RS timed out' };
  if (status === 200 || status === 202) return undefined;
  if (status === 0) return { transient: true, message: 'STOW-RS connection failed (refused, reset or unreachable)' };
  if (status === 408 || status === 429) return { transient: true, message: `STOW-RS HTTP ${status}` };
  if (status === 409) return { transient: false, message: 'STOW-RS HTTP 409 conflict' };
  if (status >= 500) return { transient: true, message: `STOW-RS HTTP ${status}` };
  if (status >= 400) return { transient: false, message: `STOW-RS HTTP ${status}` };
  return { transient: true, message: `STOW-RS unexpected HTTP ${status}` };
}

/**
 * Turns a STOW-RS answer into one result per instance: 200 all stored; 202 and
 * 409 per instance from FailedSOPSequence (with its FailureReason) and
 * ReferencedSOPSequence; other statuses apply to the whole batch.
 */
export function stowResults(batch: readonly { sopInstanceUid: string }[], outcome: HttpOutcome): InstanceResult[] {
  const whole = classifyHttpStatus(outcome.status, outcome.timedOut);
  const ds = outcome.timedOut ? undefined : parseBody(outcome.body);
  const failed = new Map<string, number | undefined>();
  for (const item of items(ds, FAILED_SOP_SEQUENCE)) {
    const uid = first(item, REFERENCED_SOP_INSTANCE_UID);
    const reason = first(item, FAILURE_REASON);
    if (typeof uid === 'string') failed.set(uid, typeof reason === 'number' ? reason : undefined);
  }
  const refItems = items(ds, REFERENCED_SOP_SEQUENCE);
  const referenced = new Set(refItems.map((i) => first(i, REFERENCED_SOP_INSTANCE_UID)).filter((u): u is string => typeof u === 'string'));
  const perInstance = outcome.status === 200 || outcome.status === 202 || outcome.status === 409;
  if (!perInstance || (outcome.status === 409 && failed.size === 0 && referenced.size === 0)) {
    return failAll(batch, whole ?? { transient: true, message: `STOW-RS HTTP ${outcome.status}` });
  }
  return batch.map((inst): InstanceResult => {
    const uid = inst.sopInstanceUid;
    if (failed.has(uid)) {
      const reason = failed.get(uid);
      if (reason === undefined) return { sopInstanceUid: uid, ok: false, failure: { transient: false, message: 'STOW-RS: instance failed (no reason given)' } };
      const c = classifyStoreStatus(reason);
      // a FailureReason in the success/warning range inside FailedSOPSequence is still a failure
      const failure = c.ok ? { transient: false, message: `failure reason 0x${reason.toString(16)}` } : c.failure;
      return { sopInstanceUid: uid, ok: false, failure: { ...failure, message: `STOW-RS: ${failure.message}` } };
    }
    if (referenced.has(uid)) return { sopInstanceUid: uid, ok: true };
    if (outcome.status === 409) return { sopInstanceUid: uid, ok: false, failure: { transient: false, message: 'STOW-RS HTTP 409 conflict' } };
    // a response that lists the stored instances but not this one: not acknowledged, send it again
    if (refItems.length > 0) return { sopInstanceUid: uid, ok: false, failure: { transient: true, message: 'STOW-RS: instance not acknowledged by the receiver' } };
    return { sopInstanceUid: uid, ok: true };
  });
}

/**
 * STOW-RS sender on dicomweb-client + xhr2 (the library needs an
 * XMLHttpRequest in Node). We hand the library our own xhr2 instance so we can
 * read the HTTP status it hides (it resolves 200 and 202 alike), bound the
 * request with our own timer (the library has no timeout; xhr2's `timeout`
 * is only a socket idle timeout and its `abort()` never settles the library's
 * promise), keep `verbose` off (it dumps whole requests, PHI, to the console)
 * and ask for a DICOM JSON answer.
 */
export class DicomwebDestinationSender implements DestinationSender {
  readonly id: string;
  private readonly log: Logger;
  private readonly client: StowClient;
  private readonly timeoutMs: number;
  private readonly maxRequestBytes: number;
  private readonly url: string;

  constructor(config: DicomwebConfig, options: { callingAeTitle: string; logger: Logger }) {
    this.id = config.id;
    this.log = options.logger.child({ component: 'dicomweb-destination', destination: config.id });
    this.timeoutMs = config.timeoutSeconds * 1000;
    this.maxRequestBytes = config.maxRequestMegabytes * 1024 * 1024;
    this.url = config.url.replace(/\/+$/, '');
    const acceptJson = (xhr: XMLHttpRequest, meta: { method: string }): XMLHttpRequest => {
      if (meta.method.toLowerCase() === 'post') xhr.setRequestHeader('Accept', 'application/dicom+json');
      return xhr;
    };
    this.client = new api.DICOMwebClient({
      url: this.url,
      headers: { ...config.headers },
      verbose: false,
      singlepart: false,
      requestHooks: [acceptJson],
    }) as unknown as StowClient;
  }

  async verify(): Promise<{ ok: boolean; detail: string }> {
    const r = await this.call((instance) => this.client.searchForStudies({ queryParams: { limit: '1' }, request: { instance } }));
    if (r.timedOut) return { ok: false, detail: `QIDO-RS ${this.url}/studies timed out after ${this.timeoutMs / 1000}s` };
    if (r.status === 200 || r.status === 204) return { ok: true, detail: `QIDO-RS ${this.url}/studies HTTP ${r.status}` };
    return { ok: false, detail: r.status === 0 ? `QIDO-RS ${this.url}: connection failed` : `QIDO-RS ${this.url}/studies HTTP ${r.status}` };
  }

  async send(batch: readonly SendableInstance[]): Promise<InstanceResult[]> {
    if (batch.length === 0) return [];
    // STOW-RS sends one multipart body, which dicomweb-client builds in memory: the instances are loaded one at a
    // time and a request goes out whenever the next one would pass `maxRequestMegabytes`, so memory stays bounded
    // whatever the batch size and instance size. A file that cannot be loaded fails what is left of the batch
    // (the forwarding service reports its own error for it).
    const results: InstanceResult[] = [];
    let part: SendableInstance[] = [];
    let datasets: ArrayBuffer[] = [];
    let bytes = 0;
    try {
      for (const i of batch) {
        const b = await loadBytes(i);
        if (part.length > 0 && bytes + b.length > this.maxRequestBytes) {
          results.push(...(await this.stow(part, datasets)));
          part = [];
          datasets = [];
          bytes = 0;
        }
        part.push(i);
        datasets.push(b as unknown as ArrayBuffer);
        bytes += b.length;
      }
      if (part.length > 0) results.push(...(await this.stow(part, datasets)));
      return results;
    } catch (err) {
      return [...results, ...failAll(batch.slice(results.length), { transient: true, message: `internal error: ${err instanceof Error ? err.message : String(err)}` })];
    }
  }

  private async stow(part: readonly SendableInstance[], datasets: ArrayBuffer[]): Promise<InstanceResult[]> {
    const outcome = await this.call((instance) => this.client.storeInstances({ datasets, request: { instance } }));
    const results = stowResults(part, outcome);
    const failed = results.filter((r) => !r.ok).length;
    if (failed > 0) this.log.warn('STOW-RS failures', { status: outcome.status, timedOut: outcome.timedOut, failed, of: part.length });
    return results;
  }

  /** Runs one library call on a fresh xhr2 instance; resolves with the HTTP status and body, never rejects. */
  private call(run: (instance: XMLHttpRequest) => Promise<unknown>): Promise<HttpOutcome> {
    const xhr = new XMLHttpRequest();
    xhr.timeout = this.timeoutMs;
    return new Promise<HttpOutcome>((resolve) => {
      let done = false;
      const settle = (o: HttpOutcome): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        resolve(o);
      };
      const timer = setTimeout(() => {
        try {
          xhr.abort();
        } catch {
          /* already finished */
        }
        settle({ status: 0, body: undefined, timedOut: true });
      }, this.timeoutMs);
      let timedOut = false;
      xhr.ontimeout = () => {
        timedOut = true;
      };
      let pending: Promise<unknown>;
      try {
        pending = run(xhr);
      } catch (err) {
        settle({ status: 0, body: String(err), timedOut: false });
        return;
      }
      pending.then(
        (body) => settle({ status: xhr.status, body, timedOut: false }),
        (err: { status?: number; response?: unknown }) => settle({ status: typeof err?.status === 'number' ? err.status : 0, body: err?.response, timedOut }),
      );
    });
  }
}
