import { createInflateRaw, type InflateRaw } from 'node:zlib';
import dcmjs, { type DicomDataDict } from 'dcmjs';
import { convertBytes } from 'dicom-character-set';
import { ErrorCode, GatewayError } from '../errors.js';
import type { InstanceHeader, IocmRejection } from './instance-record.js';
import { LONG_VRS, hasPart10Prefix, readFileMeta, writeFileMeta, type FileMeta } from './part10.js';
import { SopClass, TransferSyntax } from './uids.js';

/**
 * Reads the attributes the gateway triages on from the first bytes of an
 * instance, stopping before PixelData: a 50 MB CT slice costs a few kilobytes
 * of buffering and about a millisecond of parsing, whatever its size.
 */

export { TransferSyntax };

const PIXEL_DATA = '7FE00010';
const PIXEL_TAG_LE = Buffer.from([0xe0, 0x7f, 0x10, 0x00]);
const PIXEL_TAG_BE = Buffer.from([0x7f, 0xe0, 0x00, 0x10]);
const UNDEFINED_LENGTH = 0xffffffff;
// Sequence Delimitation Item with zero length: how encapsulated PixelData must end.
const SEQ_DELIMITER = Buffer.from([0xfe, 0xff, 0xdd, 0xe0, 0, 0, 0, 0]);

export function unreadable(message: string, cause?: unknown): GatewayError {
  return new GatewayError(ErrorCode.unreadableData, message, cause === undefined ? undefined : { cause });
}

interface PixelDataInfo {
  /** Offset of the PixelData tag within the (inflated) dataset. */
  offset: number;
  headerLength: number;
  valueLength: number;
}

/**
 * Collects an uncompressed-encoding dataset prefix chunk by chunk. Never throws
 * from push (the caller is a socket handler); every verdict comes from finish().
 */
class PlainPrefix {
  private readonly chunks: Buffer[] = [];
  private length = 0;
  /** Offsets below this have been checked as possible starts of the PixelData tag. */
  private scanned = 0;
  private parsed: DicomDataDict | undefined;
  private pixel: PixelDataInfo | undefined;
  private limitReached = false;
  private readonly pattern: Buffer;

  constructor(
    private readonly syntax: string,
    private readonly maxBytes: number,
  ) {
    this.pattern = syntax === TransferSyntax.explicitBe ? PIXEL_TAG_BE : PIXEL_TAG_LE;
  }

  /** True once no more bytes are needed: PixelData is reached or the limit is hit. */
  get satisfied(): boolean {
    return this.parsed !== undefined || this.limitReached;
  }

  get pixelData(): PixelDataInfo | undefined {
    return this.pixel;
  }

  push(chunk: Buffer): void {
    if (this.satisfied || chunk.length === 0) return;
    let part = chunk;
    if (this.length + part.length > this.maxBytes) {
      part = part.subarray(0, this.maxBytes - this.length);
      this.limitReached = true;
    }
    const seamLength = this.pattern.length - 1;
    const prevTail = this.lastBytes(seamLength);
    const base = this.length;
    // Searched and parsed in place; copied below only if it must be kept for a later push.
    this.chunks.push(part);
    this.length += part.length;
    if (this.pendingHit !== undefined && this.tryPixelDataAt(this.pendingHit)) return this.release();
    // A tag split across the previous chunk and this one: look in the few bytes around the seam.
    if (prevTail.length) {
      const seam = Buffer.concat([prevTail, part.subarray(0, seamLength)]);
      const seamStart = base - prevTail.length;
      let from = Math.max(0, this.scanned - seamStart);
      for (;;) {
        const hit = seam.indexOf(this.pattern, from);
        if (hit < 0 || hit >= prevTail.length) break;
        if (this.tryPixelDataAt(seamStart + hit)) return this.release();
        from = hit + 1;
      }
    }
    // Search only the new bytes: linear in the prefix.
    let from = Math.max(0, this.scanned - base);
    for (;;) {
      const hit = part.indexOf(this.pattern, from);
      if (hit < 0) break;
      if (this.tryPixelDataAt(base + hit)) return this.release();
      from = hit + 1;
    }
    // A tag can start in the last 3 bytes and finish in the next chunk.
    this.scanned = Math.max(0, this.length - seamLength);
    // Chunks are often views into a larger socket or PDU buffer: copy so we keep only the prefix alive.
    const last = this.chunks.length - 1;
    if (this.chunks[last] === part) this.chunks[last] = Buffer.from(part);
  }

