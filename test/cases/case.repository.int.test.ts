import { expect } from 'chai';
import {
  insertCase,
  insertManualRequest,
  latestUncancelledCaseId,
  linkManualRequest,
  manualRequestsOfStudies,
  receivedStudyUid,
  receivedStudyUidsByAccession,
} from '../../src/cases/case.repository.js';
import type { CaseRow } from '../../src/cases/case.table.js';
import type { Db } from '../../src/db/database.js';
import { CaseState } from '../../src/states.js';
import { insertInstance } from '../../src/studies/study.repository.js';
import { openTempDatabase, testPostgresUrl } from '../helpers/tmp.js';

// Lookups behind a manual request (case.service.ts) and an HL7 second report (second-report.service.ts)
// that the end-to-end tests reach only on their happy path.
describe(`case repository: study and case lookups (${testPostgresUrl ? 'PostgreSQL' : 'SQLite'})`, () => {
  let t: Awaited<ReturnType<typeof openTempDatabase>>;
  let db: Db;
  const now = '2026-03-01T10:00:00.000Z';

  beforeEach(async () => {
    t = await openTempDatabase();
    db = t.opened.db;
  });
  afterEach(async () => t.close());

  async function study(uid: string, accession: string): Promise<void> {
    await insertInstance(
      db,
      {
        sopClassUid: '1.2.840.10008.5.1.4.1.1.2',
        sopInstanceUid: `${uid}.1.1`,
        transferSyntaxUid: '1.2.840.10008.1.2.1',
        studyInstanceUid: uid,
        seriesInstanceUid: `${uid}.1`,
        accessionNumber: accession,
        patientId: 'MRN1',
        modality: 'CT',
        studyDescription: null,
        seriesDescription: null,
        bodyPartExamined: null,
        studyDate: null,
        referringPhysicianName: null,
        seriesNumber: 1,
        instanceNumber: 1,
        filePath: `${uid}.dcm`,
        sizeBytes: 10,
        sha256: 'ab',
        callingAe: null,
      },
      now,
    );
  }

  const aCase = (id: string, uid: string, state: CaseState): CaseRow => ({
    id,
    study_instance_uid: uid,
    accession_number: null,
    state,
    priority: 'routine',
    sla_hours: 24,
    due_at: now,
    destination_id: null,
    reader_group: null,
    blinded: 1,
    deidentify: null,
    rule_set_version: null,
    reasons: '[]',
    reader_id: null,
    discrepant: 0,
    sla_breached_at: null,
    escalation_level: 0,
    created_by: 'test',
    created_at: now,
    updated_at: now,
  });

  it('finds a received study by UID or accession; several sharing an accession come back as several (at most the limit)', async () => {
    await study('1.2.1', 'ONE');
    await study('1.2.2', 'SHARED');
    await study('1.2.3', 'SHARED');
    await study('1.2.4', 'SHARED');
    expect(await receivedStudyUid(db, '1.2.1')).to.equal('1.2.1');
    expect(await receivedStudyUid(db, '1.2.9')).to.equal(undefined);
    expect(await receivedStudyUidsByAccession(db, 'ONE', 2)).to.deep.equal(['1.2.1']);
    expect(await receivedStudyUidsByAccession(db, 'NONE', 2)).to.deep.equal([]);
    const shared = await receivedStudyUidsByAccession(db, 'SHARED', 2);
    expect(shared).to.have.length(2);
    for (const uid of shared) expect(['1.2.2', '1.2.3', '1.2.4']).to.include(uid);
  });

  it('links a manual request to its case, and only that request', async () => {
    await study('1.2.1', 'ONE');
    const request = { study_instance_uid: '1.2.1', reason: 'why', requested_by: 'qa', priority: null, destination_id: null, case_id: null, created_at: now };
    await insertManualRequest(db, { id: 'r1', ...request });
    await insertManualRequest(db, { id: 'r2', ...request });
    await linkManualRequest(db, 'r1', 'c1');
    expect((await manualRequestsOfStudies(db, ['1.2.1'])).map((r) => [r.id, r.case_id])).to.deep.equal([
      ['r1', 'c1'],
      ['r2', null],
    ]);
  });

  it("the study's latest case that was not cancelled", async () => {
    await study('1.2.1', 'ONE');
    expect(await latestUncancelledCaseId(db, '1.2.1')).to.equal(undefined);
    await insertCase(db, aCase('c1', '1.2.1', CaseState.writtenBack));
    await insertCase(db, aCase('c2', '1.2.1', CaseState.cancelled));
    expect(await latestUncancelledCaseId(db, '1.2.1')).to.equal('c1');
    await insertCase(db, aCase('c3', '1.2.1', CaseState.awaitingRead));
    expect(await latestUncancelledCaseId(db, '1.2.1')).to.equal('c3');
    expect(await latestUncancelledCaseId(db, '1.2.2')).to.equal(undefined);
  });
});
