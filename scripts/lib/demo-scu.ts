/**
 * The demo PACS's C-STORE SCU: sends each Part 10 file's own dataset bytes on
 * one association (the technique of test/helpers/dicom-peers.ts, kept here so
 * scripts do not import from test/).
 */
import { readFileSync } from 'node:fs';
import dimse from 'dcmjs-dimse';

const { Client, Dataset } = dimse;
const { CStoreRequest } = dimse.requests;

export interface ScuTarget {
  host: string;
  port: number;
  callingAe: string;
  calledAe: string;
}

interface RawInstance {
  sopClassUid: string;
  sopInstanceUid: string;
  transferSyntaxUid: string;
  dataset: Buffer;
}

export interface StoreResult {
  /** One per file, in order; undefined when no response came. */
  statuses: (number | undefined)[];
  error?: string;
}

/** Splits a Part 10 file (explicit VR little endian meta group) into its meta UIDs and the dataset bytes after it. */
function rawFromPart10(bytes: Buffer): RawInstance {
  if (bytes.toString('latin1', 128, 132) !== 'DICM') throw new Error('not a Part 10 file');
  const metaEnd = 144 + bytes.readUInt32LE(140);
  const meta: Record<number, string> = {};
  let o = 144;
  while (o < metaEnd) {
    const element = bytes.readUInt16LE(o + 2);
    const vr = bytes.toString('latin1', o + 4, o + 6);
    const long = ['OB', 'OW', 'UN', 'SQ', 'UT'].includes(vr);
    const len = long ? bytes.readUInt32LE(o + 8) : bytes.readUInt16LE(o + 6);
    const hdr = long ? 12 : 8;
    meta[element] = bytes.toString('latin1', o + hdr, o + hdr + len).replace(/[\0 ]+$/, '');
    o += hdr + len;
  }
  return { sopClassUid: meta[0x0002] ?? '', sopInstanceUid: meta[0x0003] ?? '', transferSyntaxUid: meta[0x0010] ?? '', dataset: bytes.subarray(metaEnd) };
}

/** A Dataset that puts the given bytes on the wire unchanged (dcmjs-dimse would otherwise parse and re-encode). */
class RawDataset extends Dataset {
  constructor(private readonly raw: RawInstance) {
    super({ SOPClassUID: raw.sopClassUid, SOPInstanceUID: raw.sopInstanceUid }, raw.transferSyntaxUid);
  }
  override getDenaturalizedDataset(): Buffer {
    return this.raw.dataset;
  }
}

/** C-STOREs the files on one association; resolves (never rejects) with each status. */
export function storeFiles(target: ScuTarget, files: string[], timeoutMs = 30_000): Promise<StoreResult> {
  return new Promise((resolve) => {
    const result: StoreResult = { statuses: files.map(() => undefined) };
    const client = new Client();
    try {
      files.forEach((file, i) => {
        const req = new CStoreRequest(new RawDataset(rawFromPart10(readFileSync(file))));
        req.on('response', (response: { getStatus(): number }) => {
          result.statuses[i] = response.getStatus();
        });
        client.addRequest(req);
      });
    } catch (err) {
      resolve({ ...result, error: (err as Error).message });
      return;
    }
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
      result.error ??= `association rejected (result ${r.result}, source ${r.source}, reason ${r.reason})`;
    });
    client.on('networkError', (e: Error) => {
      result.error ??= e.message;
    });
    client.on('closed', finish);
    client.send(target.host, target.port, target.callingAe, target.calledAe, { connectTimeout: timeoutMs, associationTimeout: timeoutMs, pduTimeout: timeoutMs });
  });
}