  /** The header is parsed: the buffered bytes are no longer needed (finish() uses only the result). */
  private release(): void {
    this.chunks.length = 0;
  }

  private pendingHit: number | undefined;

  /**
   * The PixelData tag bytes can also occur inside another value; a false hit
   * only costs a parse that does not reach PixelData (dcmjs swallows the cut
   * element), and scanning continues.
   */
  private tryPixelDataAt(at: number): boolean {
    // Wait for the element header (tag, VR, length) so the PixelData length can be checked.
    if (this.length < at + 12) {
      this.pendingHit = at;
      return false;
    }
    if (this.pendingHit === at) this.pendingHit = undefined;
    const all = this.joined();
    const dict = parseDataset(all.subarray(0, at + 12), this.syntax, { untilTag: PIXEL_DATA });
    if (dict && PIXEL_DATA in dict) {
      this.parsed = dict;
      this.pixel = pixelDataInfo(all, at, this.syntax);
      return true;
    }
    return false;
  }

  private lastBytes(n: number): Buffer {
    const last = this.chunks[this.chunks.length - 1];
    if (!last) return Buffer.alloc(0);
    if (last.length >= n || this.chunks.length === 1) return last.subarray(Math.max(0, last.length - n));
    return this.joined().subarray(-n);
  }

  private joined(): Buffer {
    if (this.chunks.length > 1) {
      const one = Buffer.concat(this.chunks, this.length);
      this.chunks.length = 0;
      this.chunks.push(one);
    }
    return this.chunks[0] ?? Buffer.alloc(0);
  }

  /** The parsed header; `totalLength` is the dataset's full length when known (checks the PixelData length). */
  finish(totalLength: number | undefined): DicomDataDict {
    if (this.parsed) {
      if (this.pixel && totalLength !== undefined && this.pixel.valueLength !== UNDEFINED_LENGTH) {
        const end = this.pixel.offset + this.pixel.headerLength + this.pixel.valueLength;
        if (totalLength < end) throw unreadable(`dataset ends inside PixelData (${totalLength} of ${end} bytes)`);
      }
      return this.parsed;
    }
    const all = this.joined();
    if (all.length === 0) throw unreadable('empty dataset');
    if (!this.limitReached) {
      // The whole dataset is here and has no PixelData (SR, presentation state, KO...).
      const dict = parseDataset(all, this.syntax, {});
      if (!dict) throw unreadable('dataset cannot be parsed');
      return dict;
    }
    // Larger than the limit without PixelData (an encapsulated PDF, a big SR): the identifying
    // attributes sit in groups 0008-0020; stop at the first later group so no element read is cut short.
    const dict = parseDataset(all, this.syntax, { untilTag: '00210000', stopOnGreaterTag: true });
    if (!dict) throw unreadable('dataset cannot be parsed');
    const last = Object.keys(dict).sort().pop() ?? '';
    if (last <= '0020FFFF') throw unreadable(`header larger than ${this.maxBytes} bytes`);
    return dict;
  }
}

function pixelDataInfo(all: Buffer, at: number, syntax: string): PixelDataInfo {
  const be = syntax === TransferSyntax.explicitBe;
  if (syntax === TransferSyntax.implicitLe) {
    return { offset: at, headerLength: 8, valueLength: all.readUInt32LE(at + 4) };
  }
  const vr = all.toString('latin1', at + 4, at + 6);
  if (LONG_VRS.has(vr)) {
    return { offset: at, headerLength: 12, valueLength: be ? all.readUInt32BE(at + 8) : all.readUInt32LE(at + 8) };
  }
  return { offset: at, headerLength: 8, valueLength: be ? all.readUInt16BE(at + 6) : all.readUInt16LE(at + 6) };
}

