/**
 * DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile, with the
 * Retain Longitudinal Temporal Information with Modified Dates and Retain
 * Patient Characteristics options (and Retain Safe Private when a safe list is
 * configured).
 *
 * How a file goes through:
 * 1. Our own Part 10 reader finds the transfer syntax and, walking the
 *    top-level elements (sequences and encapsulated pixel data skipped by their
 *    item structure), the byte range of the top-level pixel data elements.
 * 2. Only the bytes before the pixel data are parsed by dcmjs, de-identified
 *    (recursively, inside every sequence item) and re-encoded by dcmjs in the
 *    file's own encoding (implicit or explicit VR little endian).
 * 3. The original pixel data element bytes (native or encapsulated, fragments
 *    and offset table included) are appended unchanged, so the pixel data is
 *    byte-identical and the transfer syntax is kept. Deflated files are inflated
 *    first and deflated again at the end.
 * 4. The result is walked again before it is returned; a structure we did not
 *    write correctly is an internal error, never a file on the wire.
 * 5. The output is scanned by the verifier (phi-verifier.ts) for the source's
 *    identifiers and the caller's (`knownIdentifiers`): `verification` says
 *    whether it may leave. `risk` says whether the instance may go at all
 *    (instance-risk.ts: burned-in text, documents, photographs).
 *
 * `deidentifyFile` does the same from a file handle, reading only the header
 * part: the sender streams the returned prefix and then the source's own
 * pixel data bytes, so an instance of any size costs its header in memory.
 *
 * Beyond Table E.1-1, because PS3.15 asks for it:
 * - SR content trees: without the Clean Structured Content Option, TEXT, PNAME,
 *   DATE, TIME, DATETIME values and local code meanings are replaced by dummies
 *   (UIDREF is replaced like every UID), the tree itself kept so the document
 *   stays valid; with `cleanStructuredContent`, text is scrubbed of the known
 *   identifiers and dates, dates shift like the rest, and 113104 is recorded.
 * - Encapsulated Document (0042,0011) is never copied without a person's
 *   release (`releasedByReviewer`); the verifier still reads it.
 * - Text the profile keeps (descriptions, labels, comments not in the table)
 *   goes through the scrubber (text-scrubber.ts).
 *
 * Not supported (GatewayError 'unsupported'): explicit VR big endian (retired),
 * several character sets in (0008,0005) (ISO 2022 code extensions: dcmjs cannot
 * decode them), sequences encoded as UN (dcmjs misreads them), public
 * attributes after Pixel Data other than Digital Signatures and Data Set
 * Trailing Padding (both removed by the profile).
 *
 * Resolution of the combined actions of Table E.1-1 for the IODs we forward
 * (images, classic and enhanced multi-frame, and SR documents) is in
 * `resolveCombined` below; every choice keeps the result conformant for those
 * IODs without keeping more than the standard allows.
 */
import { LONG_VRS, readFileMeta, writeFileMeta, type FileMeta } from '../dicom/part10.js';
import { DEIDENTIFIER_IMPLEMENTATION_CLASS_UID, DEIDENTIFIER_IMPLEMENTATION_VERSION_NAME, TransferSyntax } from '../dicom/uids.js';
import { open, type FileHandle } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import dcmjs, { type DicomDataDict, type DicomElement } from 'dcmjs';
import { ErrorCode, GatewayError } from '../errors.js';
import { basicProfile, type ProfileRow } from './deidentify-profile.js';
import { instanceRisk, riskInputFromDataset, type InstanceRisk } from './instance-risk.js';
import { identifiersFromDataset, KnownIdentifiers } from './known-identifiers.js';
import { verifyDeidentified, type VerifyResult } from './phi-verifier.js';
import { scrubText } from './text-scrubber.js';

const { DicomDict, DicomMessage, DicomMetaDictionary } = dcmjs.data;

export interface PseudonymSource {
  /** A replacement UID for an original UID; the same original always gets the same replacement (within one study and destination). */
  uid(original: string): string;
  patientId(original: string): string; // pseudonymous patient id
  patientName(originalPatientId: string): string; // e.g. 'ANON^<pseudoId>'
  accessionNumber(original: string): string;
  /** Whole days to add to every date of this patient (Retain Longitudinal Temporal Information with Modified Dates). */
  dateShiftDays(originalPatientId: string): number;
}

export interface DeidentifyOptions {
  retainLongitudinalModifiedDates: boolean; // shift dates/times by dateShiftDays instead of removing/emptying them
  retainPatientCharacteristics: boolean; // keep PatientSex, PatientAge, PatientSize, PatientWeight, EthnicGroup, SmokingStatus, ...
  /**
   * Private data elements kept (Retain Safe Private Option), each
   * `GGGGxxEE` (element EE of any block of odd group GGGG) or `GGGGBBEE`
   * (exact block BB), optionally `@<Private Creator>` to match only under that
   * creator: e.g. `0019xx0C@GEMS_ACQU_01`, `00291010@SIEMENS CSA HEADER`.
   * Their private creator elements are kept with them. Default: none.
   */
  safePrivateTags?: string[];
  /**
   * Clean Structured Content Option: SR content items are cleaned (TEXT and
   * free-text code meanings scrubbed of known identifiers and dates, dates
   * shifted or dummied like the rest, names removed) instead of replaced by
   * dummies, and 113104 is recorded. Default: replaced.
   */
  cleanStructuredContent?: boolean;
  /**
   * A person released this instance after review: an Encapsulated Document
   * (0042,0011) is copied. Without it, de-identifying one is refused.
   */
  releasedByReviewer?: boolean;
  /** Identifiers from outside the file (HL7 order, reports) to scrub and verify, besides those read from the file itself. */
  knownIdentifiers?: KnownIdentifiers;
}

export interface DeidentifyResult {
  bytes: Buffer;
  /** original -> replacement for every UID replaced */
  uids: Map<string, string>;
  burnedInAnnotation: 'YES' | 'NO' | null;
  sopClassUid: string;
  /** The replacement SOP Instance UID. */
  sopInstanceUid: string;
  /** Why the SOURCE instance must not go out de-identified without a person's release (instance-risk.ts), or null. */
  risk: InstanceRisk | null;
  /** The identifiers read from the source (plus `options.knownIdentifiers`). */
  identifiers: KnownIdentifiers;
  /** `verifyDeidentified` of the output with those identifiers: send only when clean. */
  verification: VerifyResult;
}

/** `deidentifyFile`: the new file is `prefix` followed by the source file's bytes [pixel.start, pixel.end). */
export interface DeidentifyFileResult extends Omit<DeidentifyResult, 'bytes'> {
  /** Meta + de-identified dataset up to (not including) the Pixel Data element; the whole new file when `pixel` is null. */
  prefix: Buffer;
  /** Byte range of the SOURCE file holding the top-level pixel data element(s), tag to end, copied unchanged; null when there is none or the file was handled in memory. */
  pixel: { start: number; end: number } | null;
  /** Length of the new file: prefix + (pixel.end - pixel.start). */
  totalLength: number;
  /** True when the file was read whole (deflated transfer syntax: it cannot be split). */
  inMemory: boolean;
}

export { TransferSyntax, DEIDENTIFIER_IMPLEMENTATION_CLASS_UID };

/** CID 7050 De-identification Method codes (coding scheme DCM). */
export const DeidentificationCodes = {
  basic: { value: '113100', meaning: 'Basic Application Confidentiality Profile', text: 'Basic Application Level Confidentiality Profile' },
  modifiedDates: {
    value: '113107',
    meaning: 'Retain Longitudinal Temporal Information Modified Dates Option',
    text: 'Retain Longitudinal Temporal Information Modified Dates Option',
  },
  patientCharacteristics: { value: '113108', meaning: 'Retain Patient Characteristics Option', text: 'Retain Patient Characteristics Option' },
  safePrivate: { value: '113111', meaning: 'Retain Safe Private Option', text: 'Retain Safe Private Option' },
  cleanStructuredContent: { value: '113104', meaning: 'Clean Structured Content Option', text: 'Clean Structured Content Option' },
} as const;

