import { expect } from 'chai';
import { GatewayError } from '../../src/errors.js';
import { keywordPreview } from '../../src/rules/keyword-preview.js';

describe('rules/keyword-preview: the negation preview of the rule builder', () => {
  it('reads each keyword as the engine does: negated, affirmed, uncertain, absent', () => {
    expect(
      keywordPreview({
        text: 'No evidence of metastatic disease. Possible lymphoma. Discussed at the tumour board.',
        keywords: ['metasta*', 'lymphoma*', 'tumour board', 'staging'],
      }),
    ).to.deep.equal([
      { keyword: 'metasta*', class: 'negated' },
      { keyword: 'lymphoma*', class: 'uncertain' },
      { keyword: 'tumour board', class: 'affirmed' },
      { keyword: 'staging', class: 'absent' },
    ]);
  });

  it('refuses bad input with a clear message', () => {
    const fails = (body: unknown, re: RegExp) => {
      try {
        keywordPreview(body);
      } catch (e) {
        expect(e).to.be.instanceOf(GatewayError);
        expect((e as Error).message).to.match(re);
        return;
      }
      expect.fail('no error');
    };
    fails({ text: 'x' }, /keywords must be a list/);
    fails({ text: 'x', keywords: [] }, /keywords must be a list/);
    fails({ text: 1, keywords: ['a'] }, /text must be a string/);
    fails({ text: 'x', keywords: ['a'], extra: 1 }, /unknown field "extra"/);
    fails({ text: 'x', keywords: ['--'] }, /has no words/);
  });
});
