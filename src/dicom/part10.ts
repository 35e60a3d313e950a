/**
 * DICOM Part 10 file meta information (PS3.10 7.1): the one reader and the one
 * writer of group 0002 in the gateway. The dataset header up to Pixel Data is
 * read by header.ts (DatasetHeaderReader), which takes the dataset that
 * `readFileMeta` finds the start of.
 */
import { ErrorCode, GatewayError } from '../errors.js';
import { IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME } from './uids.js';

/** Explicit VRs whose length field is 4 bytes after 2 reserved bytes (PS3.5 7.1.2). */
export const LONG_VRS: ReadonlySet<string> = new Set(['OB', 'OD', 'OF', 'OL', 'OV', 'OW', 'SQ', 'SV', 'UC', 'UN', 'UR', 'UT', 'UV']);

const PREAMBLE = 128;
const UNDEFINED_LENGTH = 0xffffffff;

export interface FileMeta {
  /** Offset of the first dataset byte (just past the last group 0002 element). */
  end: number;
  transferSyntaxUid: string;
  sopClassUid: string;
  sopInstanceUid: string;
  implementationClassUid: string;
  /** (0002,0016) Source Application Entity Title, when present. */
  sourceAe: string;
}

function unreadable(message: string): GatewayError {
  return new GatewayError(ErrorCode.unreadableData, message);
}

/** True when `bytes` starts like a Part 10 file (preamble + DICM). */
export function hasPart10Prefix(bytes: Buffer): boolean {
  return bytes.length >= PREAMBLE + 4 && bytes.toString('latin1', PREAMBLE, PREAMBLE + 4) === 'DICM';
}

/**
 * Walks the group 0002 elements (explicit VR LE) instead of trusting
 * (0002,0000) alone: some writers get the group length wrong. `bytes` may be
 * just the head of a file, as long as it holds the whole meta group. Throws a
 * GatewayError (unreadable data) on anything else.
 */
export function readFileMeta(bytes: Buffer): FileMeta {
  if (!hasPart10Prefix(bytes)) throw unreadable('not a DICOM Part 10 file (no DICM prefix)');
  const values = new Map<number, string>();
  let o = PREAMBLE + 4;
  while (o + 8 <= bytes.length && bytes.readUInt16LE(o) === 0x0002) {
    const element = bytes.readUInt16LE(o + 2);
    const vr = bytes.toString('latin1', o + 4, o + 6);
    const long = LONG_VRS.has(vr);
    if (long && o + 12 > bytes.length) throw unreadable('Part 10 meta header is truncated');
    const len = long ? bytes.readUInt32LE(o + 8) : bytes.readUInt16LE(o + 6);
    const start = o + (long ? 12 : 8);
    if (len === UNDEFINED_LENGTH || start + len > bytes.length) throw unreadable('Part 10 meta header is truncated');
    if (vr === 'UI' || vr === 'AE') values.set(element, bytes.toString('latin1', start, start + len).replace(/[\0 ]+$/, ''));
    o = start + len;
  }
  const transferSyntaxUid = values.get(0x0010);
  if (!transferSyntaxUid) throw unreadable('Part 10 meta header has no transfer syntax');
  return {
    end: o,
    transferSyntaxUid,
    sopClassUid: values.get(0x0002) ?? '',
    sopInstanceUid: values.get(0x0003) ?? '',
    implementationClassUid: values.get(0x0012) ?? '',
    sourceAe: (values.get(0x0016) ?? '').trim(),
  };
}

/** The meta header UIDs and the dataset bytes after them (a view, no copy). */
export interface Part10Parts {
  sopClassUid: string;
  sopInstanceUid: string;
  transferSyntaxUid: string;
  dataset: Buffer;
}

export function splitPart10(bytes: Buffer): Part10Parts {
  const m = readFileMeta(bytes);
  return { sopClassUid: m.sopClassUid, sopInstanceUid: m.sopInstanceUid, transferSyntaxUid: m.transferSyntaxUid, dataset: bytes.subarray(m.end) };
}

export interface FileMetaFields {
  transferSyntaxUid: string;
  /** Omitted only for a synthetic header handed to a parser (never in a file we keep). */
  sopClassUid?: string;
  sopInstanceUid?: string;
  sourceAe?: string;
  implementationClassUid?: string;
  implementationVersionName?: string;
}

function metaElement(element: number, vr: string, value: Buffer): Buffer {
  const long = LONG_VRS.has(vr);
  const h = Buffer.alloc(long ? 12 : 8);
  h.writeUInt16LE(0x0002, 0);
  h.writeUInt16LE(element, 2);
  h.write(vr, 4, 'latin1');
  if (long) h.writeUInt32LE(value.length, 8);
  else h.writeUInt16LE(value.length, 6);
  return Buffer.concat([h, value]);
}

const ui = (s: string): Buffer => Buffer.from(s.length % 2 ? `${s}\0` : s, 'latin1');
const text = (s: string): Buffer => Buffer.from(s.length % 2 ? `${s} ` : s, 'latin1');

/** PS3.10 7.1 file meta information (preamble, DICM, group 0002 with its group length), explicit VR little endian. */
export function writeFileMeta(f: FileMetaFields): Buffer {
  const body = Buffer.concat([
    metaElement(0x0001, 'OB', Buffer.from([0x00, 0x01])),
    ...(f.sopClassUid !== undefined ? [metaElement(0x0002, 'UI', ui(f.sopClassUid))] : []),
    ...(f.sopInstanceUid !== undefined ? [metaElement(0x0003, 'UI', ui(f.sopInstanceUid))] : []),
    metaElement(0x0010, 'UI', ui(f.transferSyntaxUid)),
    metaElement(0x0012, 'UI', ui(f.implementationClassUid ?? IMPLEMENTATION_CLASS_UID)),
    metaElement(0x0013, 'SH', text(f.implementationVersionName ?? IMPLEMENTATION_VERSION_NAME)),
    ...(f.sourceAe ? [metaElement(0x0016, 'AE', text(f.sourceAe))] : []),
  ]);
  const groupLength = Buffer.alloc(4);
  groupLength.writeUInt32LE(body.length, 0);
  return Buffer.concat([Buffer.alloc(PREAMBLE), Buffer.from('DICM', 'latin1'), metaElement(0x0000, 'UL', groupLength), body]);
}
