import { ErrorCode, GatewayError } from '../errors.js';

/**
 * A small HL7 v2 reader: segments, fields, repetitions, components and
 * subcomponents, with the delimiters the message declares in MSH-1/MSH-2.
 *
 * Why not node-hl7-client's `Message`: measured here it costs about 0.6 ms to
 * parse a 3 KB ORU (more than half of the whole per-message budget at 1,000
 * messages/s with a durable commit), its `toString()` returns only the first
 * component, and its `unescape` leaves `\.br\` in report text. This reader
 * splits lazily (a field is only cut into components when asked for) and is
 * the one place that knows HL7 encoding rules; test/hl7/hl7-parse.test.ts
 * checks it against node-hl7-client on the same messages.
 */
export interface Delimiters {
  field: string;
  component: string;
  repetition: string;
  escape: string;
  subcomponent: string;
}

export const standardDelimiters: Readonly<Delimiters> = Object.freeze({ field: '|', component: '^', repetition: '~', escape: '\\', subcomponent: '&' });

export interface Segment {
  readonly name: string;
  /** Raw (still escaped) fields, numbered as in the standard: `fields[3]` is SEG-3. For MSH, `fields[1]` is the field separator. */
  readonly fields: readonly string[];
}

export interface Hl7Path {
  segment: string;
  field: number;
  /** 1-based; absent means the first component. */
  component?: number;
  /** 1-based; absent means the first subcomponent. */
  subcomponent?: number;
}

const pathPattern = /^([A-Z][A-Z0-9]{2})-([1-9][0-9]*)(?:\.([1-9][0-9]*))?(?:\.([1-9][0-9]*))?$/;

export function parsePath(path: string): Hl7Path {
  const m = pathPattern.exec(path);
  if (!m) throw new GatewayError(ErrorCode.invalidInput, `not an HL7 path: ${path}`);
  return {
    segment: m[1]!,
    field: Number(m[2]),
    component: m[3] === undefined ? undefined : Number(m[3]),
    subcomponent: m[4] === undefined ? undefined : Number(m[4]),
  };
}

/** Turns the bytes of a `\Xhh..\` escape into text: in the message's own character set (MSH-18). */
export type HexDecoder = (bytes: Uint8Array) => string;

export class Hl7Message {
  readonly segments: readonly Segment[];
  readonly delimiters: Readonly<Delimiters>;
  private readonly hex: HexDecoder | undefined;

  private constructor(segments: Segment[], delimiters: Delimiters, hex: HexDecoder | undefined) {
    this.segments = segments;
    this.delimiters = delimiters;
    this.hex = hex;
  }

  /**
   * Throws GatewayError(unreadable-data) when the text is not an HL7 v2 message at all.
   * `hex` decodes `\X..\` escapes (default: UTF-8 when valid, else Latin-1, as a frame without MSH-18).
   */
  static parse(text: string, hex?: HexDecoder): Hl7Message {
    const start = text.replace(/^[\s\x0b]+/, '');
    if (!start.startsWith('MSH') || start.length < 8) {
      throw new GatewayError(ErrorCode.unreadableData, 'message does not begin with an MSH segment');
    }
    const delimiters = readDelimiters(start);
    // Segments end with CR; LF and CRLF are common enough from hand-written senders to tolerate.
    const lines = start.split(/\r\n|\r|\n/);
    const segments: Segment[] = [];
    for (const line of lines) {
      if (line.length === 0) continue;
      const parts = line.split(delimiters.field);
      const name = parts[0] ?? '';
      if (!/^[A-Z][A-Z0-9]{2}$/.test(name)) {
        throw new GatewayError(ErrorCode.unreadableData, `segment ${segments.length + 1} has no valid segment name`);
      }
      if (name === 'MSH') {
        // MSH-1 is the separator itself, so the raw split is one position short of the standard numbering.
        parts.splice(1, 0, delimiters.field);
      }
      segments.push({ name, fields: parts });
    }
    return new Hl7Message(segments, delimiters, hex);
  }

  segment(name: string): Segment | undefined {
    return this.segments.find((s) => s.name === name);
  }

  all(name: string): Segment[] {
    return this.segments.filter((s) => s.name === name);
  }

  /** Reads a path from the first segment with that name; see `read`. */
  get(path: string | Hl7Path): string | null {
    const p = typeof path === 'string' ? parsePath(path) : path;
    const seg = this.segment(p.segment);
    return seg ? this.read(seg, p) : null;
  }

  /** Unescaped value of the first repetition at a path, or null when empty. */
  read(seg: Segment, p: Omit<Hl7Path, 'segment'>): string | null {
    const raw = this.rawField(seg, p.field);
    if (!raw) return null;
    const rep = this.repetitions(raw)[0] ?? '';
    const comp = this.components(rep)[(p.component ?? 1) - 1] ?? '';
    const sub = comp.split(this.delimiters.subcomponent)[(p.subcomponent ?? 1) - 1] ?? '';
    const value = this.unescape(sub).trim();
    // `""` is HL7's explicit null ("delete this value"); for reading it is just absent.
    return value === '' || value === '""' ? null : value;
  }

  rawField(seg: Segment, field: number): string {
    return seg.fields[field] ?? '';
  }

