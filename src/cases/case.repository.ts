import { sql } from 'kysely';
import type { Db } from '../db/database.js';
import { CaseState, OPEN_CASE_STATES } from '../states.js';
import type { Reason } from '../rules/rule.types.js';
import type { CaseRow, ManualRequestRow } from './case.table.js';

export async function findOpenCase(db: Db, studyInstanceUid: string): Promise<CaseRow | undefined> {
  return db
    .selectFrom('cases')
    .selectAll()
    .where('study_instance_uid', '=', studyInstanceUid)
    .where('state', 'in', OPEN_CASE_STATES)
    .orderBy('id', 'desc')
    .limit(1)
    .executeTakeFirst();
}

export async function findCase(db: Db, id: string): Promise<CaseRow | undefined> {
  return db.selectFrom('cases').selectAll().where('id', '=', id).executeTakeFirst();
}

export async function insertCase(db: Db, row: CaseRow): Promise<void> {
  await db.insertInto('cases').values(row).execute();
}

export async function updateCase(
  db: Db,
  id: string,
  set: Partial<Pick<CaseRow, 'reasons' | 'priority' | 'sla_hours' | 'due_at' | 'state' | 'updated_at' | 'reader_id' | 'rule_set_version' | 'destination_id'>>,
): Promise<void> {
  await db.updateTable('cases').set(set).where('id', '=', id).execute();
}

/** Marks the case as having had a discrepant second read (RADPEER 2b, 3a, 3b). */
export async function markCaseDiscrepant(db: Db, id: string): Promise<void> {
  await db.updateTable('cases').set({ discrepant: 1 }).where('id', '=', id).execute();
}

/** The id of the study's latest case that was not cancelled. */
export async function latestUncancelledCaseId(db: Db, studyInstanceUid: string): Promise<string | undefined> {
  const c = await db
    .selectFrom('cases')
    .select(['id'])
    .where('study_instance_uid', '=', studyInstanceUid)
    .where('state', '!=', CaseState.cancelled)
    .orderBy('id', 'desc')
    .executeTakeFirst();
  return c?.id;
}

/** The case's state; undefined when there is no such case. */
export async function caseState(db: Db, id: string): Promise<CaseState | undefined> {
  return (await db.selectFrom('cases').select('state').where('id', '=', id).executeTakeFirst())?.state;
}

/** Compare-and-set: moves the case to `to` only while it is still in `from`. False: it had moved on (nothing written). */
export async function compareAndSetState(db: Db, id: string, from: CaseState, to: CaseState, now: string): Promise<boolean> {
  const r = await db.updateTable('cases').set({ state: to, updated_at: now }).where('id', '=', id).where('state', '=', from).executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

export interface CaseFilter {
  state?: CaseState;
  readerId?: string;
  studyInstanceUid?: string;
  ruleId?: string;
  priority?: string;
  modality?: string;
  /** Due strictly before this time (ISO). */
  dueBefore?: string;
  limit: number;
  offset: number;
}

export async function listCases(db: Db, f: CaseFilter): Promise<CaseRow[]> {
  let q = db.selectFrom('cases').selectAll();
  if (f.state) q = q.where('state', '=', f.state);
  if (f.readerId) q = q.where('reader_id', '=', f.readerId);
  if (f.studyInstanceUid) q = q.where('study_instance_uid', '=', f.studyInstanceUid);
  if (f.priority) q = q.where('priority', '=', f.priority);
  if (f.dueBefore) q = q.where('due_at', '<', f.dueBefore);
  if (f.ruleId) {
    // reasons is JSON text; LIKE with an escape clause works the same in SQLite and PostgreSQL.
    const pattern = `%${JSON.stringify({ ruleId: f.ruleId })
      .slice(1, -1)
      .replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
    q = q.where(sql<boolean>`reasons like ${pattern} escape '\\'`);
  }
  if (f.modality) {
    const modality = f.modality;
    q = q.where(({ exists, selectFrom }) =>
      exists(
        selectFrom('series')
          .select('series.series_instance_uid')
          .whereRef('series.study_instance_uid', '=', 'cases.study_instance_uid')
          .where('series.modality', '=', modality),
      ),
    );
  }
  return q.orderBy('id', 'desc').limit(f.limit).offset(f.offset).execute();
}

export async function latestCaseOfStudy(db: Db, studyInstanceUid: string): Promise<CaseRow | undefined> {
  return db.selectFrom('cases').selectAll().where('study_instance_uid', '=', studyInstanceUid).orderBy('id', 'desc').limit(1).executeTakeFirst();
}

export async function insertManualRequest(db: Db, row: ManualRequestRow): Promise<void> {
  await db.insertInto('manual_requests').values(row).execute();
}

/** Links a manual request to the case it opened or joined. */
export async function linkManualRequest(db: Db, requestId: string, caseId: string): Promise<void> {
  await db.updateTable('manual_requests').set({ case_id: caseId }).where('id', '=', requestId).execute();
}

/** Whether a study with this StudyInstanceUID has been received (its UID as stored). */
export async function receivedStudyUid(db: Db, studyInstanceUid: string): Promise<string | undefined> {
  return (await db.selectFrom('studies').select('study_instance_uid').where('study_instance_uid', '=', studyInstanceUid).executeTakeFirst())
    ?.study_instance_uid;
}

/** The received studies with this accession number: at most `limit`, enough to tell one from several. */
export async function receivedStudyUidsByAccession(db: Db, accessionNumber: string, limit: number): Promise<string[]> {
  return (await db.selectFrom('studies').select('study_instance_uid').where('accession_number', '=', accessionNumber).limit(limit).execute()).map(
    (s) => s.study_instance_uid,
  );
}

export async function manualRequestsOfStudies(db: Db, studyUids: readonly string[]): Promise<ManualRequestRow[]> {
  if (studyUids.length === 0) return [];
  return db.selectFrom('manual_requests').selectAll().where('study_instance_uid', 'in', studyUids).orderBy('id').execute();
}

export function caseReasons(row: Pick<CaseRow, 'reasons'>): Reason[] {
  return JSON.parse(row.reasons) as Reason[];
}
