import { expect } from 'chai';
import { formatIcd10, Icd10Matcher, normalizeIcd10, parseIcd10Pattern } from '../../src/rules/icd10.js';
import { defaultLists } from '../../src/rules/rule.schema.js';

describe('rules/icd10', () => {
  describe('normalizeIcd10', () => {
    const cases: Array<[string, string | undefined]> = [
      ['C34.1', 'C341'],
      ['C341', 'C341'],
      ['c34.10', 'C3410'],
      [' C34.1 ', 'C341'],
      ['C34.1^Malignant neoplasm of upper lobe, bronchus or lung^I10', 'C341'],
      ['C50.911^^ICD-10-CM', 'C50911'],
      ['I10:C34.1', 'C341'],
      ['ICD10CM:D3A.010', 'D3A010'],
      ['C34.1 (ICD-10-CM)', 'C341'],
      ['D3A.0', 'D3A0'],
      ['Z85.3', 'Z853'],
      ['lung cancer', undefined],
      ['', undefined],
      ['12345', undefined],
    ];
    for (const [raw, expected] of cases) {
      it(`${JSON.stringify(raw)} -> ${String(expected)}`, () => expect(normalizeIcd10(raw)).to.equal(expected));
    }
  });

  it('formats codes with the dot after the category', () => {
    expect(formatIcd10('C341')).to.equal('C34.1');
    expect(formatIcd10('C00')).to.equal('C00');
  });

  describe('default oncology ranges (C00-C96, D00-D09, D37-D49)', () => {
    const { include, exclude } = defaultLists().oncologyCodes;
    const m = new Icd10Matcher(include, exclude);
    const trigger = [
      'C00',
      'C000',
      'C34.1',
      'C4A.9',
      'C7A.010',
      'C7B.02',
      'C96.9',
      'C96',
      'D00.0',
      'D05.11',
      'D09',
      'D09.9',
      'D37',
      'D37.1',
      'D44.0',
      'D48.5',
      'D49',
      'D49.9',
    ];
    const quiet = ['B99.9', 'C97', 'D10', 'D10.0', 'D12.6', 'D36', 'D36.9', 'D3A', 'D3A.0', 'D3A.010', 'D50.9', 'Z85', 'Z85.3', 'Z80.0', 'R91.1', 'J18.9'];
    for (const code of trigger) it(`${code} triggers`, () => expect(m.matches(normalizeIcd10(code)!)).to.equal(true));
    for (const code of quiet) it(`${code} does not trigger`, () => expect(m.matches(normalizeIcd10(code)!)).to.equal(false));

    it('Z85 triggers only when personal history is added', () => {
      const withHistory = new Icd10Matcher([...include, ...defaultLists().oncologyCodes.personalHistory], exclude);
      expect(withHistory.matches('Z853')).to.equal(true);
      expect(m.matches('Z853')).to.equal(false);
    });
  });

  it('exclusions win over inclusions, prefixes match codes below them', () => {
    const m = new Icd10Matcher(['C00-C96'], ['C44', 'C50.9']);
    expect(m.matches('C4491')).to.equal(false);
    expect(m.matches('C50911')).to.equal(false);
    expect(m.matches('C50111')).to.equal(true);
  });

  it('rejects malformed patterns with a message', () => {
    expect(parseIcd10Pattern('C96-C00')).to.be.a('string').that.includes('backwards');
    expect(parseIcd10Pattern('C00-D09')).to.be.a('string').that.includes('chapter');
    expect(parseIcd10Pattern('C34.1-C34.9')).to.be.a('string');
    expect(parseIcd10Pattern('cancer')).to.be.a('string');
    expect(parseIcd10Pattern('c00 - c96')).to.deep.include({ type: 'range' });
    expect(parseIcd10Pattern('Z85.3')).to.deep.equal({ type: 'prefix', prefix: 'Z853' });
  });
});
