/**
 * The identifiers a study is known by: what must never be found in anything
 * sent to a de-identified destination. Built from the SOURCE dataset
 * (`identifiersFromDataset`) and extended with what the linked HL7 order and
 * reports say (`addPersonName`, `addId`, `addDate`, `addText`).
 *
 * Each identifier becomes one or more "needles": lower-case strings searched
 * case-insensitively by the scrubber (text-scrubber.ts) and the verifier
 * (phi-verifier.ts). To keep false positives (which hold a delivery) rare:
 * values shorter than 3 characters and pure numbers shorter than 4 digits are
 * not kept, and a needle only matches where it is not glued to more letters or
 * digits of the same kind (see `isBoundaryMatch`).
 */
import dcmjs, { type DicomDataDict, type DicomElement } from 'dcmjs';
import { ErrorCode, GatewayError } from '../errors.js';

export type IdentifierKind =
  'patient-name' | 'person-name' | 'patient-id' | 'id' | 'accession' | 'birth-date' | 'date' | 'institution' | 'address' | 'phone' | 'station' | 'text';

export interface Needle {
  /** Lower case (ASCII letters folded; other characters as given). */
  text: string;
  kind: IdentifierKind;
}

/** Name parts that are titles or suffixes, not identifying on their own. */
const NAME_NOISE = new Set([
  'mrs',
  'miss',
  'prof',
  'phd',
  'md',
  'jr',
  'jr.',
  'sr',
  'sr.',
  'iii',
  'dr.',
  'mr.',
  'mrs.',
  'ms.',
  'the',
  'van',
  'von',
  'der',
  'den',
  'del',
  'de la',
]);

/** Placeholders that already-de-identified sources use for a missing value: not identifiers (they match our own dummies). */
const PLACEHOLDERS = new Set([
  'anon',
  'anonymous',
  'anonymized',
  'anonymised',
  'removed',
  'unknown',
  'none',
  'null',
  'n/a',
  'test',
  'xxx',
  'xxxx',
  'nobody',
  'patient',
  'dummy',
  'redacted',
  'deidentified',
  'de-identified',
]);

const CJK = /[\p{Script=Han}\p{Script=Hangul}\p{Script=Hiragana}\p{Script=Katakana}]/u;

const MONTHS = ['january', 'february', 'march', 'april', 'may', 'june', 'july', 'august', 'september', 'october', 'november', 'december'];

export const lowerAscii = (s: string): string => s.replace(/[A-Z]/g, (c) => String.fromCharCode(c.charCodeAt(0) + 32));

/** Lower case for every letter whose lower case has the same length (so indexes into the original stay valid). */
export const lowerText = (s: string): string =>
  s.replace(/\p{Lu}/gu, (c) => {
    const l = c.toLowerCase();
    return l.length === c.length ? l : c;
  });

/** True when a value is long enough to search for without matching everything. */
function searchable(v: string): boolean {
  // two ideographs or syllables are a name (many CJK names are 2-3 characters); two Latin letters are not
  if (v.length === 2 && /^[\p{Script=Han}\p{Script=Hangul}\p{Script=Hiragana}\p{Script=Katakana}]{2}$/u.test(v)) return true;
  if (v.length < 3) return false;
  if (/^\d+$/.test(v) && v.length < 4) return false;
  return /[\p{L}\p{N}]/u.test(v);
}

export class KnownIdentifiers {
  private readonly map = new Map<string, IdentifierKind>();
  private sorted: Needle[] | undefined;

  /** Every needle, longest first (so a scrubber replaces 'SMITH^JOHN' before 'JOHN'). Do not modify the array. */
  needles(): readonly Needle[] {
    this.sorted ??= [...this.map.entries()].map(([text, kind]) => ({ text, kind })).sort((a, b) => b.text.length - a.text.length || (a.text < b.text ? -1 : 1));
    return this.sorted;
  }

  get size(): number {
    return this.map.size;
  }

  /** Adds one needle as given (trimmed); ignored when too short to search for. */
  addRaw(value: string, kind: IdentifierKind): this {
    const v = lowerText(value.replace(/\0/g, '').trim());
    if (!searchable(v) || PLACEHOLDERS.has(v)) return this;
    if (!this.map.has(v)) {
      this.map.set(v, kind);
      this.sorted = undefined;
    }
    return this;
  }

