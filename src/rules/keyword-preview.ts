import { ErrorCode, GatewayError } from '../errors.js';
import { classify, phraseWords } from './text-match.js';

export type KeywordClass = 'affirmed' | 'uncertain' | 'questioned' | 'negated' | 'absent';

const MAX_TEXT = 10_000;
const MAX_KEYWORDS = 200;

/**
 * How the rule engine's text matching reads each keyword in `text` (negation, uncertainty and
 * questions in the keyword's sentence), for the rule builder's preview. Body: `{text, keywords}`.
 */
export function keywordPreview(body: unknown): { keyword: string; class: KeywordClass }[] {
  const b = (typeof body === 'object' && body !== null && !Array.isArray(body) ? body : {}) as Record<string, unknown>;
  for (const k of Object.keys(b)) if (k !== 'text' && k !== 'keywords') throw new GatewayError(ErrorCode.invalidInput, `unknown field "${k}"`);
  const text = b['text'];
  const keywords = b['keywords'];
  if (typeof text !== 'string' || text.length > MAX_TEXT)
    throw new GatewayError(ErrorCode.invalidInput, `text must be a string of at most ${MAX_TEXT} characters`);
  if (
    !Array.isArray(keywords) ||
    keywords.length === 0 ||
    keywords.length > MAX_KEYWORDS ||
    !keywords.every((k) => typeof k === 'string' && k.trim() !== '' && k.length <= 200)
  ) {
    throw new GatewayError(ErrorCode.invalidInput, `keywords must be a list of 1 to ${MAX_KEYWORDS} non-empty strings`);
  }
  return (keywords as string[]).map((keyword) => {
    let words: string[];
    try {
      words = phraseWords(keyword).words;
    } catch {
      words = [];
    }
    if (words.length === 0) throw new GatewayError(ErrorCode.invalidInput, `keyword "${keyword}" has no words`);
    return { keyword, class: classify(text, keyword) ?? 'absent' };
  });
}