interface ParseOptions {
  untilTag?: string;
  stopOnGreaterTag?: boolean;
}

/**
 * dcmjs reads datasets only inside a Part 10 file: put the smallest meta
 * header in front (preamble, DICM, group length, transfer syntax). It does not
 * throw on a buffer that ends early, so callers decide completeness themselves.
 */
function parseDataset(dataset: Buffer, syntax: string, options: ParseOptions): DicomDataDict | undefined {
  const meta = metaForParsing(syntax);
  const file = new Uint8Array(meta.length + dataset.length);
  file.set(meta, 0);
  file.set(dataset, meta.length);
  neutraliseCharsets(file, meta.length, syntax === TransferSyntax.explicitBe, syntax === TransferSyntax.implicitLe);
  try {
    const dict = dcmjs.data.DicomMessage.readFile(file.buffer, {
      untilTag: options.untilTag ?? null,
      includeUntilTagValue: false,
      // stopOnGreaterTag is passed through to the dataset reader (not in the typings).
      ...(options.stopOnGreaterTag ? { stopOnGreaterTag: true } : {}),
    } as never);
    return dict.dict;
  } catch {
    return undefined;
  }
}

/**
 * dcmjs refuses a multi-valued Specific Character Set (every ISO 2022 code extension: Japanese,
 * Korean, many European senders) and any value it has no decoder for, which failed the whole
 * C-STORE with 0xC000 (a "do not retry" status). Storing never needed the text decoded, and the few
 * text values we keep are decoded by `decodeText` with a library that implements PS3.5 6.1.2.5.
 * So in the copy handed to dcmjs, every (0008,0005) element (also inside sequence items) is renamed
 * to the unused (0008,0004): dcmjs then reads all text with its one-byte default decoder, which
 * maps each byte to one character and back, and the declared value stays readable under
 * the new tag. The bytes stored are never touched. A false hit inside a binary value (the pattern
 * plus a plausible VR/length) would only alter that value in this throw-away copy.
 */
export const CHARSET_ALIAS = '00080004';
const CHARSET_TAG_LE = Buffer.from([0x08, 0x00, 0x05, 0x00]);
const CHARSET_TAG_BE = Buffer.from([0x00, 0x08, 0x00, 0x05]);
function neutraliseCharsets(file: Uint8Array, from: number, bigEndian: boolean, implicit: boolean): void {
  const b = Buffer.from(file.buffer, file.byteOffset, file.byteLength);
  const pattern = bigEndian ? CHARSET_TAG_BE : CHARSET_TAG_LE;
  let at = b.indexOf(pattern, from);
  while (at >= 0 && at + 8 <= b.length) {
    const plausible = implicit ? b.readUInt32LE(at + 4) <= 1024 : b[at + 4] === 0x43 && b[at + 5] === 0x53; // 'CS'
    if (plausible) b[bigEndian ? at + 3 : at + 2] = 0x04;
    at = b.indexOf(pattern, at + 4);
  }
}

/** The one-byte decoder dcmjs uses by default (WHATWG "latin1" = windows-1252), inverted: character -> byte. */
const BYTE_OF = ((): Map<number, number> => {
  const all = Uint8Array.from({ length: 256 }, (_, i) => i);
  const chars = new TextDecoder('latin1').decode(all);
  const m = new Map<number, number>();
  for (let i = 0; i < chars.length; i++) m.set(chars.charCodeAt(i), i);
  return m;
})();

function bytesOf(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = BYTE_OF.get(s.charCodeAt(i)) ?? 0x3f;
  return out;
}

