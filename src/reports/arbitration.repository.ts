import type { Db } from '../db/database.js';
import { ArbitrationState, type CaseArbitrationRow, type CaseArbitrationTable } from './arbitration.table.js';

/** The case's latest arbitration, whatever its state. */
export async function latestArbitration(db: Db, caseId: string): Promise<CaseArbitrationRow | undefined> {
  return db.selectFrom('case_arbitrations').selectAll().where('case_id', '=', caseId).orderBy('created_at', 'desc').orderBy('id', 'desc').executeTakeFirst();
}

export async function arbitrationsOfCases(db: Db, caseIds: readonly string[]): Promise<CaseArbitrationRow[]> {
  if (caseIds.length === 0) return [];
  return db.selectFrom('case_arbitrations').selectAll().where('case_id', 'in', caseIds).orderBy('created_at').orderBy('id').execute();
}

export async function insertArbitration(db: Db, row: CaseArbitrationTable): Promise<void> {
  await db.insertInto('case_arbitrations').values(row).execute();
}

/** Compare-and-set on the arbitration's state, as transitionCase does for the case. */
export async function updateArbitration(
  db: Db,
  id: string,
  expected: readonly ArbitrationState[],
  set: Partial<Omit<CaseArbitrationTable, 'id' | 'case_id'>>,
): Promise<boolean> {
  const r = await db.updateTable('case_arbitrations').set(set).where('id', '=', id).where('state', 'in', expected).executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

/** Arbitrations for a list: a reader's own (open ones by default), or all of a state. */
export async function listArbitrations(
  db: Db,
  f: { arbitratorId?: string; states?: readonly ArbitrationState[]; limit: number },
): Promise<(CaseArbitrationRow & { case_state: string })[]> {
  let q = db.selectFrom('case_arbitrations as a').innerJoin('cases as c', 'c.id', 'a.case_id').selectAll('a').select('c.state as case_state');
  if (f.arbitratorId) q = q.where('a.arbitrator_id', '=', f.arbitratorId);
  if (f.states && f.states.length > 0) q = q.where('a.state', 'in', f.states);
  return q.orderBy('a.created_at', 'desc').orderBy('a.id', 'desc').limit(f.limit).execute();
}

/** The rule set a case was opened under (its rules' `arbitration` options). */
export async function rulesJsonOfVersion(db: Db, version: number): Promise<string | undefined> {
  return (await db.selectFrom('rule_sets').select('rules_json').where('version', '=', version).executeTakeFirst())?.rules_json;
}

/** The study's latest final or corrected primary report's radiologist (the first reader). */
export async function firstReaderOf(db: Db, studyInstanceUid: string): Promise<string | null> {
  const r = await db
    .selectFrom('report_versions')
    .select('radiologist_id')
    .where('linked_study_uid', '=', studyInstanceUid)
    .where('link_state', '=', 'linked')
    .where('result_status', 'in', ['F', 'C'])
    .orderBy('id', 'desc')
    .executeTakeFirst();
  return r?.radiologist_id ?? null;
}

export async function secondReportText(db: Db, reportId: string): Promise<{ text: string; impression: string | null } | undefined> {
  return db.selectFrom('second_reports').select(['text', 'impression']).where('id', '=', reportId).executeTakeFirst();
}

/** Who wrote a second report (the second reader). */
export async function secondReportReaderId(db: Db, reportId: string): Promise<string | undefined> {
  return (await db.selectFrom('second_reports').select('reader_id').where('id', '=', reportId).executeTakeFirst())?.reader_id;
}

/** The text of the study's latest final or corrected primary report. */
export async function primaryReportText(db: Db, studyInstanceUid: string): Promise<string | undefined> {
  const r = await db
    .selectFrom('report_versions')
    .select('report_text')
    .where('linked_study_uid', '=', studyInstanceUid)
    .where('link_state', '=', 'linked')
    .where('result_status', 'in', ['F', 'C'])
    .orderBy('id', 'desc')
    .executeTakeFirst();
  return r?.report_text;
}
