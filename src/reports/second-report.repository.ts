import type { Db } from '../db/database.js';
import { OutboundState } from '../states.js';
import type { SecondReportRow } from './report.table.js';

/** The study's latest final or corrected primary report, as received (raw HL7). */
export async function primaryReportOf(
  db: Db,
  studyInstanceUid: string,
): Promise<{ radiologist_id: string | null; patient_id: string | null; patient_id_authority: string | null; raw: string } | undefined> {
  return db
    .selectFrom('report_versions as r')
    .innerJoin('hl7_messages as m', 'm.id', 'r.message_id')
    .select(['r.radiologist_id', 'r.patient_id', 'r.patient_id_authority', 'm.raw'])
    .where('r.linked_study_uid', '=', studyInstanceUid)
    .where('r.link_state', '=', 'linked')
    .where('r.result_status', 'in', ['F', 'C'])
    .orderBy('r.id', 'desc')
    .executeTakeFirst();
}

export async function findSecondReport(db: Db, id: string): Promise<SecondReportRow | undefined> {
  return db.selectFrom('second_reports').selectAll().where('id', '=', id).executeTakeFirst();
}

/** The case's latest second report version number; 0 when it has none. */
export async function latestSecondReportVersion(db: Db, caseId: string): Promise<number> {
  const versions = await db.selectFrom('second_reports').select(['version']).where('case_id', '=', caseId).orderBy('version', 'desc').execute();
  return versions[0]?.version ?? 0;
}

export async function hasSecondReport(db: Db, caseId: string): Promise<boolean> {
  return (await db.selectFrom('second_reports').select('id').where('case_id', '=', caseId).executeTakeFirst()) !== undefined;
}

export async function insertSecondReport(db: Db, row: SecondReportRow): Promise<void> {
  await db.insertInto('second_reports').values(row).execute();
}

/** A write-back that cannot be built: failed at once, with why, rather than sent or left pending. */
export async function failWriteBack(db: Db, outboundId: string, problem: string): Promise<void> {
  await db.updateTable('outbound_messages').set({ state: OutboundState.failed, last_error: problem }).where('id', '=', outboundId).execute();
}

/** A study's patient, by StudyInstanceUID. */
export async function studyPatientByUid(db: Db, studyInstanceUid: string): Promise<{ study_instance_uid: string; patient_id: string | null } | undefined> {
  return db.selectFrom('studies').select(['study_instance_uid', 'patient_id']).where('study_instance_uid', '=', studyInstanceUid).executeTakeFirst();
}

/** Studies (and their patients) with this accession number: at most `limit`, enough to tell one from several. */
export async function studyPatientsByAccession(
  db: Db,
  accessionNumber: string,
  limit: number,
): Promise<{ study_instance_uid: string; patient_id: string | null }[]> {
  return db.selectFrom('studies').select(['study_instance_uid', 'patient_id']).where('accession_number', '=', accessionNumber).limit(limit).execute();
}
