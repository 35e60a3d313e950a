import { expect } from 'chai';
import type { Db } from '../../src/db/database.js';
import { LinkState } from '../../src/states.js';
import { canonicalPatient, decideLink, identityMatch, patientKeys, survivingPatientId } from '../../src/studies/reconcile.js';
import { openTempDatabase } from '../helpers/tmp.js';

/**
 * The linking decision against a real database (SQLite file, or a fresh
 * PostgreSQL database with GATEWAY_TEST_DATABASE_URL). Studies are written as
 * ingest leaves them, issuer and Other Patient IDs included (filled by DICOM
 * ingest on another branch; set directly here).
 */
describe('reconcile: identity with its authority (real database)', () => {
  let temp: Awaited<ReturnType<typeof openTempDatabase>>;
  let db: Db;
  const now = '2026-03-01T10:00:00.000Z';

  beforeEach(async () => {
    temp = await openTempDatabase();
    db = temp.opened.db;
  });
  afterEach(async () => temp.close());

  async function study(
    uid: string,
    accession: string | null,
    patientId: string | null,
    issuer: string | null = null,
    others: { id: string; issuer: string | null; type: string }[] = [],
  ): Promise<void> {
    await db
      .insertInto('studies')
      .values({
        study_instance_uid: uid,
        accession_number: accession,
        patient_id: patientId,
        issuer_of_patient_id: issuer,
        other_patient_ids: others.length > 0 ? JSON.stringify(others) : null,
        study_date: null,
        study_description: null,
        referring_physician: null,
        calling_ae: 'PACS1',
        state: 'stable',
        first_received_at: now,
        last_received_at: now,
        stable_at: now,
        updated_at: now,
        hold_reason: null,
        hold_detail: null,
        held_at: null,
      })
      .execute();
  }

  async function merge(prior: string, priorAuthority: string | null, survivor: string, authority: string | null, id: string): Promise<void> {
    await db
      .insertInto('hl7_messages')
      .values({
        id: `m-${id}`,
        sender_application: 'PAS',
        sender_facility: 'HOSP',
        control_id: id,
        message_type: 'ADT^A40',
        kind: 'patient-merge',
        hl7_version: '2.5.1',
        status: 'applied',
        reason: null,
        ack_code: 'AA',
        study_instance_uid: null,
        accession_number: null,
        remote_address: null,
        raw: 'MSH|',
        reuse_of: null,
        received_at: now,
        updated_at: now,
      })
      .execute();
    await db
      .insertInto('patient_merges')
      .values({
        id,
        message_id: `m-${id}`,
        patient_id: survivor,
        prior_patient_id: prior,
        authority,
        prior_authority: priorAuthority,
        studies_updated: 0,
        records_updated: 0,
        applied_at: now,
      })
      .execute();
  }

  const ids = (...pairs: [string, string | null][]) => pairs.map(([id, authority]) => ({ id, authority }));

  it('links when a repetition equals the study in id and authority; the same id under another authority is held', async () => {
    await study('1.9.1', 'A1', 'MRN1', 'HOSP');
    expect(
      await decideLink(db, { accessionNumber: 'A1', studyInstanceUid: null, patientId: '555', patientIds: ids(['555', 'OTHERHOSP'], ['MRN1', 'HOSP']) }),
    ).to.deep.equal({
      state: LinkState.linked,
      studyInstanceUid: '1.9.1',
    });
    const d = await decideLink(db, { accessionNumber: 'A1', studyInstanceUid: null, patientId: 'MRN1', patientIds: ids(['MRN1', 'OTHERHOSP']) });
    expect(d.state).to.equal(LinkState.held);
    expect(d.state === LinkState.held && d.reason).to.match(/another assigning authority/);
  });

  it('never links on accession or StudyInstanceUID alone', async () => {
    await study('1.9.2', 'A2', null);
    const d = await decideLink(db, { accessionNumber: 'A2', studyInstanceUid: '1.9.2', patientId: 'MRN2', patientIds: ids(['MRN2', 'HOSP']) });
    expect(d.state === LinkState.held && d.reason).to.match(/^patient-id-missing: the study/);
    await study('1.9.3', 'A3', 'MRN3', 'HOSP');
    const e = await decideLink(db, { accessionNumber: 'A3', studyInstanceUid: null, patientId: null });
    expect(e.state === LinkState.held && e.reason).to.match(/^patient-id-missing: message/);
  });

  it('grouped procedures: another accession links to the study only when an order pairs it with the study', async () => {
    await study('1.9.4', 'A4', 'MRN4', 'HOSP');
    const p = { patientId: 'MRN4', patientIds: ids(['MRN4', 'HOSP']) };
    // A report alone naming the study under another accession: a contradiction.
    expect((await decideLink(db, { accessionNumber: 'A4B', studyInstanceUid: '1.9.4', ...p })).state).to.equal(LinkState.held);
    // The RIS's order pairing A4B with the study: linked.
    expect(await decideLink(db, { accessionNumber: 'A4B', studyInstanceUid: '1.9.4', ...p, isOrder: true })).to.deep.equal({
      state: LinkState.linked,
      studyInstanceUid: '1.9.4',
    });
  });

  it('follows merges with their authority, and compares as sent before following them', async () => {
    await merge('OLD', 'HOSP', 'NEW', 'HOSP', 'mg1');
    expect(await canonicalPatient(db, { id: 'OLD', authority: 'HOSP' })).to.deep.equal({ id: 'NEW', authority: 'HOSP' });
    expect(await canonicalPatient(db, { id: 'OLD', authority: 'ELSEWHERE' })).to.deep.equal({ id: 'OLD', authority: 'ELSEWHERE' });
    expect(await survivingPatientId(db, 'OLD', null)).to.deep.equal({ id: 'NEW', authority: 'HOSP' });
    expect((await identityMatch(db, ids(['OLD', 'HOSP']), ids(['NEW', 'HOSP']))).match).to.equal(true);
    expect((await identityMatch(db, ids(['OLD', 'ELSEWHERE']), ids(['NEW', 'HOSP']))).match).to.equal(false);
    // Two ids under one authority are two patients even when they share a national number.
    expect((await identityMatch(db, ids(['MRN5', 'HOSP'], ['943', 'NHS']), ids(['MRN6', 'HOSP'], ['943', 'NHS']))).match).to.equal(false);
    expect((await identityMatch(db, ids(['MRN5', null]), ids(['MRN5', 'HOSP']))).match).to.equal(true);
  });

  it('reads identifier lists as stored by orders ({authority}) and by DICOM ingest ({issuer})', () => {
    expect(
      patientKeys('P1', 'HOSP', JSON.stringify([{ id: 'P1', authority: 'HOSP', type: 'MR' }, { id: 'X9', issuer: 'NHS', type: 'NH' }, { id: '' }])),
    ).to.deep.equal(ids(['P1', 'HOSP'], ['X9', 'NHS']));
    expect(patientKeys(null, null, 'not json')).to.deep.equal([]);
  });
});