/** The Specific Character Set as sent (backslash-separated values), or null for the default repertoire. */
export function specificCharacterSetOf(dict: DicomDataDict): string | null {
  const el = dict[CHARSET_ALIAS] as { Value?: unknown[]; _rawValue?: unknown } | undefined;
  if (!el) return null;
  // Implicit VR: the renamed tag is unknown to dcmjs, so it comes as UN bytes.
  const values = el.Value?.[0] instanceof ArrayBuffer ? el.Value : Array.isArray(el._rawValue) ? el._rawValue : (el.Value ?? []);
  const parts = values.map((v) => (v instanceof ArrayBuffer ? Buffer.from(v).toString('latin1') : String(v ?? '')));
  const joined = parts.join('\\').replace(/[\0\s]+$/, '');
  return joined.replace(/\\/g, '').trim() === '' ? null : joined;
}

/**
 * A text value decoded per its dataset's Specific Character Set (ISO 2022 escapes included),
 * from the bytes dcmjs read (see neutraliseCharsets). Trailing padding removed; null when empty.
 */
export function decodeText(dict: DicomDataDict, tag: string, vr: string, charset: string | null): string | null {
  const el = dict[tag] as { Value?: unknown[]; _rawValue?: unknown } | undefined;
  if (!el) return null;
  const raw = el._rawValue;
  let bytes: Uint8Array;
  const first = el.Value?.[0];
  if (first instanceof ArrayBuffer) bytes = new Uint8Array(first);
  else if (typeof raw === 'string') bytes = bytesOf(raw);
  else if (Array.isArray(raw)) bytes = bytesOf(raw.map((v) => (typeof v === 'string' ? v : '')).join('\\'));
  else return str(dict, tag);
  let text: string;
  try {
    text = convertBytes(charset ?? undefined, bytes, { vr });
  } catch {
    // a declared set no decoder knows: the bytes as Latin-1 rather than nothing
    text = Buffer.from(bytes).toString('latin1');
  }
  text = text.replace(/[\0\s]+$/, '').trim();
  return text === '' ? null : text;
}

const metaCache = new Map<string, Buffer>();
function metaForParsing(syntax: string): Buffer {
  let m = metaCache.get(syntax);
  if (!m) {
    m = writeFileMeta({ transferSyntaxUid: syntax });
    metaCache.set(syntax, m);
  }
  return m;
}

/**
 * Reads the header of one dataset (the bytes after the Part 10 meta header, in
 * `transferSyntaxUid`) as it arrives. push() is synchronous, cheap and never
 * throws; finish() gives the verdict. Buffers at most `maxHeaderBytes`.
 */
export class DatasetHeaderReader {
  private readonly plain: PlainPrefix;
  private readonly inflater: InflateRaw | undefined;
  private inflaterDone: Promise<void> | undefined;
  private inflateError: Error | undefined;
  private inflatedTotal = 0;
  private total = 0;
  private tail: Buffer = Buffer.alloc(0);

  constructor(
    readonly transferSyntaxUid: string,
    maxHeaderBytes: number,
  ) {
    const deflated = transferSyntaxUid === TransferSyntax.deflate;
    // Encapsulated syntaxes keep their header in explicit VR little endian (PS3.5 A.4).
    const readSyntax =
      transferSyntaxUid === TransferSyntax.implicitLe || transferSyntaxUid === TransferSyntax.explicitBe ? transferSyntaxUid : TransferSyntax.explicitLe;
    this.plain = new PlainPrefix(readSyntax, maxHeaderBytes);
    if (deflated) {
      // The whole stream is inflated (in the libuv pool, off the event loop) but only the
      // prefix is kept: that is the only way to notice a truncated deflated dataset.
      const inflater = createInflateRaw();
      this.inflater = inflater;
      inflater.on('data', (b: Buffer) => {
        this.inflatedTotal += b.length;
        this.plain.push(b);
      });
      this.inflaterDone = new Promise<void>((resolve) => {
        inflater.once('end', resolve);
        inflater.once('close', resolve);
        inflater.once('error', (err) => {
          this.inflateError = err;
          resolve();
        });
      });
    }
  }

  /** Bytes of the dataset seen so far (not only the buffered prefix). */
  get bytesSeen(): number {
    return this.total;
  }

