/**
 * Negation-aware, sentence-scoped phrase matching for report and order text.
 *
 * Every phrase any rule cares about (keywords, finding synonyms, and the
 * negation/uncertainty/question cues) is compiled once into a `Lexicon`.
 * A text is then tokenised and scanned once (`analyzeText`), whatever the
 * number of rules: each token is looked up in a hash index of phrase first
 * tokens, so the cost grows with the text, not with the rule count. The scan
 * records every phrase hit and a per-token flag word saying whether the token
 * sits in a negated, uncertain or questioned scope (a NegEx-style algorithm).
 *
 * Phrase syntax: words separated by spaces or punctuation, compared
 * case-insensitively on word boundaries; `-`, `/` and spaces are equivalent
 * (`BI-RADS 4` matches "bi-rads 4" and "BI RADS: 4"); a trailing `*` on a word
 * matches any word starting with it (`metasta*`); `?` is a word of its own (`?PE`).
 */

/** Per-token scope flags (bits). */
export const TokenFlag = {
  negated: 1,
  uncertain: 2,
  questioned: 4,
  /** "cannot exclude X" / "X cannot be excluded": uncertainty that survives a surrounding negation. */
  strongUncertain: 8,
} as const;

/** What a cue phrase does (bits). */
export const CueFlag = {
  /** negates the words after it in its scope: "no", "without", "negative for" */
  negatePre: 1,
  /** negates the words before it in its scope: "ruled out", "not seen" */
  negatePost: 2,
  /** makes the whole scope uncertain: "possible", "suspicious for" */
  uncertain: 4,
  strongPre: 8,
  strongPost: 16,
  /** the scope asks a question: "r/o", "?", "evaluate for" */
  question: 32,
  /** looks like a negation but is not ("no change"): matched only to swallow its words */
  pseudo: 64,
  /** ends the scope of earlier cues: "but", "however" */
  terminator: 128,
} as const;

/** Hit classes, as bits so a rule can precompute which classes it accepts. */
export const HitClass = {
  affirmed: 1,
  uncertain: 2,
  questioned: 4,
  negated: 8,
} as const;

export function hitClass(flags: number): number {
  if (flags & TokenFlag.strongUncertain) return HitClass.uncertain;
  if (flags & TokenFlag.negated) return HitClass.negated;
  if (flags & TokenFlag.uncertain) return HitClass.uncertain;
  if (flags & TokenFlag.questioned) return HitClass.questioned;
  return HitClass.affirmed;
}

export function hitClassName(cls: number): 'affirmed' | 'uncertain' | 'questioned' | 'negated' {
  if (cls === HitClass.negated) return 'negated';
  if (cls === HitClass.uncertain) return 'uncertain';
  if (cls === HitClass.questioned) return 'questioned';
  return 'affirmed';
}

/**
 * Default cues. Longest match wins at each position and a matched cue swallows
 * its words, which is how "cannot exclude" (uncertain) beats "not" (negation)
 * and "no change" (pseudo) beats "no".
 */