  /**
   * A person name as DICOM PN (`Family^Given^Middle^Prefix^Suffix`, `=`
   * separated representations) or HL7 XPN/XCN (`Family^Given^...`, with `&`
   * subcomponents, or an XCN id first). Each component of 3+ characters
   * is a needle; so are the whole PN forms, for the path report.
   */
  addPersonName(raw: string, kind: IdentifierKind = 'person-name'): this {
    if (!raw) return this;
    for (const group of raw.split('=')) {
      const parts = group.split(/[\^&]/).map((p) => p.trim());
      for (const part of parts) {
        for (const word of part.split(/[\s,]+/)) {
          const w = lowerText(word);
          if (NAME_NOISE.has(w)) continue;
          // an XCN id component (a number) is an id, not a name
          if (/^\d+$/.test(w)) this.addRaw(w, 'id');
          else this.addRaw(w, kind);
        }
        if (/\s/.test(part)) this.addRaw(part, kind); // a multi-word family name ('VAN DER BERG')
      }
      // CJK names are written without a separator in free text: 山田^太郎 -> 山田太郎
      const joined = parts.join('');
      if (parts.length > 1 && /[\p{Script=Han}\p{Script=Hangul}\p{Script=Hiragana}\p{Script=Katakana}]/u.test(joined)) this.addRaw(joined, kind);
    }
    return this;
  }

  /** An identifier (patient id, other id, accession, order number, serial...) searched as given. */
  addId(x: string, kind: IdentifierKind = 'id'): this {
    if (!x) return this;
    // HL7 CX: the id is the first component
    const id = x.includes('^') ? (x.split('^')[0] ?? '') : x;
    return this.addRaw(id, kind);
  }

  /** A date (YYYYMMDD, YYYY-MM-DD or an HL7 TS starting with it) in the spellings free text uses. */
  addDate(date: string, kind: IdentifierKind = 'date'): this {
    const m = /^(\d{4})-?(\d{2})-?(\d{2})/.exec((date ?? '').trim());
    if (!m) return this;
    const [y, mo, d] = [m[1] as string, m[2] as string, m[3] as string];
    const mi = Number(mo) - 1;
    if (mi < 0 || mi > 11 || Number(d) < 1 || Number(d) > 31) return this;
    for (const s of dateSpellings(y, mo, d)) this.addRaw(s, kind);
    return this;
  }

  /**
   * Free text known to identify (institution, department, address, phone,
   * station name): the whole value, the lines of an address (HL7 XAD `^`,
   * DICOM lines, commas) of 5+ characters, and a phone number's digits.
   */
  addText(x: string, kind: IdentifierKind = 'text'): this {
    if (!x) return this;
    const whole = x.replace(/\s+/g, ' ').trim();
    this.addRaw(whole, kind);
    if (kind === 'phone') {
      for (const p of x.split(/[\\~]/)) {
        const digits = p.replace(/\D/g, '');
        if (digits.length >= 7) this.addRaw(digits, 'phone');
        if (p.trim() !== whole) this.addRaw(p.trim(), 'phone');
      }
      return this;
    }
    if (kind === 'address') {
      for (const line of x.split(/[\^\\,\r\n]+/)) {
        const l = line.replace(/\s+/g, ' ').trim();
        if (l.length >= 5 && l !== whole) this.addRaw(l, 'address');
      }
    }
    return this;
  }

  /** Everything `other` knows, added to this. */
  merge(other: KnownIdentifiers): this {
    for (const n of other.needles()) if (!this.map.has(n.text)) this.map.set(n.text, n.kind);
    this.sorted = undefined;
    return this;
  }
}

function dateSpellings(y: string, mo: string, d: string): string[] {
  const month = MONTHS[Number(mo) - 1] as string;
  const mon = month.slice(0, 3);
  const dn = String(Number(d));
  const mn = String(Number(mo));
  return [
    `${y}${mo}${d}`,
    `${y}-${mo}-${d}`,
    `${y}/${mo}/${d}`,
    `${y}.${mo}.${d}`,
    `${d}.${mo}.${y}`,
    `${dn}.${mn}.${y}`,
    `${d}/${mo}/${y}`,
    `${dn}/${mn}/${y}`,
    `${d}-${mo}-${y}`,
    `${mo}/${d}/${y}`,
    `${mn}/${dn}/${y}`,
    `${mo}-${d}-${y}`,
    `${dn} ${mon} ${y}`,
    `${d} ${mon} ${y}`,
    `${dn} ${month} ${y}`,
    `${dn}-${mon}-${y}`,
    `${d}-${mon}-${y}`,
    `${dn}. ${month} ${y}`,
    `${mon} ${dn}, ${y}`,
    `${month} ${dn}, ${y}`,
    `${mon} ${dn} ${y}`,
    `${month} ${dn} ${y}`,
  ];
}

/** Letters or digits: the classes a match must not be glued to. */
function charClass(c: string | undefined): 'L' | 'N' | null {
  if (c === undefined) return null;
  if (/\p{N}/u.test(c)) return 'N';
  if (/\p{L}/u.test(c)) return 'L';
  return null;
}

/**
 * A match of `needle` at `index` in `haystack` counts unless it is glued to a
 * character of the same class as the needle's end it touches ('ANN' inside
 * 'ANNOTATION' does not count; '7781234' in 'PID7781234' does).
 */
export function isBoundaryMatch(haystack: string, index: number, needle: string): boolean {
  // CJK text has no spaces between words: no boundary on a CJK end
  const first = CJK.test(needle[0] ?? '') ? null : charClass(needle[0]);
  const last = CJK.test(needle[needle.length - 1] ?? '') ? null : charClass(needle[needle.length - 1]);
  const before = charClass(haystack[index - 1]);
  const after = charClass(haystack[index + needle.length]);
  if (first !== null && before === first) return false;
  if (last !== null && after === last) return false;
  return true;
}

