import { expect } from 'chai';
import type { FoundStudy } from '../../src/priors/pacs.client.js';
import { insertFoundPriors, isPriorStudy, priorsOfCases } from '../../src/priors/prior.repository.js';
import { openTempDatabase } from '../helpers/tmp.js';

const found = (uid: string): FoundStudy => ({
  studyInstanceUid: uid,
  patientId: 'P1',
  issuerOfPatientId: null,
  studyDate: '20260101',
  modalities: ['CT'],
  studyDescription: null,
  accessionNumber: null,
  bodyParts: [],
  procedureCodes: [],
  numberOfInstances: 1,
});

describe('priors repository: which studies are read-only context', () => {
  let temp: Awaited<ReturnType<typeof openTempDatabase>>;
  beforeEach(async () => {
    temp = await openTempDatabase();
  });
  afterEach(() => temp.close());

  it('a study fetched for a case is a prior (no rules); one already in the gateway when found keeps its own life cycle', async () => {
    const db = temp.opened.db;
    const now = '2026-12-01T10:00:00.000Z';
    await db
      .insertInto('studies')
      .values({
        study_instance_uid: '1.2.here',
        state: 'stable',
        first_received_at: now,
        last_received_at: now,
        updated_at: now,
        accession_number: null,
        patient_id: 'P1',
        study_date: null,
        study_description: null,
        referring_physician: null,
        calling_ae: null,
        stable_at: now,
        issuer_of_patient_id: null,
        other_patient_ids: null,
        hold_reason: null,
        hold_detail: null,
        held_at: null,
        patient_name: null,
        patient_birth_date: null,
        held_from_state: null,
      })
      .execute();
    await insertFoundPriors(db, 'case-1', [found('1.2.fetched'), found('1.2.here')], now);
    // found again by a later case: recorded once per case, the first answer stays
    await insertFoundPriors(db, 'case-1', [found('1.2.fetched')], now);
    expect(await isPriorStudy(db, '1.2.fetched')).to.equal(true);
    expect(await isPriorStudy(db, '1.2.here')).to.equal(false);
    expect(await isPriorStudy(db, '1.2.unknown')).to.equal(false);
    const rows = await priorsOfCases(db, ['case-1']);
    expect(rows.map((r) => [r.study_instance_uid, r.origin, r.state])).to.deep.equal([
      ['1.2.fetched', 'pacs', 'found'],
      ['1.2.here', 'gateway', 'found'],
    ]);
  });
});