export function defaultCues(): Array<[phrase: string, flags: number]> {
  const { negatePre, negatePost, uncertain, strongPre, strongPost, question, pseudo, terminator } = CueFlag;
  const list: Array<[string, number]> = [];
  const add = (flags: number, ...phrases: string[]): void => {
    for (const p of phrases) list.push([p, flags]);
  };
  add(
    negatePre,
    'no',
    'not',
    'without',
    'negative for',
    'free of',
    'absence of',
    'no evidence of',
    'no sign of',
    'no signs of',
    'neither',
    'nor',
    'never',
    'denies',
    'denied',
    'resolution of',
    'rather than',
    'instead of',
    'ruled out for',
    'rules out',
    'excludes',
    'no longer',
  );
  // Not a negation, but for a second read the same: the condition is not the patient's.
  add(negatePre, 'family history of', 'family hx of', 'family history', 'mother with', 'father with', 'sister with', 'brother with');
  add(
    negatePost,
    'ruled out',
    'has been ruled out',
    'was ruled out',
    'is ruled out',
    'excluded',
    'not seen',
    'not identified',
    'not visualized',
    'not visualised',
    'not demonstrated',
    'not present',
    'not detected',
    'not appreciated',
    'not evident',
    'is absent',
    'are absent',
    'negative',
    'resolved',
    'has resolved',
    'have resolved',
  );
  add(negatePre | negatePost, 'unlikely', 'is unlikely', 'not likely', 'absent');
  add(
    uncertain,
    'possible',
    'possibly',
    'probable',
    'probably',
    'likely',
    'suspicious for',
    'suspicious of',
    'suspicious',
    'concerning for',
    'concerning',
    'worrisome for',
    'worrisome',
    'suggestive of',
    'suggests',
    'suggesting',
    'may represent',
    'could represent',
    'might represent',
    'may reflect',
    'questionable',
    'equivocal',
    'indeterminate',
    'differential includes',
    'differential diagnosis includes',
    'versus',
    'vs',
    'cannot be characterized',
    'presumably',
    'compatible with',
  );
  add(
    strongPre,
    'cannot exclude',
    'can not exclude',
    'cannot rule out',
    'can not rule out',
    'could not exclude',
    'not excluding',
    'cannot be excluded that',
    'difficult to exclude',
  );
  add(
    strongPost,
    'cannot be excluded',
    'can not be excluded',
    'not excluded',
    'not be excluded',
    'cannot be ruled out',
    'can not be ruled out',
    'not ruled out',
    'not be ruled out',
    'could not be excluded',
    'is not excluded',
  );
  add(
    question,
    'r/o',
    'rule out',
    'rule-out',
    'to rule out',
    'to exclude',
    'exclude',
    'evaluate for',
    'eval for',
    'evaluation for',
    'evaluation of',
    'assess for',
    'assessment for',
    'look for',
    'check for',
    'question of',
    'query',
    '?',
    'concern for',
    'suspicion of',
    'suspicion for',
    'w/u',
    'workup for',
    'work up for',
    'r/u',
  );
  add(question | uncertain, 'suspected', 'suspect', 'presumed');
  add(
    pseudo,
    'no change',
    'no interval change',
    'no significant change',
    'no significant interval change',
    'not changed',
    'no increase',
    'no decrease',
    'no growth',
    'not only',
    'no further',
    'gram negative',
    'not necessarily',
    'unchanged',
    'without change',
    'without interval change',
    'without significant change',
  );
  add(
    terminator,
    'but',
    'however',
    'although',
    'though',
    'except',
    'apart from',
    'aside from',
    'other than',
    'whereas',
    'nevertheless',
    'there is',
    'there are',
    'which',
  );
  return list;
}

interface Phrase {
  readonly source: string;
  readonly words: readonly string[];
  /** words[i] must only be a prefix of the text word */
  readonly prefix: readonly boolean[];
  /** 0 for a term; CueFlag bits for a cue */
  readonly cue: number;
}

/** Compiled phrase index; immutable once built, shared by every evaluation. */
export interface Lexicon {
  readonly phrases: readonly Phrase[];
  /**
   * Phrases by the first (up to) 3 characters of their first word, so the
   * scanner can find candidates from character codes without cutting a
   * string out of the text for every word (most words are in no phrase).
   */
  readonly byKey3: ReadonlyMap<number, readonly number[]>;
  /** prefix patterns shorter than 3 characters: tried on every word (rare) */
  readonly shortPrefix: readonly number[];
}

/** Splits a phrase into words the same way `analyzeText` splits text. Throws on a phrase with no word. */
export function phraseWords(phrase: string): { words: string[]; prefix: boolean[] } {
  const words: string[] = [];
  const prefix: boolean[] = [];
  const s = phrase.toLowerCase();
  let start = -1;
  for (let i = 0; i <= s.length; i++) {
    const c = i < s.length ? s.charCodeAt(i) : 32;
    if (isWordChar(c)) {
      if (start < 0) start = i;
      continue;
    }
    if (start >= 0) {
      words.push(s.slice(start, i));
      prefix.push(c === 42 /* * */);
      start = -1;
    }
    if (c === 63 /* ? */) {
      words.push('?');
      prefix.push(false);
    }
  }
  if (words.length === 0) throw new Error(`phrase "${phrase}" has no words`);
  return { words, prefix };
}