// ---------------------------------------------------------------------------
// From a dataset

const PATIENT_NAMES = new Set(['00100010', '00101001', '00101060', '00101005']);
const IDS: ReadonlyMap<string, IdentifierKind> = new Map([
  ['00100020', 'patient-id'],
  ['00101000', 'patient-id'], // Other Patient IDs (retired)
  ['00100021', 'id'], // Issuer of Patient ID
  ['00080050', 'accession'],
  ['00200010', 'id'], // Study ID
  ['00401001', 'id'], // Requested Procedure ID
  ['00400009', 'id'], // Scheduled Procedure Step ID
  ['00400253', 'id'], // Performed Procedure Step ID
  ['00402016', 'id'], // Placer Order Number
  ['00402017', 'id'], // Filler Order Number
  ['00380010', 'id'], // Admission ID
  ['00380400', 'id'], // Patient's Institution Residence
  ['00181000', 'id'], // Device Serial Number
  ['00101090', 'id'], // Medical Record Locator
  ['00120040', 'id'], // Clinical Trial Subject ID
  ['00120042', 'id'], // Clinical Trial Subject Reading ID
]);
const TEXTS: ReadonlyMap<string, IdentifierKind> = new Map([
  ['00080080', 'institution'],
  ['00081040', 'institution'], // Institutional Department Name
  ['00080081', 'address'], // Institution Address
  ['00101040', 'address'], // Patient's Address
  ['00080092', 'address'], // Referring Physician's Address
  ['00401102', 'address'], // Person's Address
  ['00102154', 'phone'],
  ['00102155', 'phone'], // Patient's Telecom Information
  ['00080094', 'phone'], // Referring Physician's Telephone Numbers
  ['00401103', 'phone'], // Person's Telephone Numbers
  ['00081010', 'station'],
  ['00102299', 'institution'], // Responsible Organization
  ['0040A027', 'institution'], // Verifying Organization
  ['00321033', 'institution'], // Requesting Service
  ['00400243', 'station'], // Performed Location
  ['00400011', 'station'], // Scheduled Procedure Step Location
]);

function strings(el: DicomElement | undefined): string[] {
  const out: string[] = [];
  for (const v of el?.Value ?? []) {
    if (typeof v === 'string') out.push(v);
    else if (v && typeof v === 'object' && !(v instanceof ArrayBuffer) && !ArrayBuffer.isView(v)) {
      for (const r of ['Alphabetic', 'Ideographic', 'Phonetic'] as const) {
        const s = (v as Record<string, unknown>)[r];
        if (typeof s === 'string') out.push(s);
      }
    }
  }
  return out;
}

function collect(dict: DicomDataDict, ids: KnownIdentifiers): void {
  for (const [tag, el] of Object.entries(dict)) {
    if (el.vr === 'SQ') {
      for (const item of (el.Value ?? []) as DicomDataDict[]) if (item) collect(item, ids);
      continue;
    }
    if (el.vr === 'PN') {
      for (const s of strings(el)) ids.addPersonName(s, PATIENT_NAMES.has(tag) ? 'patient-name' : 'person-name');
      continue;
    }
    if (tag === '00100030') {
      for (const s of strings(el)) ids.addDate(s, 'birth-date');
      continue;
    }
    const idKind = IDS.get(tag);
    if (idKind) {
      // an issuer is often a short system code (HIS, RIS, MRN, PACS): only a distinctive one is searched for
      for (const s of strings(el)) if (tag !== '00100021' || s.trim().length >= 6) ids.addId(s, idKind);
      continue;
    }
    const textKind = TEXTS.get(tag);
    if (textKind) for (const s of strings(el)) ids.addText(s, textKind);
  }
}

/**
 * The identifiers of a source dataset: a dcmjs dataset dictionary, or a Part 10
 * buffer (only the header before Pixel Data is read, by dcmjs: a file with ISO
 * 2022 code extensions is read with deidentify.ts `readSourceHeader` first).
 */
export function identifiersFromDataset(source: DicomDataDict | Buffer, into: KnownIdentifiers = new KnownIdentifiers()): KnownIdentifiers {
  let dict: DicomDataDict;
  if (Buffer.isBuffer(source)) {
    dcmjs.log.setLevel('error');
    const ab = source.buffer.slice(source.byteOffset, source.byteOffset + source.byteLength) as ArrayBuffer;
    try {
      dict = dcmjs.data.DicomMessage.readFile(ab, { untilTag: '7FE00010', includeUntilTagValue: false }).dict;
    } catch (cause) {
      throw new GatewayError(ErrorCode.unreadableData, 'dataset cannot be read for its identifiers', { cause });
    }
  } else {
    dict = source;
  }
  collect(dict, into);
  return into;
}
