/**
 * The last check before a de-identified instance leaves: is any of the study's
 * known identifiers still in it? Scans the OUTPUT bytes, not a parsed model:
 * every element value of the header part (everything before the top-level
 * Pixel Data, and after it if present), in any VR (text, numbers, OB/UN/OW
 * private blobs, encapsulated documents), inside nested sequences and private
 * blocks, plus the bytes between values (a needle that straddles elements).
 * Pixel data is not scanned (burned-in text is decided by instance-risk.ts).
 *
 * Matching is on bytes, ASCII case folded, with the needle in UTF-8 and
 * ISO 8859-1 (the encodings our output and its sources use); a match glued to
 * more letters/digits of its own kind does not count (known-identifiers.ts).
 * UIDs: a value the de-identifier produced (`producedUids`) is skipped; any
 * other UID counts only when the identifier is made of whole UID components.
 *
 * A hit says where (attribute path, item indexes from 0, e.g.
 * `0040A730[2].0040A160`) and what kind of identifier, never the value.
 */
import { LONG_VRS, readFileMeta } from '../dicom/part10.js';
import { TransferSyntax } from '../dicom/uids.js';
import { inflateRawSync } from 'node:zlib';
import { lowerAscii, type IdentifierKind, type KnownIdentifiers } from './known-identifiers.js';

export interface VerifyHit {
  path: string;
  kind: IdentifierKind;
}

export type VerifyResult = { clean: true } | { clean: false; hits: VerifyHit[] };

export interface VerifyOptions {
  /** UIDs the de-identifier generated: never searched. */
  producedUids?: Iterable<string>;
}

interface Segment {
  start: number;
  end: number;
  path: string;
  uid: boolean;
  /** Code String: names are not searched there (their words collide with defined terms such as TEXT, CODE, HEAD). */
  cs: boolean;
}

const UNDEFINED = 0xffffffff;
const PIXEL_TAGS = new Set([0x7fe00008, 0x7fe00009, 0x7fe00010]);
const DEFLATE = TransferSyntax.deflate;
const IMPLICIT = TransferSyntax.implicitLe;
const BIG_ENDIAN = TransferSyntax.explicitBe;

class Truncated extends Error {}

const CJK = /[\p{Script=Han}\p{Script=Hangul}\p{Script=Hiragana}\p{Script=Katakana}]/u;

function tagHex(tag: number): string {
  return tag.toString(16).toUpperCase().padStart(8, '0');
}

/** Walks the dataset in `buf` from `o`; records leaf value ranges. Stops quietly where a prefix ends. */
class Walker {
  readonly segments: Segment[] = [];
  /** Top-level pixel data values: not scanned. */
  readonly excluded: [number, number][] = [];
  constructor(private readonly buf: Buffer) {}

  private need(o: number, n: number): void {
    if (o + n > this.buf.length) throw new Truncated();
  }

  private header(o: number, explicit: boolean): { tag: number; vr: string; len: number; value: number } {
    this.need(o, 8);
    const b = this.buf;
    const group = b.readUInt16LE(o);
    const tag = ((group << 16) | b.readUInt16LE(o + 2)) >>> 0;
    if (group === 0xfffe || !explicit) return { tag, vr: '', len: b.readUInt32LE(o + 4), value: o + 8 };
    const vr = b.toString('latin1', o + 4, o + 6);
    if (!/^[A-Z]{2}$/.test(vr)) throw new Error('not a VR');
    if (LONG_VRS.has(vr)) {
      this.need(o, 12);
      return { tag, vr, len: b.readUInt32LE(o + 8), value: o + 12 };
    }
    return { tag, vr, len: b.readUInt16LE(o + 6), value: o + 8 };
  }

  /** Elements from `o` to `end` (or an item delimiter when `end` is undefined); returns the offset after. */
  elements(o: number, end: number | undefined, explicit: boolean, prefix: string, top: boolean): number {
    const b = this.buf;
    for (;;) {
      if (end !== undefined && o >= end) return o;
      if (end === undefined && o >= b.length) throw new Truncated();
      if (top && b.length - o < 8) return b.length; // trailing padding
      const h = this.header(o, explicit);
      if (h.tag === 0xfffee00d) return h.value;
      const path = `${prefix}${tagHex(h.tag)}`;
      if (top && PIXEL_TAGS.has(h.tag)) {
        o = h.len === UNDEFINED ? this.skipFragments(h.value) : h.value + h.len;
        this.excluded.push([h.value, Math.min(o, b.length)]);
        if (o > b.length) return b.length;
        continue;
      }
      const looksLikeItems =
        h.len !== UNDEFINED && h.len >= 8 && h.value + 4 <= b.length && b.readUInt16LE(h.value) === 0xfffe && b.readUInt16LE(h.value + 2) === 0xe000;
      if (h.vr === 'SQ' || h.len === UNDEFINED || (!explicit && looksLikeItems)) {
        const inner = explicit && h.vr !== 'UN';
        o = this.sequence(h.value, h.len === UNDEFINED ? undefined : h.value + h.len, inner, path);
        continue;
      }
      const valueEnd = h.value + h.len;
      this.need(h.value, h.len);
      this.segments.push({ start: h.value, end: valueEnd, path, uid: h.vr === 'UI' || (!explicit && isUidLike(b, h.value, valueEnd)), cs: h.vr === 'CS' });
      o = valueEnd;
    }
  }