/**
 * Key of a word's first three characters (fewer for a shorter word). Kept in
 * small-integer range (7 bits a character) so map lookups need no heap
 * numbers; non-ASCII characters collide harmlessly because candidates are verified.
 */
function key3(text: string, start: number, end: number): number {
  const len = end - start;
  const a = text.charCodeAt(start) & 0x7f;
  const b = len > 1 ? text.charCodeAt(start + 1) & 0x7f : 0;
  const c = len > 2 ? text.charCodeAt(start + 2) & 0x7f : 0;
  return (a << 14) | (b << 7) | c | (len > 2 ? 0 : len << 21);
}

/** Collects phrases, deduplicating them, and builds the lexicon once. */
export class LexiconBuilder {
  private readonly phrases: Phrase[] = [];
  private readonly ids = new Map<string, number>();

  /** A phrase to find; returns its id (the same id for the same phrase). */
  term(phrase: string): number {
    return this.add(phrase, 0);
  }

  cue(phrase: string, flags: number): number {
    return this.add(phrase, flags);
  }

  private add(phrase: string, cue: number): number {
    const { words, prefix } = phraseWords(phrase);
    const key = `${cue}|${words.map((w, i) => (prefix[i] ? `${w}*` : w)).join(' ')}`;
    const known = this.ids.get(key);
    if (known !== undefined) return known;
    const id = this.phrases.length;
    this.phrases.push({ source: phrase, words, prefix, cue });
    this.ids.set(key, id);
    return id;
  }

  get size(): number {
    return this.phrases.length;
  }

  build(): Lexicon {
    const byKey3 = new Map<number, number[]>();
    const shortPrefix: number[] = [];
    this.phrases.forEach((p, id) => {
      const first = p.words[0]!;
      if (p.prefix[0] && first.length < 3) shortPrefix.push(id);
      else push(byKey3, key3(first, 0, Math.min(first.length, 3)), id);
    });
    // Terms first (every one is recorded), then cues longest first (the first cue that matches wins).
    const order = (a: number, b: number): number => {
      const pa = this.phrases[a]!;
      const pb = this.phrases[b]!;
      if ((pa.cue === 0) !== (pb.cue === 0)) return pa.cue === 0 ? -1 : 1;
      return pb.words.length - pa.words.length;
    };
    for (const ids of byKey3.values()) ids.sort(order);
    shortPrefix.sort(order);
    return { phrases: [...this.phrases], byKey3, shortPrefix };
  }
}

function push<K>(map: Map<K, number[]>, key: K, id: number): void {
  const list = map.get(key);
  if (list) list.push(id);
  else map.set(key, [id]);
}

/** One scanned text: word positions, their scope flags, and the term hits. Arrays are parallel. */
export interface AnalyzedText {
  /** the text snippets are cut from (the original unless lower-casing changed its length) */
  readonly text: string;
  /** the lower-cased text the words are compared in */
  readonly lower: string;
  readonly wordCount: number;
  readonly wordStart: readonly number[];
  readonly wordEnd: readonly number[];
  readonly flags: readonly number[];
  readonly hitPhrase: readonly number[];
  /** first word of the hit */
  readonly hitWord: readonly number[];
  /** one past the last word of the hit */
  readonly hitWordEnd: readonly number[];
}

/** ASCII word characters (lower-case letters and digits) as a table: cheaper than comparisons in the scan loop. */
const ASCII_WORD = ((): Uint8Array => {
  const t = new Uint8Array(128);
  for (let c = 48; c <= 57; c++) t[c] = 1;
  for (let c = 97; c <= 122; c++) t[c] = 1;
  return t;
})();

function isWordChar(c: number): boolean {
  return c < 128 ? ASCII_WORD[c] === 1 : c >= 0xc0;
}

/** Abbreviations whose full stop does not end a sentence. */
const ABBREVIATIONS: ReadonlySet<string> = new Set(['dr', 'vs', 'approx', 'fig', 'mr', 'mrs', 'ms', 'pt', 'g', 'e']);

