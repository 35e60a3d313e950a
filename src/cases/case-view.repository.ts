import type { Db } from '../db/database.js';
import type { OutboundMessageRow, SecondReportRow } from '../reports/report.table.js';
import { OutboundKind } from '../states.js';

/** What the API shows of cases besides their rows: reports, write-backs, the study's identifiers and pseudonyms. */

/** Every second report (and addendum) of the cases, oldest version first. */
export async function secondReportsOfCases(db: Db, caseIds: readonly string[]): Promise<SecondReportRow[]> {
  if (caseIds.length === 0) return [];
  return db.selectFrom('second_reports').selectAll().where('case_id', 'in', caseIds).orderBy('version').execute();
}

/** The write-back messages of the cases, oldest first. */
export async function writeBacksOfCases(db: Db, caseIds: readonly string[]): Promise<OutboundMessageRow[]> {
  if (caseIds.length === 0) return [];
  return db
    .selectFrom('outbound_messages')
    .selectAll()
    .where('case_id', 'in', caseIds)
    .where('kind', '=', OutboundKind.writeBack)
    .orderBy('created_at')
    .execute();
}

export async function hasSecondReportBy(db: Db, caseId: string, readerId: string): Promise<boolean> {
  const row = await db.selectFrom('second_reports').select('id').where('case_id', '=', caseId).where('reader_id', '=', readerId).executeTakeFirst();
  return row !== undefined;
}

/** The study's patient id and accession number as stored (for the reader view's pseudonyms). */
export async function studyIdentifiers(db: Db, studyInstanceUid: string): Promise<{ patient_id: string | null; accession_number: string | null } | undefined> {
  return db.selectFrom('studies').select(['patient_id', 'accession_number']).where('study_instance_uid', '=', studyInstanceUid).executeTakeFirst();
}

/** The stored pseudonym of one original identifier for one destination, or null. */
export async function storedPseudonym(db: Db, destinationId: string, kind: string, original: string): Promise<string | null> {
  const p = await db
    .selectFrom('pseudonyms')
    .select('pseudonym')
    .where('destination_id', '=', destinationId)
    .where('kind', '=', kind)
    .where('original', '=', original)
    .executeTakeFirst();
  return p?.pseudonym ?? null;
}