  private sequence(o: number, end: number | undefined, explicit: boolean, path: string): number {
    let index = 0;
    for (;;) {
      if (end !== undefined && o >= end) return o;
      const item = this.header(o, false);
      if (item.tag === 0xfffee0dd) return item.value;
      if (item.tag !== 0xfffee000) throw new Error('expected an item');
      const prefix = `${path}[${index++}].`;
      o =
        item.len === UNDEFINED
          ? this.elements(item.value, undefined, explicit, prefix, false)
          : this.elements(item.value, item.value + item.len, explicit, prefix, false);
    }
  }

  private skipFragments(o: number): number {
    for (;;) {
      if (o + 8 > this.buf.length) return this.buf.length + 1;
      const item = this.header(o, false);
      if (item.tag === 0xfffee0dd) return item.value;
      o = item.value + item.len;
    }
  }
}

function isUidLike(b: Buffer, start: number, end: number): boolean {
  if (end - start < 3) return false;
  let dots = 0;
  for (let i = start; i < end; i++) {
    const c = b[i] as number;
    if (c === 0x2e) dots++;
    else if ((c < 0x30 || c > 0x39) && !(c === 0 && i === end - 1)) return false;
  }
  return dots >= 2;
}

/** Bytes [start, end) of `src` into `out` (from 0), ASCII letters folded to lower case, every other byte as is. */
function foldAscii(src: Buffer, out: Buffer, start: number, end: number): void {
  for (let i = start; i < end; i++) {
    const c = src[i] as number;
    out[i - start] = c >= 0x41 && c <= 0x5a ? c + 32 : c;
  }
}