  push(chunk: Buffer): void {
    this.total += chunk.length;
    if (this.inflater) {
      if (!this.inflater.destroyed && !this.inflater.writableEnded) this.inflater.write(chunk);
      return;
    }
    this.plain.push(chunk);
    // Encapsulated PixelData must end with a sequence delimiter: keep the last 8 bytes to check it.
    this.tail = chunk.length >= 8 ? chunk.subarray(chunk.length - 8) : Buffer.concat([this.tail, chunk]).subarray(-8);
  }

  /** The header read from the prefix; throws GatewayError 'unreadable-data'. `complete`: the whole dataset was pushed. */
  async finish(complete = true): Promise<DicomDataDict> {
    if (this.inflater) {
      if (!this.inflater.destroyed && !this.inflater.writableEnded) this.inflater.end();
      await this.inflaterDone;
      if (this.inflateError) throw unreadable(`deflated dataset cannot be inflated: ${this.inflateError.message}`);
      return this.plain.finish(complete ? this.inflatedTotal : undefined);
    }
    const dict = this.plain.finish(complete ? this.total : undefined);
    const px = this.plain.pixelData;
    if (complete && px && px.valueLength === UNDEFINED_LENGTH) {
      const tail = Buffer.from(this.tail);
      if (this.total >= px.offset + px.headerLength + 8 && !tail.equals(SEQ_DELIMITER)) {
        throw unreadable('encapsulated PixelData is not terminated (dataset truncated)');
      }
    }
    return dict;
  }

  /** Releases the inflater when the transfer is abandoned. */
  dispose(): void {
    if (this.inflater && !this.inflater.destroyed) this.inflater.destroy();
  }
}

function str(dict: DicomDataDict, tag: string): string | null {
  const v = dict[tag]?.Value?.[0];
  if (v === undefined || v === null) return null;
  if (typeof v === 'object') {
    const alphabetic = (v as { Alphabetic?: unknown }).Alphabetic;
    return typeof alphabetic === 'string' && alphabetic.trim() ? alphabetic.trim() : null;
  }
  // Strip padding the sender used (space for text, NUL for UIDs).
  const s = String(v)
    .replace(/[\0\s]+$/, '')
    .trim();
  return s === '' ? null : s;
}

function int(dict: DicomDataDict, tag: string): number | null {
  const s = str(dict, tag);
  if (s === null) return null;
  const n = Number.parseInt(s, 10);
  return Number.isSafeInteger(n) ? n : null;
}

/**
 * A UI value as the sender wrote it. dcmjs "cleans" a UI value by cutting it at the first
 * character that is not a digit or a dot ("6x~o )VF" reads as "6"), so a garbled UID would be
 * stored as a different, valid-looking one and could merge unrelated studies (found by the
 * DIMSE fuzzer). The raw bytes (dcmjs keeps them as _rawValue) are what is judged.
 */
function uidAsSent(dict: DicomDataDict, tag: string): string | null {
  const raw = (dict[tag] as { _rawValue?: unknown } | undefined)?._rawValue;
  if (!Array.isArray(raw)) return str(dict, tag);
  // two values (a backslash) is not one UID either
  if (raw.length > 1) return 'multi-valued';
  if (raw[0] === undefined || raw[0] === null) return null;
  const s = String(raw[0])
    .replace(/[\0\s]+$/, '')
    .trim();
  return s === '' ? null : s;
}

function uid(dict: DicomDataDict, tag: string, name: string): string {
  const v = uidAsSent(dict, tag);
  if (!v || v.length > 64 || !/^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$/.test(v)) {
    throw unreadable(`${name} missing or not a valid UID`);
  }
  return v;
}

function optionalUid(dict: DicomDataDict, tag: string): string | null {
  const v = uidAsSent(dict, tag);
  return v && /^[0-9.]{1,64}$/.test(v) ? v : null;
}

function limit(s: string | null, max: number): string | null {
  return s === null ? null : s.slice(0, max);
}

/**
 * Maps a parsed header to the InstanceHeader. `sopClassUid` falls back to the
 * command's affected SOP class when the dataset lacks (0008,0016).
 */
