import { expect } from 'chai';
import type { FoundStudy } from '../../src/priors/pacs.client.js';
import { lookbackStart, selectRelevantPriors, type CurrentStudy } from '../../src/priors/relevance.js';

const today = new Date('2026-12-01T12:00:00Z');
const current: CurrentStudy = {
  studyInstanceUid: '1.9',
  patientId: 'P1',
  issuerOfPatientId: 'HOSP',
  studyDate: '20261201',
  modalities: ['CT'],
  bodyParts: ['CHEST'],
  procedureCodes: [],
};
const policy = { maxStudies: 3, lookbackDays: 365, sameModality: true };

function study(uid: string, o: Partial<FoundStudy> = {}): FoundStudy {
  return {
    studyInstanceUid: uid,
    patientId: 'P1',
    issuerOfPatientId: 'HOSP',
    studyDate: '20260601',
    modalities: ['CT'],
    studyDescription: null,
    accessionNumber: null,
    bodyParts: [],
    procedureCodes: [],
    numberOfInstances: 2,
    ...o,
  };
}

describe('priors relevance', () => {
  it('the look-back period starts lookbackDays before today', () => {
    expect(lookbackStart(today, 365)).to.equal('20251201');
  });

  it('keeps the same patient same modality within the period, most recent first', () => {
    const r = selectRelevantPriors(
      current,
      [study('1.1', { studyDate: '20260101' }), study('1.2', { studyDate: '20261101' }), study('1.3', { modalities: ['CT', 'SR'] })],
      policy,
      today,
    );
    expect(r.selected.map((s) => s.studyInstanceUid)).to.deep.equal(['1.2', '1.3', '1.1']);
    expect(r.rejected).to.deep.equal([]);
  });

  it('never the current study, another patient id, or another issuer', () => {
    const r = selectRelevantPriors(
      current,
      [study('1.9'), study('1.2', { patientId: 'P2' }), study('1.3', { issuerOfPatientId: 'OTHER' }), study('1.4', { issuerOfPatientId: null })],
      policy,
      today,
    );
    expect(r.selected.map((s) => s.studyInstanceUid)).to.deep.equal(['1.4']);
    expect(r.rejected.map((x) => x.reason)).to.deep.equal(['current-study', 'other-patient', 'other-issuer']);
  });

  it('leaves out studies too old, undated, later than the current one, of another modality or body part', () => {
    const r = selectRelevantPriors(
      current,
      [
        study('1.1', { studyDate: '20240101' }),
        study('1.2', { studyDate: null }),
        study('1.3', { studyDate: '20261202' }),
        study('1.4', { modalities: ['MR'] }),
        study('1.5', { bodyParts: ['KNEE'] }),
        study('1.6', { modalities: ['SR'] }),
      ],
      policy,
      today,
    );
    expect(r.selected).to.deep.equal([]);
    expect(r.rejected.map((x) => x.reason)).to.deep.equal(['too-old', 'no-date', 'not-earlier', 'other-modality', 'other-body-part', 'other-modality']);
  });

  it('sameModality: false takes other modalities; maxStudies caps the list', () => {
    const r = selectRelevantPriors(
      current,
      [study('1.1', { modalities: ['MR'], studyDate: '20260301' }), study('1.2', { studyDate: '20260401' }), study('1.3', { studyDate: '20260501' })],
      { ...policy, sameModality: false, maxStudies: 2 },
      today,
    );
    expect(r.selected.map((s) => s.studyInstanceUid)).to.deep.equal(['1.3', '1.2']);
    expect(r.rejected).to.deep.equal([{ studyInstanceUid: '1.1', reason: 'over-limit' }]);
  });

  it('procedure codes must share one where both sides have them', () => {
    const c = { ...current, procedureCodes: ['RADLEX:RPID16'] };
    const r = selectRelevantPriors(
      c,
      [study('1.1', { procedureCodes: ['RADLEX:RPID16'] }), study('1.2', { procedureCodes: ['RADLEX:RPID99'] }), study('1.3')],
      policy,
      today,
    );
    expect(r.selected.map((s) => s.studyInstanceUid)).to.deep.equal(['1.1', '1.3']);
  });
});
