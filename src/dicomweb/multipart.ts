import { ErrorCode, GatewayError } from '../errors.js';

/**
 * A streaming reader of multipart/related bodies (RFC 2387, RFC 2046 5.1).
 * busboy and formidable read multipart/form-data only, and the small
 * multipart/related parsers on npm buffer whole parts, which a STOW-RS body
 * of several gigabytes cannot afford: this one turns each chunk into events
 * (a part's headers, its bytes, its end) and keeps at most one delimiter's
 * length of bytes back. Pure and synchronous: the caller decides what to do
 * with the events, and reading the next chunk waits until it has.
 */
export type MultipartEvent =
  | { type: 'part'; headers: Record<string, string> }
  | { type: 'data'; data: Buffer }
  /** The part's closing delimiter was seen: its bytes are complete. */
  | { type: 'end' };

const CRLF = Buffer.from('\r\n');
const MAX_HEADER_BYTES = 16 * 1024;

export class MultipartReader {
  /** `\r\n--boundary`: what ends a part's body. */
  private readonly delimiter: Buffer;
  private buf: Buffer = Buffer.alloc(0);
  private state: 'preamble' | 'after-delimiter' | 'headers' | 'body' | 'done' = 'preamble';
  private parts = 0;

  constructor(boundary: string) {
    // The preamble may be empty, so the very first delimiter may come without its CRLF: start with one.
    this.delimiter = Buffer.from(`\r\n--${boundary}`, 'latin1');
    this.buf = Buffer.from(CRLF);
  }

  get partCount(): number {
    return this.parts;
  }

  /** True once the close delimiter (`--boundary--`) was read. */
  get complete(): boolean {
    return this.state === 'done';
  }

  /** True while a part's body is open (its end not yet seen). */
  get inPart(): boolean {
    return this.state === 'body' || this.state === 'headers';
  }

  push(chunk: Buffer): MultipartEvent[] {
    const events: MultipartEvent[] = [];
    if (this.state === 'done') return events;
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    for (;;) {
      if (this.state === 'preamble' || this.state === 'body') {
        const at = this.buf.indexOf(this.delimiter);
        if (at < 0) {
          // Keep what could be the start of a delimiter split across chunks.
          const keep = Math.min(this.buf.length, this.delimiter.length - 1);
          const out = this.buf.subarray(0, this.buf.length - keep);
          if (this.state === 'body' && out.length > 0) events.push({ type: 'data', data: out });
          this.buf = Buffer.from(this.buf.subarray(this.buf.length - keep));
          return events;
        }
        if (this.state === 'body') {
          if (at > 0) events.push({ type: 'data', data: this.buf.subarray(0, at) });
          events.push({ type: 'end' });
        }
        this.buf = this.buf.subarray(at + this.delimiter.length);
        this.state = 'after-delimiter';
        continue;
      }
      if (this.state === 'after-delimiter') {
        if (this.buf.length < 2) return events;
        if (this.buf[0] === 0x2d && this.buf[1] === 0x2d) {
          this.state = 'done';
          this.buf = Buffer.alloc(0);
          return events;
        }
        // Transport padding (spaces, tabs) may follow a delimiter before its CRLF.
        const eol = this.buf.indexOf(CRLF);
        if (eol < 0) {
          if (this.buf.length > 1024) throw new GatewayError(ErrorCode.invalidInput, 'malformed multipart body: no CRLF after a boundary');
          return events;
        }
        this.buf = this.buf.subarray(eol + 2);
        this.state = 'headers';
        continue;
      }
      if (this.state === 'headers') {
        const end = this.buf.indexOf('\r\n\r\n');
        const emptyHeaders = this.buf.length >= 2 && this.buf[0] === 0x0d && this.buf[1] === 0x0a;
        if (end < 0 && !emptyHeaders) {
          if (this.buf.length > MAX_HEADER_BYTES) throw new GatewayError(ErrorCode.invalidInput, 'malformed multipart body: part headers too long');
          return events;
        }
        const headerText = emptyHeaders ? '' : this.buf.toString('latin1', 0, end);
        this.buf = this.buf.subarray(emptyHeaders ? 2 : end + 4);
        const headers: Record<string, string> = {};
        for (const line of headerText.split('\r\n')) {
          const colon = line.indexOf(':');
          if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
        }
        this.parts++;
        events.push({ type: 'part', headers });
        this.state = 'body';
        continue;
      }
      return events;
    }
  }
}

/** The boundary and type parameters of a Content-Type header (quoted or not). */
export function contentTypeParams(header: string): { mediaType: string; params: Record<string, string> } {
  const [first, ...rest] = splitParams(header);
  const params: Record<string, string> = {};
  for (const p of rest) {
    const eq = p.indexOf('=');
    if (eq <= 0) continue;
    let v = p.slice(eq + 1).trim();
    if (v.startsWith('"') && v.endsWith('"') && v.length >= 2) v = v.slice(1, -1).replace(/\\(.)/g, '$1');
    params[p.slice(0, eq).trim().toLowerCase()] = v;
  }
  return { mediaType: (first ?? '').trim().toLowerCase(), params };
}

function splitParams(s: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c === '"' && s[i - 1] !== '\\') quoted = !quoted;
    if (c === ';' && !quoted) {
      out.push(cur);
      cur = '';
    } else cur += c;
  }
  out.push(cur);
  return out;
}