export function toInstanceHeader(dict: DicomDataDict, transferSyntaxUid: string, fallbackSopClassUid?: string): InstanceHeader {
  const sopClassUid = optionalUid(dict, '00080016') ?? fallbackSopClassUid ?? null;
  if (!sopClassUid) throw unreadable('SOPClassUID missing or not a valid UID');
  const charset = specificCharacterSetOf(dict);
  const text = (tag: string, vr: string, max: number): string | null => limit(decodeText(dict, tag, vr, charset), max);
  return {
    sopClassUid,
    sopInstanceUid: uid(dict, '00080018', 'SOPInstanceUID'),
    transferSyntaxUid,
    studyInstanceUid: uid(dict, '0020000D', 'StudyInstanceUID'),
    seriesInstanceUid: uid(dict, '0020000E', 'SeriesInstanceUID'),
    accessionNumber: text('00080050', 'SH', 64),
    patientId: text('00100020', 'LO', 64),
    modality: limit(str(dict, '00080060'), 16),
    studyDescription: text('00081030', 'LO', 256),
    seriesDescription: text('0008103E', 'LO', 256),
    bodyPartExamined: limit(str(dict, '00180015'), 64),
    studyDate: limit(str(dict, '00080020'), 8),
    referringPhysicianName: text('00080090', 'PN', 256),
    seriesNumber: int(dict, '00200011'),
    instanceNumber: int(dict, '00200013'),
    specificCharacterSet: limit(charset, 256),
    patientName: text('00100010', 'PN', 256),
    patientBirthDate: limit(str(dict, '00100030'), 8),
    issuerOfPatientId: text('00100021', 'LO', 128),
    otherPatientIds: otherPatientIds(dict, charset),
    iocm: sopClassUid === KEY_OBJECT_SELECTION ? iocmRejection(dict, charset) : null,
  };
}

function items(dict: DicomDataDict, tag: string): DicomDataDict[] {
  const v = dict[tag]?.Value;
  return Array.isArray(v) ? v.filter((i): i is DicomDataDict => typeof i === 'object' && i !== null && !(i instanceof ArrayBuffer)) : [];
}

/** Other Patient IDs Sequence (0010,1002): each item's Patient ID, Issuer and Type of Patient ID. */
function otherPatientIds(dict: DicomDataDict, charset: string | null): { id: string; issuer: string | null; type: string | null }[] {
  const out: { id: string; issuer: string | null; type: string | null }[] = [];
  for (const item of items(dict, '00101002').slice(0, 32)) {
    const itemCharset = specificCharacterSetOf(item) ?? charset;
    const id = limit(decodeText(item, '00100020', 'LO', itemCharset), 64);
    if (!id) continue;
    out.push({ id, issuer: limit(decodeText(item, '00100021', 'LO', itemCharset), 128), type: limit(str(item, '00100022'), 16) });
  }
  return out;
}

export const KEY_OBJECT_SELECTION = SopClass.keyObjectSelection;
/** DICOM CID 7011 "Rejected for ..." document titles (scheme DCM): what an IOCM rejection note is titled. */
export const IOCM_REJECTION_CODES: Readonly<Record<string, string>> = {
  '113001': 'Rejected for Quality Reasons',
  '113037': 'Rejected for Patient Safety Reasons',
  '113038': 'Incorrect Modality Worklist Entry',
  '113039': 'Data Retention Policy Expired',
};

/**
 * A KOS whose Concept Name Code (the document title) is in CID 7011 is a rejection note: the
 * instances it lists under Current Requested Procedure Evidence Sequence (0040,A375) -> Referenced
 * Series Sequence (0008,1115) -> Referenced SOP Sequence (0008,1199) are withdrawn by the sender.
 * Any other KOS (a key-images note) is an ordinary instance.
 */
