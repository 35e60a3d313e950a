import { expect } from 'chai';
import { chooseReader, type ReaderLoad } from '../../src/readers/assignment.js';

const reader = (id: string, o: Partial<ReaderLoad> = {}): ReaderLoad => ({
  id,
  name: id,
  subspecialties: ['oncology'],
  modalities: ['CT', 'MR'],
  maxOpenCases: 5,
  available: true,
  openCases: 0,
  ...o,
});
const req = { modalities: ['CT'], avoidSameGroup: false, exclude: [] as string[] };

describe('chooseReader', () => {
  it('never picks the first reader, even when they are the least loaded', () => {
    const r = chooseReader([reader('rad7'), reader('dr-b', { openCases: 3 })], { ...req, firstReaderId: 'rad7' });
    expect(r).to.deep.include({ ok: true, readerId: 'dr-b' });
  });

  it('picks the least loaded eligible reader, ties by capacity share then id', () => {
    expect(chooseReader([reader('c', { openCases: 2 }), reader('b', { openCases: 1 }), reader('a', { openCases: 1 })], req)).to.deep.include({ readerId: 'a' });
    expect(chooseReader([reader('a', { openCases: 1, maxOpenCases: 2 }), reader('b', { openCases: 1, maxOpenCases: 10 })], req)).to.deep.include({
      readerId: 'b',
    });
  });

  it('respects modality, subspecialty, capacity, availability, exclusions and the group rule', () => {
    expect(chooseReader([reader('mr-only', { modalities: ['MR'] }), reader('any', { modalities: [] })], req)).to.deep.include({ readerId: 'any' });
    expect(chooseReader([reader('neuro', { subspecialties: ['neuro'] }), reader('onc')], { ...req, subspecialty: 'Oncology' })).to.deep.include({
      readerId: 'onc',
    });
    expect(chooseReader([reader('full', { openCases: 5 }), reader('free', { openCases: 4 })], req)).to.deep.include({ readerId: 'free' });
    expect(chooseReader([reader('away', { available: false }), reader('here', { openCases: 4 })], req)).to.deep.include({ readerId: 'here' });
    expect(chooseReader([reader('declined'), reader('other', { openCases: 2 })], { ...req, exclude: ['declined'] })).to.deep.include({ readerId: 'other' });
    const groups = [reader('first', { group: 'hosp-a' }), reader('colleague', { group: 'hosp-a' }), reader('outside', { group: 'hosp-b', openCases: 4 })];
    expect(chooseReader(groups, { ...req, firstReaderId: 'first', avoidSameGroup: true })).to.deep.include({ readerId: 'outside' });
    expect(chooseReader(groups, { ...req, firstReaderId: 'first', avoidSameGroup: false })).to.deep.include({ readerId: 'colleague' });
  });

  it('says which condition left nobody', () => {
    expect(chooseReader([], req)).to.deep.equal({ ok: false, reason: 'no reader is available' });
    expect(chooseReader([reader('rad7')], { ...req, firstReaderId: 'rad7' })).to.deep.include({
      ok: false,
      reason: 'only the first reader or readers who already had the case are left',
    });
    expect(chooseReader([reader('a', { modalities: ['US'] })], req)).to.deep.include({ ok: false, reason: 'no reader reads CT' });
    expect(chooseReader([reader('a')], { ...req, subspecialty: 'neuro' })).to.deep.include({ ok: false, reason: 'no reader has the subspecialty neuro' });
    expect(chooseReader([reader('a', { openCases: 5 })], req)).to.deep.include({ ok: false, reason: 'every eligible reader is at capacity' });
  });
});