/**
 * Tokenises `text`, finds every lexicon phrase, and computes scope flags.
 *
 * Sentences end at `.`/`!`/`?` followed by space, at a blank line, and at a
 * new line that starts a list item or an upper-case header ("IMPRESSION:"),
 * because reports arrive as OBX lines that wrap mid-sentence otherwise.
 * Inside a sentence, `;` and terminator words ("but", "however") start a new
 * scope. Commas do not, because negations govern lists ("no effusion,
 * pneumothorax or nodule"), except that a trailing "cannot be excluded"
 * reaches back only to the previous comma. A sentence ending in "?" is a question.
 */
export function analyzeText(lexicon: Lexicon, original: string): AnalyzedText {
  const lower = original.toLowerCase();
  const text = lower.length === original.length ? original : lower;
  const n = lower.length;
  const wordStart: number[] = [];
  const wordEnd: number[] = [];
  // Per word: sentence number, then punctuation scope (later the final scope id), then whether a comma precedes it.
  const sentence: number[] = [];
  const scope: number[] = [];
  const commaBefore: number[] = [];
  const questionSentences: number[] = [];

  let sent = 0;
  let punctScope = 0;
  let pendingComma = 0;
  let start = -1;
  for (let i = 0; i <= n; i++) {
    const c = i < n ? lower.charCodeAt(i) : 32;
    if (isWordChar(c)) {
      if (start < 0) start = i;
      continue;
    }
    if (start >= 0) {
      wordStart.push(start);
      wordEnd.push(i);
      sentence.push(sent);
      scope.push(punctScope);
      commaBefore.push(pendingComma);
      pendingComma = 0;
      start = -1;
    }
    if (i >= n) break;
    if (c === 32) continue;
    let endsSentence = false;
    if (c === 46 /* . */ || c === 33 /* ! */) {
      const next = i + 1 < n ? lower.charCodeAt(i + 1) : 32;
      // "1.5 cm", "e.g": a full stop inside a word; "Dr. Jones": an abbreviation.
      endsSentence = !isWordChar(next) && !(c === 46 && endsWithAbbreviation(lower, wordStart, wordEnd, i));
    } else if (c === 63 /* ? */) {
      const prev = i > 0 ? lower.charCodeAt(i - 1) : 32;
      let j = i + 1;
      while (j < n && (lower.charCodeAt(j) === 32 || lower.charCodeAt(j) === 9)) j++;
      // "?PE", "? appendicitis": a question mark before a word asks about it; after a word it ends a question.
      if (!isWordChar(prev) && j < n && isWordChar(lower.charCodeAt(j))) {
        wordStart.push(i);
        wordEnd.push(i + 1);
        sentence.push(sent);
        scope.push(punctScope);
        commaBefore.push(pendingComma);
        pendingComma = 0;
      } else {
        questionSentences.push(sent);
        endsSentence = true;
      }
    } else if (c === 59 /* ; */) {
      punctScope++;
    } else if (c === 44 /* , */) {
      pendingComma = 1;
    } else if (c === 10 /* \n */) {
      endsSentence = startsNewSentence(original, i + 1);
    }
    if (endsSentence) {
      sent++;
      punctScope++;
      pendingComma = 0;
    }
  }

  const count = wordStart.length;
  // Plain arrays, not typed arrays: allocating a small typed array costs more than the whole pass over it.
  const cueAt: number[] = [];
  const hitPhrase: number[] = [];
  const hitWord: number[] = [];
  const hitWordEnd: number[] = [];
  const { phrases, byKey3, shortPrefix } = lexicon;
  let cueFree = 0;
  for (let i = 0; i < count; i++) {
    const ws = wordStart[i]!;
    const we = wordEnd[i]!;
    let bestCue = -1;
    let bestLen = 0;
    for (let pass = 0; pass < 2; pass++) {
      const ids = pass === 0 ? byKey3.get(key3(lower, ws, we)) : shortPrefix.length > 0 ? shortPrefix : undefined;
      if (ids === undefined) continue;
      for (let k = 0; k < ids.length; k++) {
        const id = ids[k]!;
        const p = phrases[id]!;
        const len = matchLength(p, lower, wordStart, wordEnd, sentence, i, count);
        if (len === 0) continue;
        if (p.cue === 0) {
          hitPhrase.push(id);
          hitWord.push(i);
          hitWordEnd.push(i + len);
        } else if (i < cueFree) {
          break; // inside a longer cue: no cue may start here
        } else if (len > bestLen) {
          bestCue = id;
          bestLen = len;
          if (pass === 0) break; // cues are sorted longest first
        }
      }
    }
    if (bestCue >= 0) {
      cueAt.push(phrases[bestCue]!.cue);
      cueFree = i + bestLen;
    } else {
      cueAt.push(0);
    }
  }

  // Final scope ids: a new scope at each punctuation scope change and at each terminator word.
  let s = 0;
  let prevRaw = count > 0 ? scope[0]! : 0;
  for (let i = 0; i < count; i++) {
    const raw = scope[i]!;
    if (raw !== prevRaw) s++;
    prevRaw = raw;
    if (cueAt[i]! & CueFlag.terminator) s++;
    scope[i] = s;
  }
  const scopeFlags: number[] = [];
  for (let k = 0; k <= s; k++) scopeFlags.push(0);
  const flags: number[] = [];

  // Forward: pre-negation and strong pre-uncertainty run to the end of their scope.
  let cur = -1;
  let neg = false;
  let strong = false;
  for (let i = 0; i < count; i++) {
    const sc = scope[i]!;
    if (sc !== cur) {
      cur = sc;
      neg = false;
      strong = false;
    }
    const cf = cueAt[i]!;
    if (cf !== 0) {
      if (cf & CueFlag.negatePre) neg = true;
      if (cf & CueFlag.strongPre) strong = true;
      if (cf & CueFlag.uncertain) scopeFlags[sc] = scopeFlags[sc]! | TokenFlag.uncertain;
      if (cf & CueFlag.question) scopeFlags[sc] = scopeFlags[sc]! | TokenFlag.questioned;
    }
    flags.push((neg ? TokenFlag.negated : 0) | (strong ? TokenFlag.strongUncertain : 0));
  }
  // Backward: post-negation to the start of the scope; strong post-uncertainty back to the previous comma.
  cur = -1;
  for (let i = count - 1; i >= 0; i--) {
    const sc = scope[i]!;
    if (sc !== cur) {
      cur = sc;
      neg = false;
      strong = false;
    } else if (commaBefore[i + 1] === 1) {
      strong = false;
    }
    const cf = cueAt[i]!;
    if (cf & CueFlag.negatePost) neg = true;
    if (cf & CueFlag.strongPost) strong = true;
    flags[i] = flags[i]! | (neg ? TokenFlag.negated : 0) | (strong ? TokenFlag.strongUncertain : 0) | scopeFlags[sc]!;
  }
  if (questionSentences.length > 0) {
    for (let i = 0; i < count; i++) if (questionSentences.includes(sentence[i]!)) flags[i] = flags[i]! | TokenFlag.questioned;
  }

  return { text, lower, wordCount: count, wordStart, wordEnd, flags, hitPhrase, hitWord, hitWordEnd };
}

