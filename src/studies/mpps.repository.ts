import type { Db } from '../db/database.js';
import type { StepFacts } from './completeness.js';
import { StudyState } from '../states.js';
import { MppsStatus, type MppsInstanceTable, type MppsRow, type MppsTable } from './mpps.table.js';

export async function findMpps(db: Db, sopInstanceUid: string): Promise<MppsRow | undefined> {
  return db.selectFrom('mpps').selectAll().where('sop_instance_uid', '=', sopInstanceUid).executeTakeFirst();
}

export async function insertMpps(db: Db, row: MppsTable): Promise<void> {
  await db.insertInto('mpps').values(row).execute();
}

export async function updateMpps(db: Db, sopInstanceUid: string, set: Partial<MppsTable>): Promise<void> {
  await db.updateTable('mpps').set(set).where('sop_instance_uid', '=', sopInstanceUid).execute();
}

/** Replaces the instances a step lists (each N-SET carrying a Performed Series Sequence gives the whole list). */
export async function replaceMppsInstances(db: Db, mppsUid: string, rows: MppsInstanceTable[]): Promise<void> {
  await db.deleteFrom('mpps_instances').where('mpps_uid', '=', mppsUid).execute();
  for (let i = 0; i < rows.length; i += 200)
    await db
      .insertInto('mpps_instances')
      .values(rows.slice(i, i + 200))
      .execute();
}

export async function mppsOfStudy(db: Db, studyInstanceUid: string): Promise<MppsRow[]> {
  return db.selectFrom('mpps').selectAll().where('study_instance_uid', '=', studyInstanceUid).orderBy('created_at').execute();
}

/** Whether any step of the study is COMPLETED: the cheap question asked on every stored instance. */
export async function hasCompletedMpps(db: Db, studyInstanceUid: string): Promise<boolean> {
  const row = await db
    .selectFrom('mpps')
    .select('sop_instance_uid')
    .where('study_instance_uid', '=', studyInstanceUid)
    .where('status', '=', 'COMPLETED')
    .executeTakeFirst();
  return row !== undefined;
}

/** The steps of a study with what they list, and the study's current instances. */
export async function completenessInputs(
  db: Db,
  studyInstanceUid: string,
): Promise<{ steps: (StepFacts & { sopInstanceUid: string })[]; arrived: Set<string> }> {
  const steps = await mppsOfStudy(db, studyInstanceUid);
  const listed = steps.length
    ? await db
        .selectFrom('mpps_instances')
        .select(['mpps_uid', 'sop_instance_uid'])
        .where(
          'mpps_uid',
          'in',
          steps.map((s) => s.sop_instance_uid),
        )
        .execute()
    : [];
  const arrived = steps.length
    ? new Set(
        (await db.selectFrom('instances').select('sop_instance_uid').where('study_instance_uid', '=', studyInstanceUid).execute()).map(
          (r) => r.sop_instance_uid,
        ),
      )
    : new Set<string>();
  return {
    steps: steps.map((s) => ({
      sopInstanceUid: s.sop_instance_uid,
      status: s.status,
      referenced: listed.filter((l) => l.mpps_uid === s.sop_instance_uid).map((l) => l.sop_instance_uid),
    })),
    arrived,
  };
}

/** Receiving studies past the quiet period that a COMPLETED step lists instances for: the ones to check before they turn stable. */
export async function quietStudiesWithCompletedMpps(db: Db, cutoff: string): Promise<string[]> {
  const rows = await db
    .selectFrom('studies')
    .select('study_instance_uid')
    .where('state', '=', StudyState.receiving)
    .where('last_received_at', '<=', cutoff)
    .where(
      'study_instance_uid',
      'in',
      db
        .selectFrom('mpps')
        .select('study_instance_uid')
        .where('status', '=', MppsStatus.completed)
        .where('study_instance_uid', 'is not', null)
        .$narrowType<{ study_instance_uid: string }>(),
    )
    .execute();
  return rows.map((r) => r.study_instance_uid);
}

/** Receiving -> held `incomplete` (compare-and-set); a release goes on to stable. True when this call held it. */
export async function holdIncomplete(db: Db, studyInstanceUid: string, detail: string, now: string): Promise<boolean> {
  const r = await db
    .updateTable('studies')
    .set({ state: StudyState.held, hold_reason: HoldReasonIncomplete, hold_detail: detail, held_at: now, held_from_state: StudyState.stable, updated_at: now })
    .where('study_instance_uid', '=', studyInstanceUid)
    .where('state', '=', StudyState.receiving)
    .executeTakeFirst();
  return Number(r.numUpdatedRows) > 0;
}

/**
 * Stable now, before the quiet period, because what the modality listed is all here: from receiving, or from
 * a hold `incomplete` that the missing instances ended. Compare-and-set: true when this call changed it.
 */
export async function completeNow(db: Db, studyInstanceUid: string, now: string): Promise<'receiving' | 'held' | undefined> {
  const fromReceiving = await db
    .updateTable('studies')
    .set({ state: StudyState.stable, stable_at: now, updated_at: now })
    .where('study_instance_uid', '=', studyInstanceUid)
    .where('state', '=', StudyState.receiving)
    .executeTakeFirst();
  if (Number(fromReceiving.numUpdatedRows) > 0) return 'receiving';
  const fromHold = await db
    .updateTable('studies')
    .set({ state: StudyState.stable, stable_at: now, hold_reason: null, hold_detail: null, held_at: null, held_from_state: null, updated_at: now })
    .where('study_instance_uid', '=', studyInstanceUid)
    .where('state', '=', StudyState.held)
    .where('hold_reason', '=', HoldReasonIncomplete)
    .executeTakeFirst();
  return Number(fromHold.numUpdatedRows) > 0 ? 'held' : undefined;
}

export const HoldReasonIncomplete = 'incomplete';
