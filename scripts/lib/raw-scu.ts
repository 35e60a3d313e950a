/**
 * A C-STORE / C-ECHO SCU for tests, the demo and benchmarks: sends each Part 10
 * file's own dataset bytes (no parsing, no re-encoding), so it can also send a
 * deliberately broken dataset, and reports every status.
 */
import { readFileSync } from 'node:fs';
import dimse from 'dcmjs-dimse';
import { splitPart10 } from '../../src/dicom/part10.js';

const { Client, Dataset } = dimse;
// dcmjs-dimse logs every PDU at INFO by default: on stdout of a benchmark that is load on the cores it measures.
dimse.log.setLevel('silent');
const { CStoreRequest, CEchoRequest } = dimse.requests;

export interface ScuTarget {
  host: string;
  port: number;
  callingAe: string;
  calledAe: string;
}

/** One instance as it goes on the wire: the dataset bytes after the Part 10 meta header. */
export interface RawInstance {
  sopClassUid: string;
  sopInstanceUid: string;
  transferSyntaxUid: string;
  dataset: Buffer;
}

export interface ScuResult {
  /** One per request, in order; undefined when no response came. */
  statuses: (number | undefined)[];
  rejected?: { result: number; source: number; reason: number };
  error?: string;
}

/** Splits a Part 10 file into its meta UIDs and the dataset bytes that follow the meta group. */
export function rawFromPart10(bytes: Buffer): RawInstance {
  return splitPart10(bytes);
}

export function rawFromFile(path: string): RawInstance {
  return rawFromPart10(readFileSync(path));
}

/**
 * A Dataset that puts the given bytes on the wire unchanged: dcmjs-dimse would
 * otherwise parse and re-encode every file (slower, not byte-identical, and it
 * could not send a deliberately broken dataset).
 */
class RawDataset extends Dataset {
  constructor(private readonly raw: RawInstance) {
    super({ SOPClassUID: raw.sopClassUid, SOPInstanceUID: raw.sopInstanceUid }, raw.transferSyntaxUid);
  }
  override getDenaturalizedDataset(): Buffer {
    return this.raw.dataset;
  }
}

type AnyRequest = InstanceType<
  typeof dimse.requests.CStoreRequest | typeof dimse.requests.CEchoRequest | typeof dimse.requests.NCreateRequest | typeof dimse.requests.NSetRequest
>;

/** Any dcmjs-dimse requests on one association (an independent implementation: N-CREATE / N-SET for MPPS, say); each status. */
export function sendRequests(target: ScuTarget, requests: AnyRequest[], timeoutMs = 30_000): Promise<ScuResult> {
  return run(target, requests, timeoutMs);
}

function run(target: ScuTarget, requests: AnyRequest[], timeoutMs: number): Promise<ScuResult> {
  return new Promise((resolve) => {
    const result: ScuResult = { statuses: requests.map(() => undefined) };
    const client = new Client();
    requests.forEach((req, i) => {
      req.on('response', (response: { getStatus(): number }) => {
        result.statuses[i] = response.getStatus();
      });
      client.addRequest(req);
    });
    let settled = false;
    const finish = (): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(result);
    };
    const timer = setTimeout(() => {
      result.error ??= 'timed out';
      finish();
    }, timeoutMs);
    client.on('associationRejected', (r: { result: number; source: number; reason: number }) => {
      result.rejected = r;
    });
    client.on('networkError', (e: Error) => {
      result.error ??= e.message;
    });
    client.on('closed', finish);
    client.send(target.host, target.port, target.callingAe, target.calledAe, {
      connectTimeout: timeoutMs,
      associationTimeout: timeoutMs,
      pduTimeout: timeoutMs,
    });
  });
}

/** C-STOREs the instances on one association, bytes as given; resolves with each status. */
export function storeInstances(target: ScuTarget, instances: RawInstance[], timeoutMs = 30_000): Promise<ScuResult> {
  return run(
    target,
    instances.map((raw) => new CStoreRequest(new RawDataset(raw))),
    timeoutMs,
  );
}

export function storeFiles(target: ScuTarget, files: string[], timeoutMs = 30_000): Promise<ScuResult> {
  return storeInstances(target, files.map(rawFromFile), timeoutMs);
}

export function echo(target: ScuTarget, timeoutMs = 10_000): Promise<ScuResult> {
  return run(target, [new CEchoRequest()], timeoutMs);
}
