import { convertBytes } from 'dicom-character-set';
import iconv from 'iconv-lite';
import { ErrorCode, GatewayError } from '../errors.js';

/**
 * HL7 v2 character sets (MSH-18, table 0211). An MLLP frame is bytes; what
 * they mean is named by MSH-18, which itself is always in the ASCII part of
 * MSH, so it can be read before the rest is decoded.
 *
 * Single-byte ISO 8859 sets go through iconv-lite (TextDecoder's
 * `iso-8859-1` is really windows-1252); the CJK sets through Node's ICU
 * TextDecoder; ISO IR87 / IR159 (JIS X 0208 / 0212 with ISO 2022 escapes)
 * through dicom-character-set, the only decoder here that knows JIS X 0212.
 */
export interface Hl7Charset {
  /** The MSH-18 value as the sender wrote it. */
  readonly name: string;
  decode(bytes: Uint8Array): string;
  /** For the ACK. Sets without an encoder here (ISO 2022 ones) get ASCII, a subset of each of them. */
  encode(text: string): Buffer;
}

const utf8Fatal = new TextDecoder('utf-8', { fatal: true });

/** No MSH-18: UTF-8 when the bytes are valid UTF-8, otherwise Latin-1 (what 8-bit senders without MSH-18 mostly mean). */
export const defaultCharset: Hl7Charset = {
  name: '',
  decode(bytes) {
    try {
      return utf8Fatal.decode(bytes);
    } catch {
      return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1');
    }
  },
  encode: (text) => Buffer.from(text, 'utf8'),
};

function iconvCharset(name: string, encoding: string): Hl7Charset {
  return { name, decode: (b) => iconv.decode(Buffer.from(b.buffer, b.byteOffset, b.byteLength), encoding), encode: (t) => iconv.encode(t, encoding) };
}

function icuCharset(name: string, label: string, encoding: string): Hl7Charset {
  const d = new TextDecoder(label);
  return { name, decode: (b) => d.decode(b), encode: (t) => iconv.encode(t, encoding) };
}

function iso2022(name: string, dicomTerms: string): Hl7Charset {
  return {
    name,
    decode: (b) => {
      try {
        // UT: the escape state is not reset at backslashes (our HL7 escape character), only by escapes and line ends.
        return convertBytes(dicomTerms, b, { vr: 'UT' });
      } catch (err) {
        throw new GatewayError(ErrorCode.unreadableData, `bytes not valid in MSH-18 character set ${name}: ${(err as Error).message}`);
      }
    },
    encode: asciiOnly,
  };
}

// Every ISO 2022 set a Japanese message may switch to by escapes (MSH-18 may list them as further repetitions).
const japanese = 'ISO 2022 IR 6\\ISO 2022 IR 13\\ISO 2022 IR 87\\ISO 2022 IR 159';

function asciiOnly(text: string): Buffer {
  return Buffer.from(text.replace(/[^\x00-\x7f]/g, '?'), 'latin1');
}

const byName = new Map<string, Hl7Charset>();
byName.set('ASCII', { name: 'ASCII', decode: defaultCharset.decode, encode: asciiOnly });
for (const n of [1, 2, 3, 4, 5, 6, 7, 8, 9, 15]) byName.set(`8859/${n}`, iconvCharset(`8859/${n}`, `iso-8859-${n}`));
byName.set('UNICODE UTF-8', { name: 'UNICODE UTF-8', decode: (b) => new TextDecoder('utf-8').decode(b), encode: (t) => Buffer.from(t, 'utf8') });
byName.set('ISO IR14', iso2022('ISO IR14', 'ISO 2022 IR 13\\ISO 2022 IR 87\\ISO 2022 IR 159'));
byName.set('ISO IR87', iso2022('ISO IR87', japanese));
byName.set('ISO IR159', iso2022('ISO IR159', japanese));
byName.set('GB 18030-2000', icuCharset('GB 18030-2000', 'gb18030', 'gb18030'));
byName.set('KS X 1001', icuCharset('KS X 1001', 'euc-kr', 'euc-kr'));
byName.set('BIG-5', icuCharset('BIG-5', 'big5', 'big5'));

export const supportedCharsets: readonly string[] = [...byName.keys()];

/** The decoder for an MSH-18 value; undefined when we cannot decode it (the message is then rejected, naming MSH-18). */
export function charsetFor(msh18: string | null): Hl7Charset | undefined {
  if (msh18 === null || msh18 === '') return defaultCharset;
  return byName.get(msh18.trim().toUpperCase());
}

/**
 * MSH-18's first repetition (the message's default set; further repetitions
 * name sets reached by escapes, which the ISO 2022 decoders handle) from the
 * first segment of already-decoded or Latin-1-read text. Null when absent.
 */
export function peekMsh18(text: string): string | null {
  const start = text.charCodeAt(0) === 0x4d ? 0 : text.search(/MSH/);
  if (start < 0 || text.length < start + 8) return null;
  let end = text.indexOf('\r', start);
  if (end < 0) end = text.indexOf('\n', start);
  const line = end < 0 ? text.slice(start) : text.slice(start, end);
  const sep = line[3];
  if (!sep) return null;
  // Raw split: parts[1] is MSH-2, so MSH-n is parts[n - 1].
  const parts = line.split(sep);
  const field = parts[17];
  if (!field) return null;
  const rep = parts[1]?.[1] ?? '~';
  const first = field.split(rep)[0]!.trim();
  return first === '' ? null : first;
}
