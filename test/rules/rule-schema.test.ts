import { readFileSync } from 'node:fs';
import { expect } from 'chai';
import { parse } from 'yaml';
import { compileRuleSet } from '../../src/rules/evaluate.js';
import { defaultLists, validateRuleSet, type RuleSetError } from '../../src/rules/rule.schema.js';

function errorsOf(yamlText: string, knownDestinations?: string[]): RuleSetError[] {
  const r = validateRuleSet(parse(yamlText), knownDestinations ? { knownDestinations } : {});
  if (r.ok) throw new Error('expected validation to fail');
  return r.errors;
}

describe('rules/rule.schema', () => {
  it('accepts the shipped config/rules.yaml and it compiles', () => {
    const r = validateRuleSet(parse(readFileSync(new URL('../../config/rules.yaml', import.meta.url), 'utf8')));
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    expect(r.rules.map((x) => x.kind)).to.have.members(['oncology', 'discordance', 'high-stakes', 'manual', 'sampling']);
    expect(r.rules.every((x) => x.destination === undefined)).to.equal(true);
    expect(() => compileRuleSet(r.rules, { samplingSecret: 's' })).not.to.throw();
  });

  it('applies defaults and accepts a bare list and single strings for lists', () => {
    const r = validateRuleSet([{ id: 'onc', kind: 'oncology', priority: 'urgent', when: { modality: 'CT' } }]);
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    const rule = r.rules[0]!;
    expect(rule).to.deep.include({ enabled: true, blinded: true });
    expect(rule.when).to.deep.equal({ modality: ['CT'] });
    if (rule.kind !== 'oncology') throw new Error('kind');
    expect(rule.codes).to.deep.equal({ personalHistory: false, sources: ['DG1', 'OBR-31', 'OBR-13'] });
    expect(rule.keywordSources).to.deep.equal(['indication', 'report']);
    expect(rule.uncertainCountsAsPositive).to.equal(true);
    expect(rule.prospective).to.equal(false);
  });

  it('reports a misspelt key with its path and a suggestion, instead of ignoring it', () => {
    const errors = errorsOf(`
rules:
  - { id: a, kind: manual, priority: urgent }
  - { id: b, kind: manual, priority: urgent }
  - { id: c, kind: manual, priority: urgent }
  - id: ct-only
    kind: oncology
    priority: urgent
    when: { all: [ { modalty: [CT] } ] }
    keywordSorces: [report]
`);
    expect(errors).to.deep.include({ path: 'rules[3].when.all[0].modalty', message: 'unknown key "modalty" (did you mean "modality"?)' });
    expect(errors).to.deep.include({ path: 'rules[3].keywordSorces', message: 'unknown key "keywordSorces" (did you mean "keywordSources"?)' });
  });

  it('names the field for wrong values', () => {
    const errors = errorsOf(`
rules:
  - { id: s, kind: sampling, priority: routine, rate: 1.5, period: fortnight, minimum: 5, maximum: 2 }
  - { id: o, kind: oncology, priority: asap, codes: { include: [C96-C00, cancer] }, keywords: ["--"] }
  - { id: w, kind: manual, priority: urgent, when: {} }
  - { id: n, kind: manual, priority: urgent, when: { ageYears: { min: 80, max: 18 } } }
  - { id: q, kind: nonsense, priority: urgent }
  - { kind: manual, priority: urgent }
`);
    const paths = errors.map((e) => e.path);
    expect(paths).to.include.members([
      'rules[0].rate',
      'rules[0].period',
      'rules[1].priority',
      'rules[1].codes.include[0]',
      'rules[1].codes.include[1]',
      'rules[1].keywords[0]',
      'rules[2].when',
      'rules[3].when.ageYears',
      'rules[4].kind',
      'rules[5].id',
    ]);
    expect(errors.find((e) => e.path === 'rules[1].codes.include[0]')!.message).to.include('backwards');
    expect(errors.find((e) => e.path === 'rules[4].kind')!.message).to.include('oncology, discordance, sampling, high-stakes, manual');
    expect(errors.find((e) => e.path === 'rules[5].id')!.message).to.equal('required');
  });

  it('reports maximum below minimum', () => {
    const errors = errorsOf(`[ { id: s, kind: sampling, priority: routine, rate: 0.05, period: month, minimum: 5, maximum: 2 } ]`);
    expect(errors).to.deep.equal([{ path: 'rules[0].maximum', message: 'maximum 2 is below minimum 5' }]);
  });

  it('reports duplicate ids, unknown destinations and destination plus reader group', () => {
    const errors = errorsOf(
      `
rules:
  - { id: onc, kind: oncology, priority: urgent, destination: pool-web }
  - { id: onc, kind: manual, priority: urgent, destination: pool-typo }
  - { id: hs, kind: high-stakes, priority: urgent, destination: pool-web, readerGroup: neuro }
`,
      ['pool-web', 'pool-dimse'],
    );
    expect(errors).to.deep.equal([
      { path: 'rules[1].id', message: 'duplicate rule id "onc" (also rules[0])' },
      { path: 'rules[1].destination', message: 'unknown destination "pool-typo" (known: pool-web, pool-dimse)' },
      { path: 'rules[2].readerGroup', message: 'give either destination or readerGroup, not both' },
    ]);
  });

  it('rejects unknown top-level keys and non-lists', () => {
    expect(errorsOf(`{ rules: [], rule: [] }`)).to.deep.equal([{ path: 'rule', message: 'unknown key "rule" (a rule file has only "rules")' }]);
    expect(errorsOf(`42`)[0]!.path).to.equal('rules');
  });

  it('defaultLists returns fresh copies', () => {
    const a = defaultLists();
    a.oncologyKeywords.push('changed');
    expect(defaultLists().oncologyKeywords).not.to.include('changed');
  });
});
