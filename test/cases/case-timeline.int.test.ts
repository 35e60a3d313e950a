import { expect } from 'chai';
import { recordAudit } from '../../src/audit/audit.repository.js';
import { caseTimeline } from '../../src/cases/case-timeline.js';
import { insertCase } from '../../src/cases/case.repository.js';
import type { CaseRow } from '../../src/cases/case.table.js';
import type { Db } from '../../src/db/database.js';
import { insertAiResults, insertMessage, insertOrder } from '../../src/hl7/hl7.repository.js';
import { CaseState, LinkState, MessageStatus } from '../../src/states.js';
import { insertInstance } from '../../src/studies/study.repository.js';
import { openTempDatabase, testPostgresUrl } from '../helpers/tmp.js';

// The end-to-end timeline test (test/http/console-api.int.test.ts) has no AI result and does not look for the
// order: here each source row is written directly, and only what is linked to the case's study tells its story.
describe(`case timeline: the rows it is told from (${testPostgresUrl ? 'PostgreSQL' : 'SQLite'})`, () => {
  let t: Awaited<ReturnType<typeof openTempDatabase>>;
  let db: Db;
  const t0 = '2026-03-01T10:00:00.000Z';
  const t1 = '2026-03-01T10:05:00.000Z';
  const t2 = '2026-03-01T10:10:00.000Z';
  const t3 = '2026-03-01T10:15:00.000Z';

  beforeEach(async () => {
    t = await openTempDatabase();
    db = t.opened.db;
  });
  afterEach(async () => t.close());

  const linkable = (studyUid: string, state: LinkState) => ({
    accession_number: 'ACC1',
    study_instance_uid: null,
    placer_order_number: null,
    filler_order_number: null,
    patient_id: 'MRN1',
    patient_id_authority: null,
    patient_identifiers: null,
    link_state: state,
    linked_study_uid: state === LinkState.linked ? studyUid : null,
    hold_reason: null,
  });

  async function message(id: string, kind: string, at: string): Promise<void> {
    await insertMessage(db, {
      id,
      sender_application: 'RIS',
      sender_facility: 'HOSP',
      control_id: id,
      message_type: kind === 'order' ? 'ORM^O01' : 'ORU^R01',
      kind,
      hl7_version: '2.5',
      status: MessageStatus.applied,
      reason: null,
      ack_code: 'AA',
      study_instance_uid: null,
      accession_number: 'ACC1',
      remote_address: null,
      raw: 'MSH|^~\\&|RIS',
      reuse_of: null,
      received_at: at,
      updated_at: at,
    });
  }

  it('tells received, order, AI result and audit events of the case, in time order, and nothing of another study', async () => {
    const uid = '1.2.840.99.1';
    await insertInstance(
      db,
      {
        sopClassUid: '1.2.840.10008.5.1.4.1.1.2',
        sopInstanceUid: `${uid}.1.1`,
        transferSyntaxUid: '1.2.840.10008.1.2.1',
        studyInstanceUid: uid,
        seriesInstanceUid: `${uid}.1`,
        accessionNumber: 'ACC1',
        patientId: 'MRN1',
        modality: 'CT',
        studyDescription: null,
        seriesDescription: null,
        bodyPartExamined: null,
        studyDate: null,
        referringPhysicianName: null,
        seriesNumber: 1,
        instanceNumber: 1,
        filePath: 'x/1.dcm',
        sizeBytes: 10,
        sha256: 'ab',
        callingAe: null,
      },
      t0,
    );
    await message('m-order', 'order', t1);
    await message('m-ai', 'ai-result', t2);
    const order = {
      message_id: 'm-order',
      sender_application: 'RIS',
      order_control: 'NW',
      order_status: null,
      procedure_code: 'CTCHEST',
      procedure_text: null,
      modality: 'CT',
      priority: null,
      reason_for_study: '[]',
      relevant_clinical_info: null,
      diagnoses: '[]',
      referring_physician_id: null,
      referring_physician_name: null,
      second_opinion_requested: 0,
      cancelled_at: null,
      created_at: t1,
      updated_at: t1,
    };
    await insertOrder(db, { id: 'o-linked', ...linkable(uid, LinkState.linked), ...order });
    await insertOrder(db, { id: 'o-other', ...linkable('1.2.840.99.2', LinkState.linked), ...order, procedure_code: 'OTHER' });
    const ai = {
      message_id: 'm-ai',
      sender_application: 'AI',
      finding_code: 'RID3875',
      finding_system: null,
      value_text: null,
      abnormal_flags: 'A',
      result_status: 'F',
      observed_at: null,
      received_at: t2,
      updated_at: t2,
    };
    await insertAiResults(db, [
      { id: 'ai-linked', ...linkable(uid, LinkState.linked), ...ai, finding_text: 'Lung nodule', positive: 1 },
      { id: 'ai-pending', ...linkable(uid, LinkState.pending), ...ai, finding_text: 'Not linked yet', positive: 1 },
    ]);
    const c: CaseRow = {
      id: 'c1',
      study_instance_uid: uid,
      accession_number: 'ACC1',
      state: CaseState.flagged,
      priority: 'routine',
      sla_hours: 24,
      due_at: t3,
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
      created_at: t3,
      updated_at: t3,
    };
    await insertCase(db, c);
    await recordAudit(db, 'a1', t3, { actor: 'qa', action: 'case.flagged', entityType: 'case', entityId: 'c1', details: { why: 'test' } });
    await recordAudit(db, 'a2', t3, { actor: 'qa', action: 'case.flagged', entityType: 'case', entityId: 'c2' });

    const ev = await caseTimeline(db, c);
    expect(ev.map((e) => [e.at, e.kind, e.title])).to.deep.equal([
      [t0, 'received', 'first instance received'],
      [t1, 'order', 'order NW linked'],
      [t2, 'ai-result', 'AI result: Lung nodule positive'],
      [t3, 'audit', 'case.flagged'],
    ]);
    expect(ev[1]!.details).to.deep.equal({ procedureCode: 'CTCHEST' });
    expect(ev[3]).to.deep.include({ actor: 'qa', details: { why: 'test' } });
  });
});