function endsWithAbbreviation(lower: string, wordStart: readonly number[], wordEnd: readonly number[], dot: number): boolean {
  const last = wordEnd.length - 1;
  if (last < 0 || wordEnd[last] !== dot) return false;
  const len = dot - wordStart[last]!;
  return len <= 6 && ABBREVIATIONS.has(lower.slice(wordStart[last]!, dot));
}

/** Whether the text word [start, end) is the phrase word `pw` (or starts with it, for a prefix pattern). */
function wordMatches(lower: string, start: number, end: number, pw: string, prefix: boolean): boolean {
  const len = end - start;
  if (prefix ? len < pw.length : len !== pw.length) return false;
  return lower.startsWith(pw, start);
}

function matchLength(
  p: Phrase,
  lower: string,
  wordStart: readonly number[],
  wordEnd: readonly number[],
  sentence: readonly number[],
  i: number,
  count: number,
): number {
  const len = p.words.length;
  if (i + len > count) return 0;
  // Phrases never straddle a sentence boundary.
  if (len > 1 && sentence[i + len - 1] !== sentence[i]) return 0;
  for (let k = 0; k < len; k++) {
    if (!wordMatches(lower, wordStart[i + k]!, wordEnd[i + k]!, p.words[k]!, p.prefix[k]!)) return 0;
  }
  return len;
}