function iocmRejection(dict: DicomDataDict, charset: string | null): IocmRejection | null {
  const title = items(dict, '0040A043')[0];
  if (!title) return null;
  const code = str(title, '00080100');
  const scheme = str(title, '00080102');
  if (!code || !(code in IOCM_REJECTION_CODES) || (scheme !== null && scheme !== 'DCM')) return null;
  const sopInstanceUids: string[] = [];
  for (const study of items(dict, '0040A375')) {
    for (const series of items(study, '00081115')) {
      for (const sop of items(series, '00081199')) {
        const u = optionalUid(sop, '00081155');
        if (u && !sopInstanceUids.includes(u)) sopInstanceUids.push(u);
      }
    }
  }
  return { code: `DCM:${code}`, meaning: decodeText(title, '00080104', 'LO', charset) ?? IOCM_REJECTION_CODES[code] ?? null, sopInstanceUids };
}

/**
 * Reads a Part 10 file's header as it arrives in chunks: the meta group
 * (always explicit VR little endian) gives the transfer syntax, then the
 * dataset goes through a DatasetHeaderReader.
 */
export class Part10HeaderReader {
  private metaBuf: Buffer[] = [];
  private metaLen = 0;
  private dataset: DatasetHeaderReader | undefined;
  private metaError: GatewayError | undefined;
  private meta: { transferSyntaxUid: string; sopClassUid: string | null; sopInstanceUid: string | null } | undefined;

  constructor(private readonly maxHeaderBytes: number) {}

  /** The UIDs of the meta group once read: they name an instance whose dataset then fails (STOW-RS FailedSOPSequence). */
  get metaUids(): { sopClassUid: string | null; sopInstanceUid: string | null } | undefined {
    return this.meta ? { sopClassUid: this.meta.sopClassUid, sopInstanceUid: this.meta.sopInstanceUid } : undefined;
  }

  push(chunk: Buffer): void {
    if (this.metaError) return;
    if (this.dataset) {
      this.dataset.push(chunk);
      return;
    }
    this.metaBuf.push(chunk);
    this.metaLen += chunk.length;
    const all = this.metaBuf.length === 1 ? chunk : Buffer.concat(this.metaBuf, this.metaLen);
    this.metaBuf = [all];
    if (all.length < 144) return;
    if (!hasPart10Prefix(all)) {
      this.metaError = unreadable('not a DICOM Part 10 file (no DICM prefix)');
      return;
    }
    if (all.readUInt16LE(132) !== 0x0002 || all.readUInt16LE(134) !== 0x0000) {
      this.metaError = unreadable('Part 10 file meta group length missing');
      return;
    }
    const metaEnd = 144 + all.readUInt32LE(140);
    if (metaEnd > this.maxHeaderBytes) {
      this.metaError = unreadable('Part 10 file meta header too large');
      return;
    }
    if (all.length < metaEnd) return;
    let parsed: FileMeta;
    try {
      parsed = readFileMeta(all.subarray(0, metaEnd));
    } catch (err) {
      this.metaError = unreadable((err as Error).message);
      return;
    }
    this.meta = { transferSyntaxUid: parsed.transferSyntaxUid, sopClassUid: parsed.sopClassUid || null, sopInstanceUid: parsed.sopInstanceUid || null };
    this.dataset = new DatasetHeaderReader(parsed.transferSyntaxUid, this.maxHeaderBytes);
    this.metaBuf = [];
    if (all.length > metaEnd) this.dataset.push(all.subarray(metaEnd));
  }

  async finish(): Promise<InstanceHeader> {
    if (this.metaError) throw this.metaError;
    if (!this.dataset || !this.meta) throw unreadable('Part 10 file ends inside its meta header');
    const dict = await this.dataset.finish(true);
    return toInstanceHeader(dict, this.meta.transferSyntaxUid, this.meta.sopClassUid ?? undefined);
  }

  dispose(): void {
    this.dataset?.dispose();
  }
}

/** Reads the header from a complete in-memory Part 10 file (tests, tools). */
export async function readPart10Header(bytes: Buffer, maxHeaderBytes = 4 * 1024 * 1024): Promise<InstanceHeader> {
  const r = new Part10HeaderReader(maxHeaderBytes);
  r.push(bytes);
  return r.finish();
}
