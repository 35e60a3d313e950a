import type { CaseRow } from '../cases/case.table.js';
import type { Db } from '../db/database.js';
import { forClaim } from '../db/dialect.js';
import type { CaseState } from '../states.js';

/** Readers who have had the case, whether their assignment ended or not (a reassignment skips them). */
export async function readersOfCase(db: Db, caseId: string): Promise<string[]> {
  return (await db.selectFrom('case_assignments').select('reader_id').where('case_id', '=', caseId).execute()).map((a) => a.reader_id);
}

/** The modality of every series of the study (null where a series has none). */
export async function seriesModalities(db: Db, studyInstanceUid: string): Promise<(string | null)[]> {
  return (await db.selectFrom('series').select('modality').where('study_instance_uid', '=', studyInstanceUid).execute()).map((s) => s.modality);
}

/**
 * The radiologist of the study's latest final or corrected primary report
 * (the first reader), whatever its link state; undefined when there is none.
 */
export async function latestFinalReportRadiologist(db: Db, studyInstanceUid: string): Promise<string | null | undefined> {
  const r = await db
    .selectFrom('report_versions')
    .select('radiologist_id')
    .where('linked_study_uid', '=', studyInstanceUid)
    .where('result_status', 'in', ['F', 'C'])
    .orderBy('id', 'desc')
    .executeTakeFirst();
  return r?.radiologist_id;
}

/** Ends the case's current assignment (if any), saying why. */
export async function endOpenAssignments(db: Db, caseId: string, now: string, endReason: string): Promise<void> {
  await db.updateTable('case_assignments').set({ ended_at: now, end_reason: endReason }).where('case_id', '=', caseId).where('ended_at', 'is', null).execute();
}

/** Records a new, open assignment of the case to a reader. */
export async function insertAssignment(
  db: Db,
  a: { id: string; caseId: string; readerId: string; assignedBy: string; reason: string; assignedAt: string },
): Promise<void> {
  await db
    .insertInto('case_assignments')
    .values({
      id: a.id,
      case_id: a.caseId,
      reader_id: a.readerId,
      assigned_by: a.assignedBy,
      reason: a.reason,
      assigned_at: a.assignedAt,
      ended_at: null,
      end_reason: null,
    })
    .execute();
}

/** How many cases in `states` each reader has (readers with none are absent). */
export async function caseCountsByReader(db: Db, states: readonly CaseState[]): Promise<Map<string | null, number>> {
  const counts = await db
    .selectFrom('cases')
    .select(['reader_id', (eb) => eb.fn.countAll<number>().as('n')])
    .where('state', 'in', states)
    .where('reader_id', 'is not', null)
    .groupBy('reader_id')
    .execute();
  return new Map(counts.map((c) => [c.reader_id, Number(c.n)]));
}

/** How many open arbitrations each arbitrator has. */
export async function openArbitrationsByArbitrator(db: Db): Promise<Map<string | null, number>> {
  const open = await db
    .selectFrom('case_arbitrations')
    .select(['arbitrator_id', (eb) => eb.fn.countAll<number>().as('n')])
    .where('state', '=', 'open')
    .where('arbitrator_id', 'is not', null)
    .groupBy('arbitrator_id')
    .execute();
  return new Map(open.map((a) => [a.arbitrator_id, Number(a.n)]));
}

/** Cases in `states` due before `now` and not yet escalated to the last level (2). */
export async function casesPastDue(db: Db, states: readonly CaseState[], now: string): Promise<CaseRow[]> {
  return db.selectFrom('cases').selectAll().where('state', 'in', states).where('due_at', '<', now).where('escalation_level', '<', 2).execute();
}

/**
 * The claim on one breached case (inside the caller's transaction): true when
 * it is still in `states`, past due at `now` and at the escalation level read
 * earlier. On PostgreSQL the row stays locked for the transaction, and a row
 * another instance is escalating right now is skipped, not waited for.
 */
export async function claimBreachedCase(trx: Db, caseId: string, states: readonly CaseState[], now: string, escalationLevel: number): Promise<boolean> {
  const still = await forClaim(
    trx,
    trx
      .selectFrom('cases')
      .select('id')
      .where('id', '=', caseId)
      .where('state', 'in', states)
      .where('due_at', '<', now)
      .where('escalation_level', '=', escalationLevel),
  ).executeTakeFirst();
  return still !== undefined;
}

/** The case's SLA escalation: its level, when it first breached, and (on a reassignment) a new due time. */
export async function setEscalation(
  db: Db,
  caseId: string,
  set: { escalationLevel: number; slaBreachedAt: string; dueAt?: string; now: string },
): Promise<void> {
  await db
    .updateTable('cases')
    .set({
      escalation_level: set.escalationLevel,
      sla_breached_at: set.slaBreachedAt,
      ...(set.dueAt !== undefined ? { due_at: set.dueAt } : {}),
      updated_at: set.now,
    })
    .where('id', '=', caseId)
    .execute();
}
