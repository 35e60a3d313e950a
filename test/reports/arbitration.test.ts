import { expect } from 'chai';
import { Hl7Message } from '../../src/hl7/hl7-message.js';
import { chooseReader, type ReaderLoad } from '../../src/readers/assignment.js';
import { arbitrationPolicy } from '../../src/reports/arbitration.service.js';
import { buildSecondReportOru } from '../../src/reports/oru-builder.js';
import { validateRuleSet } from '../../src/rules/rule.schema.js';
import type { Rule } from '../../src/rules/rule.types.js';
import { oruR01 } from '../helpers/hl7-samples.js';

const uid = '1.2.826.0.1.3680043.8.498.78';

describe('arbitration: rule option, third reader choice, ORU', () => {
  it('validates arbitration {when, readerGroup?} on any rule kind; YAML numbers count as scores; unknown scores and keys are errors', () => {
    const ok = validateRuleSet([
      { id: 'onc', kind: 'oncology', priority: 'urgent', arbitration: { when: ['2b', '3a', '3b', '3b'], readerGroup: 'neuro' } },
      { id: 'm', kind: 'manual', priority: 'routine', arbitration: { when: [1, '2a'] } },
    ]);
    expect(ok.ok, JSON.stringify(ok)).to.equal(true);
    if (!ok.ok) return;
    expect(ok.rules[0]!.arbitration).to.deep.equal({ when: ['2b', '3a', '3b'], readerGroup: 'neuro' });
    expect(ok.rules[1]!.arbitration).to.deep.equal({ when: ['1', '2a'] });
    const bad = validateRuleSet([
      { id: 'onc', kind: 'oncology', priority: 'urgent', arbitration: { when: ['4'], group: 'x' } },
      { id: 'x', kind: 'manual', priority: 'routine', arbitration: { when: [] } },
    ]);
    expect(bad.ok).to.equal(false);
    if (bad.ok) return;
    const paths = bad.errors.map((e) => e.path);
    expect(paths).to.include('rules[0].arbitration.when[0]');
    expect(paths).to.include('rules[0].arbitration.group');
    expect(paths).to.include('rules[1].arbitration.when');
  });

  it('applies the arbitration of the rules that opened the case, at the listed scores only', () => {
    const rules = [
      { id: 'a', kind: 'manual', arbitration: { when: ['2b', '3a'] } },
      { id: 'b', kind: 'manual', arbitration: { when: ['3a'], readerGroup: 'neuro' } },
      { id: 'c', kind: 'manual' },
    ] as unknown as Rule[];
    expect(arbitrationPolicy(rules, ['a', 'b'], '3a')).to.deep.equal({ ruleIds: ['a', 'b'], readerGroup: 'neuro' });
    expect(arbitrationPolicy(rules, ['a', 'c'], '2b')).to.deep.equal({ ruleIds: ['a'], readerGroup: null });
    expect(arbitrationPolicy(rules, ['a', 'b'], '2a')).to.equal(undefined);
    // A rule that did not open this case does not apply.
    expect(arbitrationPolicy(rules, ['c'], '3a')).to.equal(undefined);
  });

  it('never chooses the first or second reader, nor (avoidSameGroup) one of their groups', () => {
    const r = (id: string, o: Partial<ReaderLoad> = {}): ReaderLoad => ({
      id,
      name: id,
      subspecialties: [],
      modalities: ['CT'],
      maxOpenCases: 5,
      available: true,
      openCases: 0,
      ...o,
    });
    const readers = [
      r('first', { group: 'h1' }),
      r('second', { group: 'h2' }),
      r('colleague1', { group: 'h1' }),
      r('colleague2', { group: 'h2' }),
      r('outside', { group: 'h3', openCases: 4 }),
    ];
    const req = { modalities: ['CT'], exclude: [], firstReaderId: 'first', secondReaderId: 'second' };
    expect(chooseReader(readers, { ...req, avoidSameGroup: true })).to.deep.include({ ok: true, readerId: 'outside' });
    const any = chooseReader(readers, { ...req, avoidSameGroup: false });
    expect(any.ok && ['colleague1', 'colleague2']).to.include(any.ok ? any.readerId : '');
    expect(chooseReader([readers[0]!, readers[1]!, readers[3]!], { ...req, avoidSameGroup: true })).to.deep.equal({
      ok: false,
      reason: "no reader outside the first and second readers' groups",
    });
    expect(chooseReader([readers[0]!, readers[1]!], { ...req, avoidSameGroup: false })).to.deep.equal({
      ok: false,
      reason: 'only the first or second reader or readers who already had the case are left',
    });
  });

  it('writes the verdict, the final score and the arbitrator text as OBX after the concordance (OBX-16 the arbitrator)', () => {
    const base = {
      controlId: 'ARB0001',
      sendingApplication: 'SECONDREAD',
      sendingFacility: 'GATEWAY',
      primaryReport: oruR01({ controlId: 'PRIM2', accession: 'ACC7002', patientId: 'MRN7002', studyUid: uid }),
      accessionNumber: 'ACC7002',
      studyInstanceUid: uid,
      secondReader: { id: 'DRB' },
      text: 'Missed 9 mm nodule, right upper lobe.',
      radpeerScore: '3a' as const,
    };
    const plain = buildSecondReportOru(base);
    expect(plain).not.to.include('ARBVERD');
    const oru = buildSecondReportOru({
      ...base,
      arbitration: { verdict: 'second', finalScore: '3a', arbitratorId: 'DRC', text: 'Nodule present | confirmed.\nFollow-up CT advised.' },
    });
    const obx = oru
      .split('\r')
      .filter((s) => s.startsWith('OBX|'))
      .map((s) => s.split('|'));
    const codes = obx.map((f) => f[3]!.split('^')[0]);
    expect(codes).to.deep.equal(['18782-3', 'RADPEER', 'SRCONC', 'ARBVERD', 'RADPEERF', 'ARBTXT', 'ARBTXT']);
    const verdict = obx[3]!;
    expect(verdict[2]).to.equal('CWE');
    expect(verdict[5]).to.equal('second^Agrees with the second read^L');
    expect(verdict[16]).to.equal('DRC');
    expect(obx[4]![5]).to.equal('3a^RADPEER 3a^RADPEER');
    // Our parser reads the escaped text back.
    const m = Hl7Message.parse(oru);
    const texts = m
      .all('OBX')
      .filter((s) => m.read(s, { field: 3 }) === 'ARBTXT')
      .map((s) => m.read(s, { field: 5 }));
    expect(texts).to.deep.equal(['Nodule present | confirmed.', 'Follow-up CT advised.']);
    expect(() => buildSecondReportOru({ ...base, arbitration: { verdict: 'second', finalScore: '9' as never } })).to.throw(/finalScore/);
  });
});