/** Input: a complete Part 10 file as stored by the gateway. Output: a new Part 10 file. */
export function deidentifyPart10(file: Buffer, pseudonyms: PseudonymSource, options: DeidentifyOptions): DeidentifyResult {
  const meta = readMeta(file);
  const ts = meta.transferSyntaxUid;
  refuseBigEndian(ts);
  const deflated = ts === TransferSyntax.deflate;
  let dataset = file.subarray(meta.end);
  if (deflated) dataset = inflate(dataset);
  const explicit = ts !== TransferSyntax.implicitLe;
  const top = walkTopLevel(dataset, explicit);
  const split = splitAtPixelData(top, dataset.length);
  const pixelBytes = dataset.subarray(split.pixelStart, split.pixelEnd);

  const h = deidentifyHeader(meta, dataset.subarray(0, split.pixelStart), pseudonyms, options);
  let datasetOut = Buffer.concat([h.headerOut, pixelBytes]);
  verifyOutput(datasetOut, explicit, h.headerOut.length, pixelBytes);
  if (deflated) datasetOut = deflateRawSync(datasetOut);
  const bytes = Buffer.concat([h.metaOut, datasetOut]);
  return { ...h.result, bytes, verification: verifyDeidentified(bytes, h.result.identifiers, { producedUids: h.result.uids.values() }) };
}

export interface DeidentifyFileLimits {
  /** Largest header part (everything before Pixel Data, or the whole dataset without pixels) read into memory. Default 64 MiB. */
  maxHeaderBytes?: number;
  /** Largest deflated file (read whole). Default 256 MiB. */
  maxDeflatedBytes?: number;
  /** First read (then doubled as the header needs). Default 64 KiB. */
  initialReadBytes?: number;
}

/**
 * The streaming entry point: reads only the header part of the file at `path`
 * (up to the Pixel Data element, bounded by `limits.maxHeaderBytes`) and the
 * item headers of encapsulated pixel data, never the pixel values. The sender
 * writes `prefix` then the source bytes [pixel.start, pixel.end): the same
 * bytes `deidentifyPart10` returns for the whole file. Elements after the pixel
 * data (Data Set Trailing Padding, Digital Signatures, private groups) are
 * dropped, as there. Deflated files are handled in memory (`inMemory`).
 */
export async function deidentifyFile(
  path: string,
  pseudonyms: PseudonymSource,
  options: DeidentifyOptions,
  limits: DeidentifyFileLimits = {},
): Promise<DeidentifyFileResult> {
  const maxHeader = limits.maxHeaderBytes ?? 64 * 1024 * 1024;
  const fh = await open(path, 'r');
  try {
    const size = (await fh.stat()).size;
    const chunk = Math.max(256, limits.initialReadBytes ?? 64 * 1024);
    let buf = await readAt(fh, 0, Math.min(size, chunk));
    const more = async (): Promise<void> => {
      if (buf.length >= maxHeader) throw new GatewayError(ErrorCode.unsupported, `the header part of this file is larger than ${maxHeader} bytes`);
      buf = Buffer.concat([buf, await readAt(fh, buf.length, Math.min(size - buf.length, Math.max(buf.length, chunk)))]);
    };
    // The meta group is read whole: up to the first element after it, or the end of the file.
    let meta: Meta;
    for (;;) {
      const whole = buf.length >= size;
      try {
        meta = readMeta(buf);
        if (whole || meta.end + 8 <= buf.length) break;
      } catch (err) {
        if (whole) throw err;
      }
      await more();
    }
    const ts = meta.transferSyntaxUid;
    refuseBigEndian(ts);
    if (ts === TransferSyntax.deflate) {
      if (size > (limits.maxDeflatedBytes ?? 256 * 1024 * 1024))
        throw new GatewayError(ErrorCode.unsupported, 'deflated file too large to de-identify in memory');
      const whole = await readAt(fh, 0, size);
      const r = deidentifyPart10(whole, pseudonyms, options);
      const { bytes, ...rest } = r;
      return { ...rest, prefix: bytes, pixel: null, totalLength: bytes.length, inMemory: true };
    }
    const explicit = ts !== TransferSyntax.implicitLe;

    // Grow the in-memory header until the top-level walk reaches the pixel data or the end of the file.
    let o = 0;
    let pixelStart: number | undefined;
    for (;;) {
      const dataset = buf.subarray(meta.end);
      const atEof = buf.length >= size;
      if (o >= dataset.length && atEof) break;
      if (dataset.length - o >= 8 && PIXEL_TAGS.has(((dataset.readUInt16LE(o) << 16) | dataset.readUInt16LE(o + 2)) >>> 0)) {
        pixelStart = o;
        break;
      }
      let end: number | undefined;
      if (dataset.length - o >= 8 || atEof) {
        try {
          if (dataset.length - o < 8 && dataset.subarray(o).every((b) => b === 0)) break; // trailing zero padding
          end = elementEnd(dataset, o, explicit);
        } catch (err) {
          if (!(atEof === false && err instanceof GatewayError && err.message === TRUNCATED)) throw err;
        }
      }
      if (end !== undefined) {
        o = end;
        continue;
      }
      await more();
    }

    const dataset = buf.subarray(meta.end);
    if ((pixelStart ?? dataset.length) > maxHeader) {
      throw new GatewayError(ErrorCode.unsupported, `the header part of this file is larger than ${maxHeader} bytes`);
    }
    let pixel: { start: number; end: number } | null = null;
    if (pixelStart !== undefined) {
      const start = meta.end + pixelStart;
      const end = await pixelEnd(fh, start, size, explicit);
      pixel = { start, end };
    }
    const h = deidentifyHeader(meta, dataset.subarray(0, pixelStart ?? dataset.length), pseudonyms, options);
    verifyOutput(h.headerOut, explicit, h.headerOut.length, Buffer.alloc(0));
    const prefix = Buffer.concat([h.metaOut, h.headerOut]);
    return {
      ...h.result,
      prefix,
      pixel,
      totalLength: prefix.length + (pixel ? pixel.end - pixel.start : 0),
      inMemory: false,
      verification: verifyDeidentified(prefix, h.result.identifiers, { producedUids: h.result.uids.values() }),
    };
  } finally {
    await fh.close();
  }
}

