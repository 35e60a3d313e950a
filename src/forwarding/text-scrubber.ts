/**
 * Removes a patient's known identifiers, and dates, phone numbers, e-mail
 * addresses and long numbers in general, from free text (descriptions,
 * comments, SR TEXT items when cleaning, report text for a de-identified pool).
 * Each removal is replaced by one fixed token, so a reader sees that something
 * was there.
 */
import { isBoundaryMatch, lowerText, type KnownIdentifiers } from './known-identifiers.js';

export const SCRUB_TOKEN = '[REMOVED]';

export interface ScrubOptions {
  /**
   * Also remove what looks like a date, phone number, e-mail address or long
   * number even when it is not one of the known identifiers (default true).
   * Off for short coded header values (LO, SH) where such patterns are versions
   * or codes, not narrative.
   */
  generic?: boolean;
}

const MONTH =
  '(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|jun(?:e)?|jul(?:y)?|aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)';

/** Patterns removed in generic mode, applied after the known identifiers. */
const GENERIC: readonly RegExp[] = [
  /(?<![\w.+-])[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){1,8}/g, // e-mail (bounded, from a token start: linear on long text)
  /(?<![\w.])\d{4}[-/.]\d{1,2}[-/.]\d{1,2}(?![\w])/g, // 1957-03-13, 1957/3/13
  /(?<![\w.])\d{1,2}[-/.]\d{1,2}[-/.](?:\d{4}|\d{2})(?![\w.])/g, // 13.03.1957, 3/13/57
  new RegExp(`(?<![\\w])\\d{1,2}(?:st|nd|rd|th)?\\.?[ -]${MONTH}\\.?[ -,]*\\d{2,4}(?![\\w])`, 'gi'), // 13 Mar 1957, 13-MAR-1957
  new RegExp(`(?<![\\w])${MONTH}\\.? \\d{1,2}(?:st|nd|rd|th)?,? \\d{4}(?![\\w])`, 'gi'), // March 13, 1957
  /(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,5}\)[ .-]?)?\d{2,5}[ .-]\d{2,5}[ .-]?\d{2,5}(?:[ .-]\d{2,5})?(?![\w])/g, // phone numbers
  /[A-Za-z0-9-]*\d[A-Za-z0-9-]*/g, // ids and other numbers: a token with 6+ digits (checked below)
];
const DATE_PHONE_PATTERNS = 6;

const TOKEN_RUN = /\[REMOVED\](?:[\^ ,]+\[REMOVED\])+/g;

function digitCount(s: string): number {
  return s.replace(/\D/g, '').length;
}

/**
 * `text` with every known identifier (case-insensitive, not glued to more
 * letters/digits) and, in generic mode, every date, phone number, e-mail
 * address and number of 6+ digits replaced by `SCRUB_TOKEN`.
 */
export function scrubText(text: string, ids: KnownIdentifiers, options: ScrubOptions = {}): string {
  if (!text) return text;
  let out = text;
  let lower = lowerText(out);
  for (const needle of ids.needles()) {
    if (!lower.includes(needle.text)) continue;
    let result = '';
    let from = 0;
    let i = lower.indexOf(needle.text);
    while (i >= 0) {
      if (isBoundaryMatch(lower, i, needle.text)) {
        result += out.slice(from, i) + SCRUB_TOKEN;
        from = i + needle.text.length;
        i = lower.indexOf(needle.text, from);
      } else {
        i = lower.indexOf(needle.text, i + 1);
      }
    }
    if (from === 0) continue;
    out = result + out.slice(from);
    lower = lowerText(out);
  }
  if (options.generic !== false) {
    for (const re of GENERIC) {
      out = out.replace(re, (m) => {
        if (re === GENERIC[5] && digitCount(m) < 7) return m; // '12 mm 3' is not a phone number
        if (re === GENERIC[DATE_PHONE_PATTERNS] && digitCount(m) < 6) return m;
        return SCRUB_TOKEN;
      });
    }
  }
  // 'SMITH^JOHN' or 'John Smith' is one removal, not two
  return out.includes(SCRUB_TOKEN) ? out.replace(TOKEN_RUN, SCRUB_TOKEN) : out;
}
