/**
 * ICD-10-CM code handling for the oncology rule: normalising codes as they
 * arrive from HL7 (with or without the dot, with coding-system components) and
 * matching them against category ranges such as `C00-C96`.
 */

/** Letter, digit, alphanumeric category, then up to four more characters (ICD-10-CM allows 7 in all). */
const CODE_SHAPE = /^[A-Z][0-9][0-9A-Z][0-9A-Z]{0,4}$/;

/**
 * ICD-10-CM inserts a few categories with a letter in third place between two
 * numeric ones (C43 < C4A < C44, C75 < C7A < C7B < C76, D36 < D3A < D37, M10 < M1A < M11).
 * Comparing category strings naively would put D3A (benign neuroendocrine
 * tumours) inside D37-D49 (uncertain behaviour), which is exactly the mistake
 * the oncology rule must not make, so categories are ordered by this table.
 */
const ALPHA_CATEGORY_POSITION: Readonly<Record<string, number>> = {
  C4A: 43.5,
  C7A: 75.5,
  C7B: 75.6,
  D3A: 36.5,
  M1A: 10.5,
  Z3A: 37.5,
};

/**
 * Turns what HL7 gives us (`C34.1`, `c341`, `C34.1^Malignant neoplasm...^I10`,
 * `I10:C34.1`, `C34.1 (ICD-10-CM)`) into the dotless upper-case code, or
 * undefined when it does not look like an ICD-10 code at all. The first
 * component wins because later components are the text and the coding system,
 * and a coding system such as `I10` is itself shaped like a code.
 */
export function normalizeIcd10(raw: string): string | undefined {
  let s = raw.trim();
  const cut = s.search(/[\^&|~]/);
  if (cut >= 0) s = s.slice(0, cut);
  const colon = s.lastIndexOf(':');
  if (colon >= 0) s = s.slice(colon + 1);
  s = s.trim();
  const space = s.search(/[\s(]/);
  if (space >= 0) s = s.slice(0, space);
  s = s.replace(/\./g, '').toUpperCase();
  return CODE_SHAPE.test(s) ? s : undefined;
}

/** `C341` -> `C34.1`, the way a QA officer reads it. */
export function formatIcd10(code: string): string {
  return code.length > 3 ? `${code.slice(0, 3)}.${code.slice(3)}` : code;
}

/** Sort key of a 3-character category within its chapter letter. */
function categoryPosition(category: string): number {
  const known = ALPHA_CATEGORY_POSITION[category];
  if (known !== undefined) return known;
  const third = category.charCodeAt(2);
  const tens = category.charCodeAt(1) - 48;
  // An unknown letter-third category sorts after the numeric ones sharing its second digit.
  if (third >= 65) return tens * 10 + 9.9;
  return tens * 10 + (third - 48);
}

/** One `include`/`exclude` item: a category range (`C00-C96`) or a code prefix (`C34`, `C34.1`, `Z85`). */
export type Icd10Pattern =
  { readonly type: 'range'; readonly letter: string; readonly from: number; readonly to: number } | { readonly type: 'prefix'; readonly prefix: string };

const RANGE_SHAPE = /^([A-Z][0-9][0-9A-Z])\s*-\s*([A-Z][0-9][0-9A-Z])$/;

/** Parses one pattern; returns an error message for the schema to report. */
export function parseIcd10Pattern(text: string): Icd10Pattern | string {
  const s = text.trim().toUpperCase();
  const range = RANGE_SHAPE.exec(s);
  if (range) {
    const a = range[1]!;
    const b = range[2]!;
    if (a[0] !== b[0]) return `range "${text}" must stay within one chapter letter`;
    const from = categoryPosition(a);
    const to = categoryPosition(b);
    if (from > to) return `range "${text}" runs backwards`;
    return { type: 'range', letter: a[0]!, from, to };
  }
  if (s.includes('-')) return `"${text}" is not a category range like C00-C96 (ranges are between 3-character categories)`;
  const prefix = s.replace(/\./g, '');
  if (!/^[A-Z][0-9][0-9A-Z]{0,5}$/.test(prefix)) return `"${text}" is not an ICD-10 code, category or range`;
  return { type: 'prefix', prefix };
}

/** Compiled include/exclude lists; `matches` expects a normalised code. */
export class Icd10Matcher {
  private readonly include: readonly Icd10Pattern[];
  private readonly exclude: readonly Icd10Pattern[];

  constructor(include: readonly string[], exclude: readonly string[]) {
    this.include = include.map(compilePattern);
    this.exclude = exclude.map(compilePattern);
  }

  matches(code: string): boolean {
    return matchesAny(this.include, code) && !matchesAny(this.exclude, code);
  }
}

function compilePattern(text: string): Icd10Pattern {
  const p = parseIcd10Pattern(text);
  // The schema rejects bad patterns first; reaching this is a programming error.
  if (typeof p === 'string') throw new Error(p);
  return p;
}

function matchesAny(patterns: readonly Icd10Pattern[], code: string): boolean {
  for (const p of patterns) {
    if (p.type === 'prefix') {
      if (code.startsWith(p.prefix)) return true;
    } else if (code[0] === p.letter) {
      const pos = categoryPosition(code.slice(0, 3));
      if (pos >= p.from && pos <= p.to) return true;
    }
  }
  return false;
}