async function readAt(fh: FileHandle, position: number, length: number): Promise<Buffer> {
  const b = Buffer.alloc(length);
  let got = 0;
  while (got < length) {
    const { bytesRead } = await fh.read(b, got, length - got, position + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return got === length ? b : b.subarray(0, got);
}

/**
 * End (file offset) of the top-level pixel data element(s) starting at `start`,
 * reading element and item headers only. What follows must be what
 * `splitAtPixelData` allows (dropped): checked on the (small) remainder.
 */
async function pixelEnd(fh: FileHandle, start: number, size: number, explicit: boolean): Promise<number> {
  let p = start;
  for (;;) {
    if (size - p < 8) break;
    const hb = await readAt(fh, p, Math.min(12, size - p));
    const tag = ((hb.readUInt16LE(0) << 16) | hb.readUInt16LE(2)) >>> 0;
    if (!PIXEL_TAGS.has(tag)) break;
    const h = header(hb, 0, explicit);
    if (h.len !== UNDEFINED) {
      p = p + h.value + h.len;
    } else {
      // Encapsulated: item headers only, fragment values skipped.
      let q = p + h.value;
      for (;;) {
        if (q + 8 > size) throw unreadable(TRUNCATED);
        const ib = await readAt(fh, q, 8);
        const item = header(ib, 0, false);
        if (item.tag === 0xfffee0dd) {
          q += 8;
          break;
        }
        if (item.tag !== 0xfffee000 || item.len === UNDEFINED) throw unreadable('malformed encapsulated pixel data');
        q += 8 + item.len;
      }
      p = q;
    }
    if (p > size) throw unreadable(TRUNCATED);
  }
  const rest = size - p;
  if (rest > 0) {
    if (rest > 16 * 1024 * 1024) throw new GatewayError(ErrorCode.unsupported, 'more than 16 MiB after Pixel Data');
    const tail = await readAt(fh, p, rest);
    splitAtPixelData([{ tag: 0x7fe00010, start: 0, end: 0 }, ...walkTopLevel(tail, explicit)], tail.length);
  }
  return p;
}

/**
 * The header of a source Part 10 file (before Pixel Data) as a dcmjs
 * dictionary, read the way the de-identifier reads it (deflate, ISO 2022 text):
 * for `identifiersFromDataset`.
 */
export function readSourceHeader(file: Buffer): DicomDataDict {
  const meta = readMeta(file);
  refuseBigEndian(meta.transferSyntaxUid);
  let dataset = file.subarray(meta.end);
  if (meta.transferSyntaxUid === TransferSyntax.deflate) dataset = inflate(dataset);
  const explicit = meta.transferSyntaxUid !== TransferSyntax.implicitLe;
  const split = splitAtPixelData(walkTopLevel(dataset, explicit), dataset.length);
  const headerBytes = dataset.subarray(0, split.pixelStart);
  if (explicit) refuseUnSequences(headerBytes, 0, headerBytes.length);
  return parseHeader(transcodeIso2022(headerBytes, explicit), explicit ? TransferSyntax.explicitLe : TransferSyntax.implicitLe);
}

/** Every syntax other than implicit VR little endian (native and encapsulated) encodes the dataset in explicit VR little endian. */
function refuseBigEndian(ts: string): void {
  if (ts === TransferSyntax.explicitBe) {
    throw new GatewayError(ErrorCode.unsupported, 'de-identification of explicit VR big endian files is not supported (retired transfer syntax)');
  }
}

function inflate(dataset: Buffer): Buffer {
  try {
    return inflateRawSync(dataset);
  } catch (cause) {
    throw new GatewayError(ErrorCode.unreadableData, 'deflated dataset cannot be inflated', { cause });
  }
}

/** The de-identification of the header part (dataset bytes before Pixel Data), shared by the buffer and the file entry points. */
function deidentifyHeader(
  meta: Meta,
  headerBytes: Buffer,
  pseudonyms: PseudonymSource,
  options: DeidentifyOptions,
): { headerOut: Buffer; metaOut: Buffer; result: Omit<DeidentifyResult, 'bytes' | 'verification'> } {
  const safeRules = parseSafePrivateTags(options.safePrivateTags ?? []);
  const parseSyntax = meta.transferSyntaxUid === TransferSyntax.implicitLe ? TransferSyntax.implicitLe : TransferSyntax.explicitLe;
  if (parseSyntax === TransferSyntax.explicitLe) refuseUnSequences(headerBytes, 0, headerBytes.length);
  const source = parseHeader(transcodeIso2022(headerBytes, parseSyntax === TransferSyntax.explicitLe), parseSyntax);
  const sopClassUid = firstString(source['00080016']) ?? meta.sopClassUid;
  const originalPatientId = firstString(source['00100020']) ?? '';
  const burned = (firstString(source['00280301']) ?? '').toUpperCase();
  const identifiers = identifiersFromDataset(source);
  if (options.knownIdentifiers) identifiers.merge(options.knownIdentifiers);

  const ctx: Context = {
    pseudonyms,
    options,
    safeRules,
    uids: new Map(),
    originalPatientId,
    shiftDays: options.retainLongitudinalModifiedDates ? wholeDays(pseudonyms.dateShiftDays(originalPatientId)) : 0,
    sr: sopClassUid.startsWith('1.2.840.10008.5.1.4.1.1.88.'),
    enhanced: source['52009229'] !== undefined,
    rt: sopClassUid.startsWith('1.2.840.10008.5.1.4.1.1.481.'),
    keptPrivate: false,
    ids: identifiers,
    inContent: 0,
    contentCleaned: false,
    sequences: [],
  };

  const cleaned = cleanDataset(source, ctx, 0);
  recordMethod(cleaned, source, ctx);

  const sopInstanceUid = firstString(cleaned['00080018']) ?? (meta.sopInstanceUid ? replaceUid(meta.sopInstanceUid, ctx) : '');
  const headerOut = encodeDataset(cleaned, parseSyntax);
  const metaOut = encodeMeta({ sopClassUid: meta.sopClassUid || sopClassUid, sopInstanceUid, transferSyntaxUid: meta.transferSyntaxUid });
  return {
    headerOut,
    metaOut,
    result: {
      uids: ctx.uids,
      burnedInAnnotation: burned === 'YES' ? 'YES' : burned === 'NO' ? 'NO' : null,
      sopClassUid,
      sopInstanceUid,
      risk: instanceRisk(riskInputFromDataset(source)),
      identifiers,
    },
  };
}

// ---------------------------------------------------------------------------
// The profile

interface Context {
  readonly pseudonyms: PseudonymSource;
  readonly options: DeidentifyOptions;
  readonly safeRules: readonly SafeRule[];
  readonly uids: Map<string, string>;
  readonly originalPatientId: string;
  readonly shiftDays: number;
  readonly sr: boolean;
  readonly enhanced: boolean;
  /** An RT object (1.2.840.10008.5.1.4.1.1.481.*): RT Series has Type 2 attributes General Series does not. */
  readonly rt: boolean;
  keptPrivate: boolean;
  /** The source's identifiers (and the caller's): what the scrubber removes from text. */
  readonly ids: KnownIdentifiers;
  /** > 0 while inside an SR content tree (Content Sequence). */
  inContent: number;
  /** A content tree was cleaned under the Clean Structured Content Option (113104 is recorded only then). */
  contentCleaned: boolean;
  /** Keys of the sequences enclosing the item being cleaned, outermost first. */
  readonly sequences: string[];
}

type El = DicomElement & { _rawValue?: unknown };
type Simple = 'X' | 'Z' | 'D' | 'U' | 'K' | 'U*' | 'shift';

/** Attributes this module writes itself (method record), whatever the source had. */
const WRITTEN_HERE = new Set(['00080005', '00120062', '00120063', '00120064', '00280303']);

/**
 * UI attributes that name a class, a syntax or a coding resource, never an
 * instance: kept. Every other UID that is not a DICOM well-known UID
 * (1.2.840.10008.*) is replaced, listed in Table E.1-1 or not: vendors are known
 * to build instance UIDs from dates and patient numbers.
 */
const NON_INSTANCE_UIDS = new Set([
  '00020002',
  '00020010',
  '00020012',
  '00020100',
  '00041510',
  '00041512',
  '0004151A',
  '00080016',
  '0008001A',
  '0008001B',
  '00080062',
  '0008010C',
  '0008010D',
  '00080117',
  '00080118',
  '00081150',
  '0008115A',
  '00081160',
  '00083002',
  '00089123',
  '04000010',
  '04000115',
]);

/**
 * Combined actions of Table E.1-1, resolved for images (classic and enhanced
 * multi-frame) and SR documents. The standard's rule: the first action unless a
 * later one is needed to keep the IOD conformant (Type 1 needs D, Type 2 needs Z,
 * a Type 1/2 reference sequence needs U*). Everything not listed here takes the
 * first action (X for X/Z, X/D, X/Z/D, X/Z/U*; Z for Z/D).
 */
function resolveCombined(row: ProfileRow, ctx: Context, depth: number): Simple {
  switch (row.tag) {
    case '00400555': // Acquisition Context Sequence: Type 2 in the Acquisition Context module (DX, MG, IO, enhanced CT/MR/XA)
    case '00102203': // Patient's Sex Neutered: Type 2C in the Patient module
    case '00321060': // Requested Procedure Description: Type 2 in the SR Referenced Request Sequence
    case '300E0008': // Reviewer Name: Type 2C in the Approval module
    case '30080105': // Source Serial Number: Type 2 where used
      return 'Z';
    case '00080023': // Content Date: Type 1 in SR Document General and in Multi-frame Functional Groups; 2C in General Image
    case '00080033': // Content Time: same
      return ctx.sr || ctx.enhanced ? 'D' : 'Z';
    case '0008002A': // Acquisition DateTime: Type 1 in Enhanced CT/MR/PET image modules, Type 3 in General Image
    case '00181000': // Device Serial Number: Type 1 in Enhanced General Equipment, Type 3 in General Equipment
      return ctx.enhanced ? 'D' : 'X';
    case '00189516': // Start Acquisition DateTime: Type 1 in enhanced XA/XRF acquisition modules
    case '00189517': // End Acquisition DateTime: same
      return 'D';
    case '00081111': // Referenced Performed Procedure Step Sequence: Type 2 in SR Document Series, Type 3 in General Series
      return ctx.sr && depth === 0 ? 'Z' : 'X';
    case '00081070': // Operators' Name: Type 2 in RT Series, Type 3 in General Series
      return ctx.rt && depth === 0 ? 'Z' : 'X';
    case '00081140': // Referenced Image Sequence: Type 3 in General Image; 1C/2 inside macros and functional groups
    case '00082112': // Source Image Sequence: Type 3 in General Image; 2/1C in the Derivation Image macro
      return depth > 0 || ctx.enhanced ? 'U*' : 'X';
    default:
      return row.action.startsWith('Z') ? 'Z' : 'X';
  }
}

/** Type 2 in the SR Referenced Request Sequence (PS3.3 C.17.2): emptied there rather than removed. */
const REFERENCED_REQUEST_TYPE2 = new Set(['00081110', '00401001', '00402016', '00402017', '00321060']);

function actionFor(row: ProfileRow, ctx: Context, depth: number): Simple {
  if (ctx.sequences[ctx.sequences.length - 1] === '0040A370' && REFERENCED_REQUEST_TYPE2.has(row.tag)) {
    return row.action === 'U' || row.action === 'K' ? row.action : 'Z';
  }
  // Treatment Machine Name: X in the table, but Type 2 in the RT Beam and Ion Beam Sequences where it occurs.
  if (row.tag === '300A00B2') return 'Z';
  if (ctx.options.retainPatientCharacteristics && row.patientCharacteristics === 'K') return 'K';
  if (ctx.options.retainLongitudinalModifiedDates && row.modifiedDates) return 'shift';
  switch (row.action) {
    case 'X':
    case 'Z':
    case 'D':
    case 'U':
    case 'K':
      return row.action;
    default:
      return resolveCombined(row, ctx, depth);
  }
}

function cleanDataset(ds: DicomDataDict, ctx: Context, depth: number): DicomDataDict {
  const out: DicomDataDict = {};
  const creators = new Map<string, string>(); // 'gggg' + 'bb' -> creator, for this item
  for (const [key, el] of Object.entries(ds)) {
    const group = parseInt(key.slice(0, 4), 16);
    const element = parseInt(key.slice(4), 16);
    if (group % 2 === 1 && element >= 0x10 && element <= 0xff) creators.set(key.slice(0, 4) + key.slice(6), (firstString(el) ?? '').trim());
  }
  const keptCreators = new Set<string>();

  for (const key of Object.keys(ds).sort()) {
    const el = ds[key] as El;
    const group = parseInt(key.slice(0, 4), 16);
    const element = parseInt(key.slice(4), 16);
    if (element === 0) continue; // group lengths: stale once anything changes
    if (depth === 0 && WRITTEN_HERE.has(key)) continue;
    if (key === '00080005') {
      out[key] = { vr: 'CS', Value: ['ISO_IR 192'] }; // a nested character set: dcmjs writes this item's text as UTF-8 too
      continue;
    }

    if (group % 2 === 1) {
      if (element < 0x1000) continue; // private creators are added back below with the elements that need them
      const block = key.slice(4, 6);
      const creatorKey = key.slice(0, 4) + block;
      const creator = creators.get(creatorKey);
      if (creator !== undefined && ctx.safeRules.some((r) => matchesSafe(r, group, element, creator))) {
        out[key] = el.vr === 'SQ' ? cleanSequence(el, ctx, depth, key) : el;
        keptCreators.add(creatorKey);
        ctx.keptPrivate = true;
      }
      continue;
    }
    if (group >= 0x5000 && group <= 0x501e) continue; // Curve Data (50xx,xxxx): X
    if (group >= 0x6000 && group <= 0x601e) continue; // Overlay Data (60xx,3000) and Comments (60xx,4000): X; the plane's other attributes go with them

    if (key === '00420011') {
      // The document's bytes carry whatever the document says: never copied unless a person released this instance.
      if (!ctx.options.releasedByReviewer) {
        throw new GatewayError(ErrorCode.unsupported, "an encapsulated document (0042,0011) is not de-identified without a reviewer's release", {
          details: { reason: 'encapsulated-document' },
        });
      }
      out[key] = el;
      continue;
    }
    const content = contentItemValue(key, el, ctx);
    if (content !== undefined) {
      out[key] = content;
      continue;
    }
    if (key === '0040A730' || key === '00400555') {
      // An SR content tree (or a content item tree in Acquisition Context): its free text is replaced or cleaned item by item.
      ctx.inContent++;
      try {
        const row = basicProfile.get(key);
        const result = row ? apply(actionFor(row, ctx, depth), key, el, ctx, depth) : cleanSequence(el, ctx, depth, key);
        if (result !== undefined) out[key] = result;
      } finally {
        ctx.inContent--;
      }
      if (ctx.options.cleanStructuredContent && key === '0040A730' && ctx.sr) ctx.contentCleaned = true;
      continue;
    }

    const replaced = pseudonymised(key, el, ds, ctx, depth);
    if (replaced !== undefined) {
      out[key] = replaced;
      continue;
    }

    const row = basicProfile.get(key);
    const result = row ? apply(actionFor(row, ctx, depth), key, el, ctx, depth) : applyUnlisted(key, el, ctx, depth);
    if (result !== undefined) out[key] = result;
  }

  for (const creatorKey of keptCreators) {
    const tag = `${creatorKey.slice(0, 4)}00${creatorKey.slice(4)}`;
    const el = ds[tag];
    if (el) out[tag] = el;
  }
  if (ctx.inContent > 0) cleanLocalCode(out, ctx);
  return out;
}

const CLEAN_TEXT = 'REMOVED';

/**
 * Content item values (PS3.3 C.17.3) that are free text, names, dates or times:
 * without the Clean Structured Content Option replaced by dummies that keep the
 * item valid; with it, cleaned. Undefined for every other attribute.
 */
function contentItemValue(key: string, el: El, ctx: Context): El | undefined {
  const clean = ctx.options.cleanStructuredContent === true;
  switch (key) {
    case '0040A160': // Text Value (TEXT)
      if (!hasValue(el)) return el;
      return { vr: el.vr, Value: clean ? (el.Value ?? []).map((v) => (typeof v === 'string' ? scrubText(v, ctx.ids) : v)) : [CLEAN_TEXT] };
    case '0040A123': // Person Name (PNAME): names are never kept
      return hasValue(el) ? { vr: 'PN', Value: [{ Alphabetic: 'ANONYMOUS' }] } : el;
    case '0040A122': // Time (TIME): kept only with the dates it belongs to under Modified Dates, when cleaning
      if (!hasValue(el)) return el;
      return clean && ctx.options.retainLongitudinalModifiedDates ? el : { vr: 'TM', Value: ['000000'] };
    default:
      return undefined; // DATE, DATETIME (unlisted dates: shifted or dummy) and UIDREF (U) go through the profile
  }
}

/** A local or private coding scheme: its code meaning is free text someone typed. */
function isLocalScheme(scheme: string | undefined): boolean {
  if (scheme === undefined || scheme === '') return true;
  const s = scheme.toUpperCase();
  return s.startsWith('99') || s === 'L' || s === 'LOCAL' || s.startsWith('LOCAL');
}

/** In a content tree: a code item of a local scheme has its meaning replaced (or cleaned) and its value scrubbed of known identifiers. */
function cleanLocalCode(item: DicomDataDict, ctx: Context): void {
  const meaning = item['00080104'];
  if (!meaning || !('00080100' in item || '00080119' in item || '00080120' in item)) return;
  if (!isLocalScheme(firstString(item['00080102']))) return;
  const text = firstString(meaning) ?? '';
  item['00080104'] = { vr: meaning.vr, Value: [ctx.options.cleanStructuredContent ? fit(scrubText(text, ctx.ids), 'LO') || CLEAN_TEXT : CLEAN_TEXT] };
  for (const tag of ['00080100', '00080119', '00080120']) {
    const v = item[tag];
    const s = v && firstString(v);
    if (v && s) {
      const scrubbed = scrubText(s, ctx.ids, { generic: false });
      if (scrubbed !== s) item[tag] = { vr: v.vr, Value: [fit(scrubbed, v.vr)] };
    }
  }
}

const MAX_LENGTH: Record<string, number> = { SH: 16, LO: 64, ST: 1024, LT: 10240, UC: 0xfffffffe, UT: 0xfffffffe, UR: 0xfffffffe };

/** A scrubbed value cut to its VR's maximum length (the token can be longer than what it replaced). */
function fit(v: string, vr: string): string {
  const max = MAX_LENGTH[vr];
  return max !== undefined && v.length > max ? v.slice(0, max) : v;
}

/** Text the profile keeps goes through the scrubber: known identifiers everywhere, dates/phones/numbers too in free text. */
function scrubKept(el: El, ctx: Context): El {
  const generic = el.vr === 'LT' || el.vr === 'ST' || el.vr === 'UT' || el.vr === 'UC';
  if (!generic && el.vr !== 'LO' && el.vr !== 'SH') return el;
  let changed = false;
  const values = (el.Value ?? []).map((v) => {
    if (typeof v !== 'string' || v === '') return v;
    const s = scrubText(v, ctx.ids, { generic });
    if (s === v) return v;
    changed = true;
    return fit(s, el.vr);
  });
  return changed ? { vr: el.vr, Value: values } : el;
}

/** Patient's Name, Patient ID and Accession Number come from the pseudonym source (a Z action may put a value). */
function pseudonymised(key: string, el: El, ds: DicomDataDict, ctx: Context, depth: number): El | undefined {
  switch (key) {
    case '00100010': {
      const pid = depth === 0 ? ctx.originalPatientId : firstString(ds['00100020']);
      return { vr: 'PN', Value: [{ Alphabetic: pid === undefined ? 'ANONYMOUS' : ctx.pseudonyms.patientName(pid) }] };
    }
    case '00100020': {
      const v = firstString(el);
      return { vr: el.vr, Value: v ? [ctx.pseudonyms.patientId(v)] : [] };
    }
    case '00080050': {
      const v = firstString(el);
      return { vr: el.vr, Value: v ? [ctx.pseudonyms.accessionNumber(v)] : [] };
    }
    default:
      return undefined;
  }
}

function apply(action: Simple, key: string, el: El, ctx: Context, depth: number): El | undefined {
  switch (action) {
    case 'X':
      return undefined;
    case 'K':
      return el.vr === 'SQ' ? cleanSequence(el, ctx, depth, key) : el;
    case 'Z':
      return { vr: el.vr, Value: [] };
    case 'D':
      return dummy(key, el, ctx, depth);
    case 'U':
      return el.vr === 'UI' ? replaceUids(el, ctx) : dummy(key, el, ctx, depth);
    case 'U*':
      return el.vr === 'SQ' ? cleanSequence(el, ctx, depth, key) : undefined;
    case 'shift':
      return el.vr === 'DA' || el.vr === 'DT' ? shiftDates(el, ctx.shiftDays) : el;
  }
}

/** Attributes Table E.1-1 does not list. */
function applyUnlisted(key: string, el: El, ctx: Context, depth: number): El | undefined {
  switch (el.vr) {
    case 'SQ':
      return cleanSequence(el, ctx, depth, key);
    case 'UI':
      return NON_INSTANCE_UIDS.has(key) ? el : replaceUids(el, ctx);
    case 'DA':
    case 'DT':
      // Not in the table (e.g. Instance Creation Date, Frame Acquisition DateTime, SR content item dates)
      // but a date is still identifying: shifted under the option, otherwise a dummy (a Type 1 date stays valid).
      if (ctx.options.retainLongitudinalModifiedDates) return shiftDates(el, ctx.shiftDays);
      return hasValue(el) ? dummy(key, el, ctx, depth) : el;
    case 'PN':
      // Any other person name (e.g. a reviewer, an evaluator): a dummy, never the original.
      return hasValue(el) ? { vr: 'PN', Value: [{ Alphabetic: 'ANONYMOUS' }] } : el;
    case 'LO':
    case 'SH':
    case 'LT':
    case 'ST':
    case 'UT':
    case 'UC':
      return scrubKept(el, ctx); // descriptions, comments, labels the profile keeps
    default:
      return el; // times of day without a date, codes, measurements, pixel module attributes...
  }
}

function cleanSequence(el: El, ctx: Context, depth: number, key: string): El {
  const items = (el.Value ?? []) as DicomDataDict[];
  ctx.sequences.push(key);
  try {
    return { vr: 'SQ', Value: items.map((item) => cleanDataset(item ?? {}, ctx, depth + 1)) };
  } finally {
    ctx.sequences.pop();
  }
}

function dummy(key: string, el: El, ctx: Context, depth: number): El {
  switch (el.vr) {
    case 'SQ':
      if (key === '00401101') {
        // Person Identification Code Sequence: the code itself identifies the person.
        return { vr: 'SQ', Value: [codeItem('ANONYMIZED', '99SRGW', 'Anonymized person')] };
      }
      // Content Sequence, Verifying Observer Sequence, ...: the same items, each de-identified.
      return cleanSequence(el, ctx, depth, key);
    case 'PN':
      return { vr: 'PN', Value: [{ Alphabetic: 'ANONYMOUS' }] };
    case 'DA':
      return { vr: 'DA', Value: ['19000101'] };
    case 'TM':
      return { vr: 'TM', Value: ['000000'] };
    case 'DT':
      return { vr: 'DT', Value: ['19000101000000'] };
    case 'AS':
      return { vr: 'AS', Value: ['000D'] };
    case 'UI':
      return replaceUids(el, ctx);
    case 'DS':
    case 'IS':
    case 'US':
    case 'SS':
    case 'UL':
    case 'SL':
    case 'FL':
    case 'FD':
    case 'SV':
    case 'UV':
      return { vr: el.vr, Value: [0] };
    case 'OB':
    case 'OW':
    case 'OD':
    case 'OF':
    case 'OL':
    case 'OV':
    case 'UN': {
      const length = binaryLength(el);
      return { vr: el.vr, Value: [new ArrayBuffer(Math.max(2, length + (length % 2)))] };
    }
    case 'AT':
      return { vr: el.vr, Value: [] };
    case 'UR':
      return { vr: 'UR', Value: ['urn:anonymized'] };
    default: // AE CS LO LT SH ST UC UT
      return { vr: el.vr, Value: ['ANONYMIZED'] };
  }
}

function replaceUids(el: El, ctx: Context): El {
  const values = (el.Value ?? []).map((v) => (typeof v === 'string' ? replaceUid(v, ctx) : v));
  return { vr: 'UI', Value: values };
}

function replaceUid(raw: string, ctx: Context): string {
  const original = raw.replace(/[\0 ]+$/, '').trim();
  if (original === '' || original.startsWith('1.2.840.10008.')) return original;
  const known = ctx.uids.get(original);
  if (known !== undefined) return known;
  const replacement = ctx.pseudonyms.uid(original);
  if (!/^[0-9]+(\.[0-9]+)*$/.test(replacement) || replacement.length > 64) {
    throw new GatewayError(ErrorCode.internal, 'pseudonym source returned an invalid UID');
  }
  ctx.uids.set(original, replacement);
  return replacement;
}

function recordMethod(out: DicomDataDict, source: DicomDataDict, ctx: Context): void {
  const codes: { value: string; meaning: string; text: string }[] = [DeidentificationCodes.basic];
  if (ctx.options.retainLongitudinalModifiedDates) codes.push(DeidentificationCodes.modifiedDates);
  if (ctx.options.retainPatientCharacteristics) codes.push(DeidentificationCodes.patientCharacteristics);
  if (ctx.keptPrivate) codes.push(DeidentificationCodes.safePrivate);
  if (ctx.contentCleaned) codes.push(DeidentificationCodes.cleanStructuredContent);

  // A file de-identified before keeps its earlier method record; ours is appended (PS3.15 E.1.1).
  const earlierText = ((source['00120063']?.Value ?? []) as unknown[]).filter((v): v is string => typeof v === 'string' && v.trim() !== '');
  const earlierCodes = ((source['00120064']?.Value ?? []) as DicomDataDict[]).filter((item) => item && firstString(item['00080100']));
  const text = [...earlierText];
  for (const c of codes) if (!text.includes(c.text)) text.push(c.text);
  const items = [...earlierCodes];
  for (const c of codes) {
    if (!items.some((i) => firstString(i['00080100']) === c.value && firstString(i['00080102']) === 'DCM')) items.push(codeItem(c.value, 'DCM', c.meaning));
  }

  out['00080005'] = { vr: 'CS', Value: ['ISO_IR 192'] }; // dcmjs writes every string as UTF-8
  out['00120062'] = { vr: 'CS', Value: ['YES'] };
  out['00120063'] = { vr: 'LO', Value: text };
  out['00120064'] = { vr: 'SQ', Value: items };
  out['00280303'] = { vr: 'CS', Value: [ctx.options.retainLongitudinalModifiedDates ? 'MODIFIED' : 'REMOVED'] };
}

function codeItem(value: string, scheme: string, meaning: string): DicomDataDict {
  return {
    '00080100': { vr: 'SH', Value: [value] },
    '00080102': { vr: 'SH', Value: [scheme] },
    '00080104': { vr: 'LO', Value: [meaning] },
  };
}

// ---------------------------------------------------------------------------
// Dates

function wholeDays(n: number): number {
  if (!Number.isInteger(n) || Math.abs(n) > 365 * 200) throw new GatewayError(ErrorCode.internal, 'date shift must be a whole number of days');
  return n;
}

function shiftDates(el: El, days: number): El {
  const values = (el.Value ?? []).map((v) => {
    if (typeof v !== 'string') return '';
    const s = v.trim();
    if (s === '') return '';
    return (el.vr === 'DA' ? shiftDa(s, days) : shiftDt(s, days)) ?? '';
  });
  return { vr: el.vr, Value: values };
}

const DAY_MS = 86_400_000;

function ymd(y: number, m: number, d: number, days: number): Date | undefined {
  if (m < 1 || m > 12 || d < 1 || d > 31) return undefined;
  const t = Date.UTC(y, m - 1, d);
  const check = new Date(t);
  if (check.getUTCFullYear() !== y || check.getUTCMonth() !== m - 1 || check.getUTCDate() !== d) return undefined;
  const shifted = new Date(t + days * DAY_MS);
  const sy = shifted.getUTCFullYear();
  return sy >= 1 && sy <= 9999 ? shifted : undefined;
}

const pad = (n: number, w: number): string => String(n).padStart(w, '0');
const formatDa = (d: Date): string => `${pad(d.getUTCFullYear(), 4)}${pad(d.getUTCMonth() + 1, 2)}${pad(d.getUTCDate(), 2)}`;

/** Shifts a DA value by whole days; undefined for a value that is not a date (it is then emptied). */
export function shiftDa(value: string, days: number): string | undefined {
  const m = /^(\d{4})(\d{2})(\d{2})$/.exec(value);
  if (!m) return undefined;
  const d = ymd(Number(m[1]), Number(m[2]), Number(m[3]), days);
  return d ? formatDa(d) : undefined;
}

/** Shifts a DT value by whole days, keeping its precision, time of day and UTC offset. */
export function shiftDt(value: string, days: number): string | undefined {
  const m = /^(\d{4})(\d{2})?(\d{2})?(\d{0,6}(?:\.\d{1,6})?)?([+-]\d{4})?$/.exec(value);
  if (!m) return undefined;
  const d = ymd(Number(m[1]), m[2] ? Number(m[2]) : 1, m[3] ? Number(m[3]) : 1, days);
  if (!d) return undefined;
  const full = formatDa(d);
  const date = m[3] ? full : m[2] ? full.slice(0, 6) : full.slice(0, 4);
  return `${date}${m[4] ?? ''}${m[5] ?? ''}`;
}

// ---------------------------------------------------------------------------
// Safe private tags

interface SafeRule {
  group: number;
  block: number | null;
  element: number;
  creator?: string;
}

function parseSafePrivateTags(entries: readonly string[]): SafeRule[] {
  return entries.map((entry) => {
    const m = /^([0-9A-Fa-f]{4})(xx|XX|[0-9A-Fa-f]{2})([0-9A-Fa-f]{2})(?:@(.+))?$/.exec(entry.trim());
    const group = m ? parseInt(m[1] as string, 16) : 0;
    if (!m || group % 2 === 0) {
      throw new GatewayError(ErrorCode.invalidInput, `safe private tag '${entry}' is not GGGGxxEE or GGGGBBEE[@creator] with an odd group`);
    }
    const block = /^xx$/i.test(m[2] as string) ? null : parseInt(m[2] as string, 16);
    if (block !== null && block < 0x10) throw new GatewayError(ErrorCode.invalidInput, `safe private tag '${entry}' is not a private data element`);
    return { group, block, element: parseInt(m[3] as string, 16), ...(m[4] !== undefined ? { creator: m[4].trim() } : {}) };
  });
}

function matchesSafe(rule: SafeRule, group: number, element: number, creator: string): boolean {
  return (
    rule.group === group &&
    rule.element === (element & 0xff) &&
    (rule.block === null || rule.block === element >> 8) &&
    (rule.creator === undefined || rule.creator === creator)
  );
}

// ---------------------------------------------------------------------------
// Part 10 structure (little endian only)

type Meta = FileMeta;

const UNDEFINED = 0xffffffff;

const TRUNCATED = 'dataset is truncated';

function unreadable(message: string): GatewayError {
  return new GatewayError(ErrorCode.unreadableData, message);
}

const readMeta = readFileMeta;

interface TopElement {
  tag: number;
  start: number;
  end: number;
}

function header(buf: Buffer, o: number, explicit: boolean): { tag: number; vr: string; len: number; value: number } {
  if (o + 8 > buf.length) throw unreadable(TRUNCATED);
  const group = buf.readUInt16LE(o);
  const tag = ((group << 16) | buf.readUInt16LE(o + 2)) >>> 0;
  if (group === 0xfffe || !explicit) return { tag, vr: '', len: buf.readUInt32LE(o + 4), value: o + 8 };
  const vr = buf.toString('latin1', o + 4, o + 6);
  if (LONG_VRS.has(vr)) {
    if (o + 12 > buf.length) throw unreadable(TRUNCATED);
    return { tag, vr, len: buf.readUInt32LE(o + 8), value: o + 12 };
  }
  return { tag, vr, len: buf.readUInt16LE(o + 6), value: o + 8 };
}

/** End offset of the element at `o`, walking undefined-length sequences, items and encapsulated pixel data. */
function elementEnd(buf: Buffer, o: number, explicit: boolean): number {
  const h = header(buf, o, explicit);
  if (h.len !== UNDEFINED) {
    const end = h.value + h.len;
    if (end > buf.length) throw unreadable(TRUNCATED);
    return end;
  }
  // Undefined length: SQ, encapsulated pixel data, or UN (whose content is implicit VR little endian, CP-246).
  const inner = explicit && h.vr !== 'UN';
  let p = h.value;
  for (;;) {
    const item = header(buf, p, false);
    if (item.tag === 0xfffee0dd) return p + 8;
    if (item.tag !== 0xfffee000) throw unreadable('malformed sequence: expected an item');
    p = item.len === UNDEFINED ? itemEnd(buf, item.value, inner) : item.value + item.len;
    if (p > buf.length) throw unreadable(TRUNCATED);
  }
}

function itemEnd(buf: Buffer, p: number, explicit: boolean): number {
  for (;;) {
    if (p + 8 > buf.length) throw unreadable(TRUNCATED);
    if (buf.readUInt16LE(p) === 0xfffe && buf.readUInt16LE(p + 2) === 0xe00d) return p + 8;
    p = elementEnd(buf, p, explicit);
  }
}

function walkTopLevel(buf: Buffer, explicit: boolean): TopElement[] {
  const out: TopElement[] = [];
  let o = 0;
  while (o < buf.length) {
    if (buf.length - o < 8) {
      // Trailing zero padding after the last element is tolerated by every reader we know; anything else is not.
      if (buf.subarray(o).every((b) => b === 0)) break;
      throw unreadable(TRUNCATED);
    }
    const end = elementEnd(buf, o, explicit);
    out.push({ tag: ((buf.readUInt16LE(o) << 16) | buf.readUInt16LE(o + 2)) >>> 0, start: o, end });
    o = end;
  }
  return out;
}

const PIXEL_TAGS = new Set([0x7fe00008, 0x7fe00009, 0x7fe00010]);

function splitAtPixelData(top: TopElement[], length: number): { pixelStart: number; pixelEnd: number } {
  const first = top.findIndex((e) => PIXEL_TAGS.has(e.tag));
  if (first < 0) return { pixelStart: length, pixelEnd: length };
  let last = first;
  while (last + 1 < top.length && PIXEL_TAGS.has((top[last + 1] as TopElement).tag)) last++;
  for (const e of top.slice(last + 1)) {
    const group = e.tag >>> 16;
    // After pixel data: private groups (X), Digital Signatures Sequence and Data Set Trailing Padding (X).
    if (group % 2 === 1 || e.tag === 0xfffafffa || e.tag === 0xfffcfffc) continue;
    throw new GatewayError(ErrorCode.unsupported, `public attribute (${hex(e.tag)}) after Pixel Data cannot be de-identified`);
  }
  return { pixelStart: (top[first] as TopElement).start, pixelEnd: (top[last] as TopElement).end };
}

/**
 * A sequence sent as UN (explicit VR, CP-246: its items in implicit VR) is
 * misread by dcmjs as explicit VR: what it would write is garbage, and what it
 * reads is not what a receiver reads. Refused (unsupported) rather than guessed.
 */
function refuseUnSequences(buf: Buffer, from: number, to: number): void {
  const dictionary = (DicomMetaDictionary as unknown as { dictionary: Record<string, { vr?: string } | undefined> }).dictionary;
  let o = from;
  while (o < to) {
    if (to - o < 8) return;
    const h = header(buf, o, true);
    const end = elementEnd(buf, o, true);
    if (h.vr === 'UN' && h.tag >>> 16 !== 0xfffe) {
      const t = hex(h.tag);
      if (dictionary[`(${t})`]?.vr === 'SQ')
        throw new GatewayError(ErrorCode.unsupported, `sequence ${t} is encoded as UN: it cannot be de-identified reliably`);
    }
    if (h.vr === 'SQ') {
      let p = h.value;
      const seqEnd = h.len === UNDEFINED ? end - 8 : end;
      while (p < seqEnd) {
        const item = header(buf, p, false);
        if (item.tag !== 0xfffee000) break;
        const next = item.len === UNDEFINED ? itemEnd(buf, item.value, true) : item.value + item.len;
        refuseUnSequences(buf, item.value, item.len === UNDEFINED ? next - 8 : next);
        p = next;
      }
    }
    o = end;
  }
}

function hex(tag: number): string {
  const s = tag.toString(16).toUpperCase().padStart(8, '0');
  return `${s.slice(0, 4)},${s.slice(4)}`;
}

function verifyOutput(dataset: Buffer, explicit: boolean, headerLength: number, pixel: Buffer): void {
  let top: TopElement[];
  try {
    top = walkTopLevel(dataset, explicit);
  } catch (cause) {
    throw new GatewayError(ErrorCode.internal, 'de-identified dataset does not parse', { cause });
  }
  for (let i = 1; i < top.length; i++) {
    if ((top[i] as TopElement).tag <= (top[i - 1] as TopElement).tag) throw new GatewayError(ErrorCode.internal, 'de-identified dataset is not in tag order');
  }
  if (pixel.length > 0) {
    const pixelStart = top.find((e) => PIXEL_TAGS.has(e.tag))?.start;
    if (pixelStart !== headerLength || !dataset.subarray(headerLength).equals(pixel)) {
      throw new GatewayError(ErrorCode.internal, 'pixel data did not survive de-identification unchanged');
    }
  }
}

// ---------------------------------------------------------------------------
// dcmjs encode / decode of the non-pixel part

let dcmjsQuiet = false;
function quiet(): void {
  if (!dcmjsQuiet) {
    dcmjs.log.setLevel('error');
    dcmjsQuiet = true;
  }
}

/** A meta header naming only the syntax: what dcmjs needs to parse a bare data set. */
function syntheticMeta(transferSyntaxUid: string): Buffer {
  return writeFileMeta({
    transferSyntaxUid,
    implementationClassUid: DEIDENTIFIER_IMPLEMENTATION_CLASS_UID,
    implementationVersionName: DEIDENTIFIER_IMPLEMENTATION_VERSION_NAME,
  });
}

function toArrayBuffer(b: Buffer): ArrayBuffer {
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
}

// ---------------------------------------------------------------------------
// ISO 2022 code extensions (several character sets): dcmjs cannot decode them,
// so the header's text is decoded here (dicom-character-set) and re-encoded as
// UTF-8 before dcmjs reads it; the output says ISO_IR 192 like every output.

const { convertBytes } = createRequire(import.meta.url)('dicom-character-set') as {
  convertBytes(specificCharacterSet: string, bytes: Uint8Array, options?: { vr?: string }): string;
};

const TEXT_VRS = new Set(['SH', 'LO', 'ST', 'LT', 'UT', 'UC', 'PN']);

function charsetOf(buf: Buffer, from: number, to: number, explicit: boolean): string | undefined {
  let o = from;
  while (o + 8 <= to) {
    const h = header(buf, o, explicit);
    if (h.tag === 0x00080005 && h.len !== UNDEFINED) return buf.toString('latin1', h.value, h.value + h.len).replace(/[\0 ]+$/, '');
    if (h.tag > 0x00080005) return undefined;
    o = elementEnd(buf, o, explicit);
  }
  return undefined;
}

function needsTranscoding(charset: string | undefined): boolean {
  return charset !== undefined && (charset.includes('\\') || /ISO 2022/.test(charset));
}

/** The header bytes with every text value of an ISO 2022 dataset (or item) re-encoded as UTF-8; unchanged when there is none. */
function transcodeIso2022(buf: Buffer, explicit: boolean): Buffer {
  const top = charsetOf(buf, 0, buf.length, explicit);
  if (!needsTranscoding(top) && !buf.includes(Buffer.from('ISO 2022', 'latin1'))) return buf;
  try {
    return Buffer.concat(transcodeItem(buf, 0, buf.length, explicit, top ?? ''));
  } catch (cause) {
    if (cause instanceof GatewayError) throw cause;
    throw new GatewayError(ErrorCode.unsupported, "de-identification cannot decode this file's text (ISO 2022)", { cause });
  }
}

const vrOf = (tag: number): string | undefined => {
  const t = hex(tag);
  return (DicomMetaDictionary as unknown as { dictionary: Record<string, { vr?: string } | undefined> }).dictionary[`(${t})`]?.vr;
};

function elementBytes(tag: number, vr: string, value: Buffer, explicit: boolean): Buffer {
  const long = LONG_VRS.has(vr);
  const h = Buffer.alloc(explicit ? (long ? 12 : 8) : 8);
  h.writeUInt16LE(tag >>> 16, 0);
  h.writeUInt16LE(tag & 0xffff, 2);
  if (!explicit) h.writeUInt32LE(value.length, 4);
  else if (long) {
    h.write(vr, 4, 'latin1');
    h.writeUInt32LE(value.length, 8);
  } else {
    if (value.length > 0xffff) throw new GatewayError(ErrorCode.unsupported, `re-encoded ${hex(tag)} is too long for its VR`);
    h.write(vr, 4, 'latin1');
    h.writeUInt16LE(value.length, 6);
  }
  return Buffer.concat([h, value]);
}

/** Elements [from, to) re-encoded: text as UTF-8 (decoded with `charset`, or the item's own), sequences and items with undefined length. */
function transcodeItem(buf: Buffer, from: number, to: number, explicit: boolean, inherited: string): Buffer[] {
  const own = charsetOf(buf, from, to, explicit);
  const charset = own ?? inherited;
  const out: Buffer[] = [];
  let o = from;
  while (o < to) {
    if (to - o < 8) {
      out.push(buf.subarray(o, to));
      break;
    }
    const h = header(buf, o, explicit);
    const end = elementEnd(buf, o, explicit);
    const vr = explicit ? h.vr : (vrOf(h.tag) ?? '');
    const group = h.tag >>> 16;
    if (h.tag === 0x00080005) {
      out.push(elementBytes(h.tag, 'CS', Buffer.from('ISO_IR 192', 'latin1'), explicit));
    } else if (vr === 'SQ' || (h.len === UNDEFINED && vr !== 'UN' && group !== 0x7fe0)) {
      const seqHeader = Buffer.alloc(explicit ? 12 : 8);
      seqHeader.writeUInt16LE(group, 0);
      seqHeader.writeUInt16LE(h.tag & 0xffff, 2);
      if (explicit) {
        seqHeader.write('SQ', 4, 'latin1');
        seqHeader.writeUInt32LE(UNDEFINED, 8);
      } else seqHeader.writeUInt32LE(UNDEFINED, 4);
      out.push(seqHeader);
      let p = h.value;
      const seqEnd = h.len === UNDEFINED ? end - 8 : end;
      while (p < seqEnd) {
        const item = header(buf, p, false);
        if (item.tag !== 0xfffee000) break;
        const next = item.len === UNDEFINED ? itemEnd(buf, item.value, explicit) : item.value + item.len;
        out.push(Buffer.from([0xfe, 0xff, 0x00, 0xe0, 0xff, 0xff, 0xff, 0xff]));
        out.push(...transcodeItem(buf, item.value, item.len === UNDEFINED ? next - 8 : next, explicit, charset));
        out.push(Buffer.from([0xfe, 0xff, 0x0d, 0xe0, 0, 0, 0, 0]));
        p = next;
      }
      out.push(Buffer.from([0xfe, 0xff, 0xdd, 0xe0, 0, 0, 0, 0]));
    } else if (TEXT_VRS.has(vr) && h.len !== UNDEFINED && group % 2 === 0) {
      const text = convertBytes(charset, buf.subarray(h.value, h.value + h.len), { vr });
      let value = Buffer.from(text, 'utf8');
      if (value.length % 2) value = Buffer.concat([value, Buffer.from(' ')]);
      out.push(elementBytes(h.tag, vr, value, explicit));
    } else {
      out.push(buf.subarray(o, end));
    }
    o = end;
  }
  return out;
}

function parseHeader(bytes: Buffer, syntax: string): DicomDataDict {
  quiet();
  try {
    return DicomMessage.readFile(toArrayBuffer(Buffer.concat([syntheticMeta(syntax), bytes]))).dict;
  } catch (cause) {
    const message = cause instanceof Error ? cause.message : String(cause);
    if (/character set/i.test(message)) {
      throw new GatewayError(ErrorCode.unsupported, `de-identification cannot decode this file's text: ${message}`, { cause });
    }
    throw new GatewayError(ErrorCode.unreadableData, 'dataset cannot be parsed for de-identification', { cause });
  }
}

/** Dataset bytes (no preamble, no meta) of `dict` encoded in `syntax` by dcmjs. */
function encodeDataset(dict: DicomDataDict, syntax: string): Buffer {
  const d = new DicomDict({ '00020010': { vr: 'UI', Value: [syntax] } });
  d.dict = dict;
  let bytes: Buffer;
  try {
    bytes = Buffer.from(d.write({ allowInvalidVRLength: true }));
  } catch (cause) {
    throw new GatewayError(ErrorCode.internal, 'de-identified dataset cannot be encoded', { cause });
  }
  return bytes.subarray(144 + bytes.readUInt32LE(140));
}

function encodeMeta(m: { sopClassUid: string; sopInstanceUid: string; transferSyntaxUid: string }): Buffer {
  return writeFileMeta({
    transferSyntaxUid: m.transferSyntaxUid,
    // A source without SOP class/instance (not a valid instance to begin with) does not get empty ones.
    ...(m.sopClassUid ? { sopClassUid: m.sopClassUid } : {}),
    ...(m.sopInstanceUid ? { sopInstanceUid: m.sopInstanceUid } : {}),
    implementationClassUid: DEIDENTIFIER_IMPLEMENTATION_CLASS_UID,
    implementationVersionName: DEIDENTIFIER_IMPLEMENTATION_VERSION_NAME,
  });
}

// ---------------------------------------------------------------------------
// Small helpers

function firstString(el: DicomElement | undefined): string | undefined {
  const v = el?.Value?.[0];
  if (typeof v === 'string') return v.replace(/[\0 ]+$/, '').trim();
  return undefined;
}

function hasValue(el: DicomElement): boolean {
  return (el.Value ?? []).some((v) => v !== '' && v !== null && v !== undefined);
}

function binaryLength(el: DicomElement): number {
  let n = 0;
  for (const v of el.Value ?? []) {
    if (v instanceof ArrayBuffer) n += v.byteLength;
    else if (ArrayBuffer.isView(v)) n += v.byteLength;
  }
  return n;
}