  repetitions(rawField: string): string[] {
    return rawField === '' ? [] : rawField.split(this.delimiters.repetition);
  }

  components(rawRepetition: string): string[] {
    return rawRepetition.split(this.delimiters.component);
  }

  /** Components of one repetition, each unescaped, first subcomponent only (as `read` does). */
  componentValues(rawRepetition: string): string[] {
    return this.components(rawRepetition).map((c) => this.unescape(c.split(this.delimiters.subcomponent)[0] ?? '').trim());
  }

  /**
   * Full text of a text field (TX/FT/ST): repetitions are lines; a stray
   * component separator a sender forgot to escape is kept as text, not cut.
   */
  text(rawField: string): string {
    return this.repetitions(rawField)
      .map((r) => this.unescape(r))
      .join('\n');
  }

  unescape(text: string): string {
    return unescapeHl7(text, this.delimiters, this.hex);
  }
}

function readDelimiters(text: string): Delimiters {
  const field = text[3]!;
  // MSH-2 is up to four characters (five in 2.7 with the truncation character); a short MSH-2 keeps the defaults for the rest.
  const end = text.indexOf(field, 4);
  const enc = end < 0 ? '' : text.slice(4, end);
  if (end < 0 || enc.length < 1) throw new GatewayError(ErrorCode.unreadableData, 'MSH-2 encoding characters missing');
  const d: Delimiters = {
    field,
    component: enc[0] ?? '^',
    repetition: enc[1] ?? '~',
    escape: enc[2] ?? '\\',
    subcomponent: enc[3] ?? '&',
  };
  const all = [d.field, d.component, d.repetition, d.escape, d.subcomponent];
  if (new Set(all).size !== all.length || all.some((c) => /[A-Za-z0-9\r\n]/.test(c))) {
    throw new GatewayError(ErrorCode.unreadableData, 'MSH-1/MSH-2 delimiters are not distinct punctuation');
  }
  return d;
}

/**
 * Undoes HL7 escapes (v2.5.1 chapter 2.7): \F\ \S\ \T\ \R\ \E\, the formatting
 * commands \.br\ (line break) and \.sp\ (blank lines), and \Xhh\ hex data.
 * Highlighting (\H\ \N\) and other formatting commands carry no text and are
 * dropped; an escape we do not know is kept as sent so no text is lost.
 */
export function unescapeHl7(text: string, d: Readonly<Delimiters> = standardDelimiters, hex: HexDecoder = defaultHex): string {
  const e = d.escape;
  let open = text.indexOf(e);
  if (open < 0) return text;
  // Copies the text between escapes in runs (not character by character): report text is most of a message.
  let out = '';
  let i = 0;
  while (open >= 0) {
    out += text.slice(i, open);
    const close = text.indexOf(e, open + 1);
    if (close < 0) {
      i = open;
      break;
    }
    const seq = text.slice(open + 1, close);
    const replaced = escapeSequence(seq, d, hex);
    out += replaced ?? `${e}${seq}${e}`;
    i = close + 1;
    open = text.indexOf(e, i);
  }
  return out + text.slice(i);
}

const utf8Fatal = new TextDecoder('utf-8', { fatal: true });
function defaultHex(bytes: Uint8Array): string {
  try {
    return utf8Fatal.decode(bytes);
  } catch {
    return Buffer.from(bytes).toString('latin1');
  }
}

function escapeSequence(seq: string, d: Readonly<Delimiters>, hex: HexDecoder): string | null {
  switch (seq) {
    case 'F':
      return d.field;
    case 'S':
      return d.component;
    case 'T':
      return d.subcomponent;
    case 'R':
      return d.repetition;
    case 'E':
      return d.escape;
    case '.br':
      return '\n';
    case 'H':
    case 'N':
      return '';
  }
  if (/^\.sp[+-]?\d*$/.test(seq)) {
    const n = Number(seq.slice(3).replace('+', '')) || 1;
    return '\n'.repeat(Math.max(1, n));
  }
  if (/^\.(fi|nf|in[+-]?\d*|ti[+-]?\d*|ce|sk[+-]?\d*)$/.test(seq)) return '';
  // Hex data are bytes in the message's character set (MSH-18), not Latin-1.
  if (/^X([0-9A-Fa-f]{2})+$/.test(seq)) return hex(Buffer.from(seq.slice(1), 'hex'));
  return null;
}

/** The inverse, for text we put into messages we build (ACK reasons, echoed identifiers). */
export function escapeHl7(text: string, d: Readonly<Delimiters> = standardDelimiters): string {
  let out = '';
  for (const ch of text.replace(/\r\n/g, '\n')) {
    if (ch === d.escape) out += `${d.escape}E${d.escape}`;
    else if (ch === d.field) out += `${d.escape}F${d.escape}`;
    else if (ch === d.component) out += `${d.escape}S${d.escape}`;
    else if (ch === d.subcomponent) out += `${d.escape}T${d.escape}`;
    else if (ch === d.repetition) out += `${d.escape}R${d.escape}`;
    else if (ch === '\r' || ch === '\n') out += `${d.escape}.br${d.escape}`;
    else out += ch;
  }
  return out;
}