function byteClass(c: number | undefined): 'L' | 'N' | null {
  if (c === undefined) return null;
  if (c >= 0x30 && c <= 0x39) return 'N';
  if ((c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || c >= 0x80) return 'L';
  return null;
}

function readMetaTransferSyntax(buf: Buffer): { end: number; ts: string } | undefined {
  try {
    const m = readFileMeta(buf);
    return { end: m.end, ts: m.transferSyntaxUid };
  } catch {
    return undefined;
  }
}

/**
 * Scans a de-identified Part 10 file, or only its prefix (meta + dataset up to
 * the Pixel Data element, as `deidentifyFile` returns it), for `ids`.
 */
export function verifyDeidentified(part10: Buffer, ids: KnownIdentifiers, options: VerifyOptions = {}): VerifyResult {
  const needles = ids.needles();
  if (needles.length === 0) return { clean: true };
  const produced = new Set<string>();
  for (const u of options.producedUids ?? []) produced.add(u);

  // The scanned bytes and their segments: meta, then the dataset (inflated when deflated).
  let buf = part10;
  let segments: Segment[] = [];
  let excluded: [number, number][] = [];
  const meta = readMetaTransferSyntax(part10);
  if (meta) {
    const metaWalker = new Walker(part10.subarray(0, meta.end));
    try {
      metaWalker.elements(132, meta.end, true, '', false);
    } catch {
      /* the raw scan still covers the meta bytes */
    }
    let dataset = part10.subarray(meta.end);
    if (meta.ts === DEFLATE) {
      try {
        dataset = inflateRawSync(dataset);
      } catch {
        /* scanned raw as it is */
      }
      buf = Buffer.concat([part10.subarray(0, meta.end), dataset]);
    }
    segments = metaWalker.segments;
    if (meta.ts !== BIG_ENDIAN) {
      const w = new Walker(buf);
      try {
        w.elements(meta.end, buf.length, meta.ts !== IMPLICIT, '', true);
      } catch {
        // A prefix that ends inside an element, or a structure we cannot walk: what was walked keeps its paths, the rest is scanned raw.
      }
      segments = segments.concat(w.segments);
      excluded = w.excluded;
    }
  }

  // Only the bytes outside pixel data are folded and searched: a 512x512 CT costs its header, not its pixels.
  const regions: [number, number][] = [];
  let from = 0;
  for (const [s, e] of [...excluded].sort((a, b) => a[0] - b[0])) {
    if (s > from) regions.push([from, s]);
    from = Math.max(from, e);
  }
  if (from < buf.length) regions.push([from, buf.length]);
  const folded = regions.map(([s, e]) => {
    const out = Buffer.allocUnsafe(e - s);
    foldAscii(buf, out, s, e);
    return out;
  });
  const hits = new Map<string, VerifyHit>();
  const starts = segments.map((s) => s.start);
  for (const needle of needles) {
    // UTF-8 (what we write), and ISO 8859-1 when the needle can be written in it (what many sources use)
    const t = needle.text;
    const forms = new Set([t]);
    if (!/^[\x00-\x7f]*$/.test(t)) {
      // bytes are folded for ASCII only: the other letters also in upper case and capitalised ('MÜLLER', 'Über')
      forms.add(lowerAscii(t.toUpperCase()));
      forms.add(lowerAscii((t[0] ?? '').toUpperCase()) + t.slice(1));
    }
    const patterns: Buffer[] = [];
    for (const f of forms) {
      patterns.push(Buffer.from(f, 'utf8'));
      if (/[\x80-\xff]/.test(f) && /^[\x00-\xff]*$/.test(f)) patterns.push(Buffer.from(f, 'latin1'));
    }
    const isName = needle.kind === 'patient-name' || needle.kind === 'person-name';
    const isDate = needle.kind === 'birth-date' || needle.kind === 'date';
    // CJK text has no spaces between words: no boundary on a CJK end
    const loose = { start: CJK.test(t[0] ?? ''), end: isDate || CJK.test(t[t.length - 1] ?? '') };
    for (const p of patterns) {
      for (let r = 0; r < regions.length; r++) {
        const rs = (regions[r] as [number, number])[0];
        const view = folded[r] as Buffer;
        let j = view.indexOf(p);
        while (j >= 0) {
          const hit = judge(view, rs, buf, rs + j, p.length, segments, starts, produced, isName, loose);
          if (hit !== null) {
            const key = `${hit}|${needle.kind}`;
            if (!hits.has(key)) hits.set(key, { path: hit, kind: needle.kind });
          }
          j = view.indexOf(p, j + 1);
        }
      }
    }
  }
  if (hits.size === 0) return { clean: true };
  return { clean: false, hits: [...hits.values()] };
}

/** The path of a match at `i` (length `n`) or null when it does not count. `view` holds the folded bytes of the region starting at `rs`. */
function judge(
  view: Buffer,
  rs: number,
  buf: Buffer,
  i: number,
  n: number,
  segs: Segment[],
  starts: number[],
  produced: Set<string>,
  isName: boolean,
  loose: { start: boolean; end: boolean },
): string | null {
  const at = (k: number): number | undefined => (k >= rs && k - rs < view.length ? view[k - rs] : undefined);
  const before = loose.start ? null : byteClass(at(i - 1));
  // a DT value continues a date with its time: '19570313' counts in '19570313101010'
  const after = loose.end ? null : byteClass(at(i + n));
  const first = byteClass(at(i));
  const last = byteClass(at(i + n - 1));
  // binary search: last segment starting at or before i
  let lo = 0;
  let hi = starts.length - 1;
  let idx = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if ((starts[mid] as number) <= i) {
      idx = mid;
      lo = mid + 1;
    } else hi = mid - 1;
  }
  const seg = idx >= 0 ? segs[idx] : undefined;
  if (seg && i + n <= seg.end) {
    // boundaries inside the value: the value's own ends are boundaries
    const b = i === seg.start ? null : before;
    const a = i + n === seg.end ? null : after;
    if (first !== null && b === first) return null;
    if (last !== null && a === last) return null;
    if (isName && seg.cs) return null;
    if (seg.uid) {
      const value = buf.toString('latin1', seg.start, seg.end).replace(/[\0 ]+$/, '');
      for (const uid of value.split('\\')) if (produced.has(uid.trim())) return null;
      const dotBefore = i === seg.start || at(i - 1) === 0x2e || at(i - 1) === 0x5c;
      const dotAfter = i + n >= seg.end || at(i + n) === 0x2e || at(i + n) === 0x5c || at(i + n) === 0 || at(i + n) === 0x20;
      if (!dotBefore || !dotAfter) return null;
    }
    return seg.path;
  }
  if (first !== null && before === first) return null;
  if (last !== null && after === last) return null;
  return `@${i}`;
}
