import { randomUUID } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import { api } from 'dicomweb-client';
import XMLHttpRequest from 'xhr2';
import type { Destination } from '../config/schema.js';
import type { Logger } from '../logger.js';
import {
  failAll,
  fileStream,
  loadBytes,
  part10Stream,
  readFailure,
  readPieces,
  type DestinationSender,
  type InstanceResult,
  type Part10Stream,
  type SendableInstance,
  type SendFailure,
} from './destination.js';
import { classifyStoreStatus } from './dimse.destination.js';

type DicomwebConfig = Extract<Destination, { type: 'dicomweb' }>;

/** What we call on dicomweb-client: its shipped typings omit `request` on QIDO and require options we do not use. */
interface StowClient {
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
    if (refItems.length > 0)
      return { sopInstanceUid: uid, ok: false, failure: { transient: true, message: 'STOW-RS: instance not acknowledged by the receiver' } };
    return { sopInstanceUid: uid, ok: true };
  });
}

/**
 * STOW-RS sender: the store itself is a streamed multipart POST on node's http
 * client (postMultipart); the reachability check is a QIDO-RS call through
 * dicomweb-client + xhr2 (the library needs an XMLHttpRequest in Node), on our
 * own xhr2 instance so we can read the HTTP status it hides, bounded by our
 * own timer (the library has no timeout), with `verbose` off (it dumps whole
 * requests, PHI, to the console).
 */
export class DicomwebDestinationSender implements DestinationSender {
  readonly id: string;
  private readonly log: Logger;
  private readonly client: StowClient;
  private readonly timeoutMs: number;
  private readonly maxRequestBytes: number;
  private readonly url: string;
  private readonly headers: Record<string, string>;

  constructor(config: DicomwebConfig, options: { callingAeTitle: string; logger: Logger }) {
    this.id = config.id;
    this.log = options.logger.child({ component: 'dicomweb-destination', destination: config.id });
    this.timeoutMs = config.timeoutSeconds * 1000;
    this.maxRequestBytes = config.maxRequestMegabytes * 1024 * 1024;
    this.url = config.url.replace(/\/+$/, '');
    this.headers = { ...config.headers };
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
    // A request goes out whenever the next instance would pass `maxRequestMegabytes` (receivers limit request
    // sizes); an instance larger than that goes alone. Streamed instances are never in memory whole; an instance
    // handed as bytes or a loader is loaded just before its request is built. A file that cannot be loaded fails
    // what is left of the batch (the forwarding service reports its own error for it).
    const results: InstanceResult[] = [];
    let part: SendableInstance[] = [];
    let streams: Part10Stream[] = [];
    let bytes = 0;
    try {
      for (const i of batch) {
        let stream: Part10Stream;
        if ('file' in i) {
          try {
            stream = await fileStream(i.file);
          } catch (err) {
            // A stored file that cannot be read fails alone, after what is queued before it (results stay in order).
            if (part.length > 0) results.push(...(await this.stow(part, streams)));
            part = [];
            streams = [];
            bytes = 0;
            results.push({
              sopInstanceUid: i.sopInstanceUid,
              ok: false,
              failure: { transient: false, message: `could not read the instance: ${readFailure(err)}` },
            });
            continue;
          }
        } else {
          stream = 'stream' in i ? i.stream : part10Stream([await loadBytes(i)], 0);
        }
        if (part.length > 0 && bytes + stream.length > this.maxRequestBytes) {
          results.push(...(await this.stow(part, streams)));
          part = [];
          streams = [];
          bytes = 0;
        }
        part.push(i);
        streams.push(stream);
        bytes += stream.length;
      }
      if (part.length > 0) results.push(...(await this.stow(part, streams)));
      return results;
    } catch (err) {
      return [
        ...results,
        ...failAll(batch.slice(results.length), { transient: true, message: `internal error: ${err instanceof Error ? err.message : String(err)}` }),
      ];
    }
  }

  private async stow(part: readonly SendableInstance[], streams: readonly Part10Stream[]): Promise<InstanceResult[]> {
    const outcome = await this.postMultipart(streams);
    const results = stowResults(part, outcome);
    const failed = results.filter((r) => !r.ok).length;
    if (failed > 0) this.log.warn('STOW-RS failures', { status: outcome.status, timedOut: outcome.timedOut, failed, of: part.length });
    return results;
  }

  /**
   * STOW-RS (PS3.18 10.5) with node's http client rather than dicomweb-client, which builds the whole multipart body
   * in memory: here each part is read from its pieces as the socket takes it (write / 'drain'), with a
   * Content-Length computed up front (every length is known), so a 2.5 GiB instance costs a few MiB. The timeout
   * is an idle timeout (no byte moved for `timeoutSeconds`), since a large body legitimately takes longer.
   */
  private postMultipart(streams: readonly Part10Stream[]): Promise<HttpOutcome> {
    const boundary = `srgw-${randomUUID()}`;
    const heads = streams.map(() => Buffer.from(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`, 'latin1'));
    const crlf = Buffer.from('\r\n', 'latin1');
    const tail = Buffer.from(`--${boundary}--\r\n`, 'latin1');
    const length = heads.reduce((n, h) => n + h.length, 0) + streams.reduce((n, x) => n + x.length + crlf.length, 0) + tail.length;
    const url = new URL(`${this.url}/studies`);
    const client = url.protocol === 'https:' ? https : http;
    return new Promise<HttpOutcome>((resolve) => {
      let settled = false;
      const settle = (o: HttpOutcome): void => {
        if (settled) return;
        settled = true;
        resolve(o);
      };
      const req = client.request(url, {
        method: 'POST',
        headers: {
          ...this.headers,
          'Content-Type': `multipart/related; type="application/dicom"; boundary=${boundary}`,
          'Content-Length': String(length),
          Accept: 'application/dicom+json',
        },
      });
      req.setTimeout(this.timeoutMs, () => {
        req.destroy(new Error('idle timeout'));
        settle({ status: 0, body: undefined, timedOut: true });
      });
      req.on('error', () => settle({ status: 0, body: undefined, timedOut: false }));
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          // an answer names the instances; a receiver that sends more than this is not answering STOW-RS
          if (size < 16 * 1024 * 1024) chunks.push(c);
          size += c.length;
        });
        res.on('end', () => settle({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), timedOut: false }));
        res.on('error', () => settle({ status: res.statusCode ?? 0, body: undefined, timedOut: false }));
      });
      const write = async (): Promise<void> => {
        const put = (b: Buffer): Promise<void> | undefined => {
          if (req.write(b)) return undefined;
          return new Promise<void>((ok, fail) => {
            const onDrain = (): void => {
              req.off('close', onClose);
              ok();
            };
            const onClose = (): void => {
              req.off('drain', onDrain);
              fail(new Error('request closed'));
            };
            req.once('drain', onDrain);
            req.once('close', onClose);
          });
        };
        for (let i = 0; i < streams.length; i++) {
          await put(heads[i]!);
          for await (const chunk of readPieces(streams[i]!)) {
            if (req.destroyed) return;
            await put(chunk);
          }
          await put(crlf);
        }
        req.end(tail);
      };
      write().catch((err: unknown) => {
        // a file that could not be read: the receiver must not take a truncated body for an instance
        req.destroy(err instanceof Error ? err : new Error(String(err)));
        settle({ status: 0, body: undefined, timedOut: false });
      });
    });
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