function startsNewSentence(text: string, from: number): boolean {
  let j = from;
  while (j < text.length && (text.charCodeAt(j) === 32 || text.charCodeAt(j) === 9 || text.charCodeAt(j) === 13)) j++;
  if (j >= text.length) return true;
  const c = text.charCodeAt(j);
  if (c === 10 || c === 45 /* - */ || c === 42 /* * */ || c === 0x2022 /* • */) return true;
  if (c >= 48 && c <= 57) {
    let k = j;
    while (k < text.length && text.charCodeAt(k) >= 48 && text.charCodeAt(k) <= 57) k++;
    const d = text.charCodeAt(k);
    return d === 46 || d === 41; // "1." or "1)"
  }
  // An upper-case header such as "IMPRESSION:" or "FINDINGS:".
  if (c >= 65 && c <= 90) {
    let k = j;
    while (k < text.length && k - j < 40) {
      const d = text.charCodeAt(k);
      if (d === 58 /* : */) return k - j >= 3;
      if (!((d >= 65 && d <= 90) || d === 32 || d === 47 || d === 38)) return false;
      k++;
    }
  }
  return false;
}

/** The words of a text span as written (for reason details). */
export function snippet(at: AnalyzedText, fromWord: number, toWord: number): string {
  if (fromWord >= toWord) return '';
  return at.text.slice(at.wordStart[fromWord]!, at.wordEnd[toWord - 1]!);
}

/** The class of a hit: the most telling flag of any of its words (a negated first word negates the phrase). */
export function classOfHit(at: AnalyzedText, hit: number): number {
  return hitClass(at.flags[at.hitWord[hit]!]!);
}

/**
 * The first hit of a phrase whose id is set in `mask`, within words
 * [fromWord, toWord), whose class is in `accept`; -1 when none.
 */
export function findHit(at: AnalyzedText, mask: Uint8Array, accept: number, fromWord = 0, toWord = Number.MAX_SAFE_INTEGER): number {
  const { hitPhrase, hitWord } = at;
  for (let h = 0; h < hitPhrase.length; h++) {
    if (mask[hitPhrase[h]!] !== 1) continue;
    const w = hitWord[h]!;
    if (w < fromWord || w >= toWord) continue;
    if (hitClass(at.flags[w]!) & accept) return h;
  }
  return -1;
}

/**
 * Finds a phrase that is not in the lexicon (an AI finding text we have no
 * synonyms for) by walking the words; returns the first word index whose
 * class is in `accept`, or -1. Slower than the lexicon, used only on rare paths.
 */
export function findWords(at: AnalyzedText, phrase: readonly string[], accept: number, fromWord = 0, toWord = Number.MAX_SAFE_INTEGER): number {
  const end = Math.min(toWord, at.wordCount) - phrase.length;
  outer: for (let i = fromWord; i <= end; i++) {
    for (let k = 0; k < phrase.length; k++) {
      if (!wordMatches(at.lower, at.wordStart[i + k]!, at.wordEnd[i + k]!, phrase[k]!, false)) continue outer;
    }
    if (hitClass(at.flags[i]!) & accept) return i;
  }
  return -1;
}

/** Convenience for tests and tools: the class of the first occurrence of `term` in `text`, or undefined. */
export function classify(text: string, term: string, extraTerms: readonly string[] = []): 'affirmed' | 'uncertain' | 'questioned' | 'negated' | undefined {
  const b = new LexiconBuilder();
  for (const [p, f] of defaultCues()) b.cue(p, f);
  const id = b.term(term);
  for (const t of extraTerms) b.term(t);
  const lex = b.build();
  const at = analyzeText(lex, text);
  for (let h = 0; h < at.hitPhrase.length; h++) if (at.hitPhrase[h] === id) return hitClassName(classOfHit(at, h));
  return undefined;
}
