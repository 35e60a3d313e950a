import type { Db } from '../db/database.js';
import { dbNow, forUpdate } from '../db/dialect.js';
import { activeKeysOf } from '../jobs/job.repository.js';
import { StudyState } from '../states.js';
import type { StudyRow } from './study.table.js';

/**
 * The study's row for its stability job, locked for the rest of the transaction
 * (PostgreSQL; SQLite's transaction is the only writer), with the database's
 * clock read in the same statement: a late instance committing meanwhile is
 * either seen here or re-opens the study after this transaction.
 */
export async function lockForStability(
  trx: Db,
  studyInstanceUid: string,
): Promise<(Pick<StudyRow, 'state' | 'last_received_at' | 'instance_count'> & { db_now: string }) | undefined> {
  return forUpdate(
    trx,
    trx
      .selectFrom('studies')
      .select(['state', 'last_received_at', 'instance_count', dbNow(trx).as('db_now')])
      .where('study_instance_uid', '=', studyInstanceUid),
  ).executeTakeFirst();
}

/** Marks one receiving study stable; false when it was not receiving. */
export async function markOneStable(trx: Db, studyInstanceUid: string, now: string): Promise<boolean> {
  const r = await trx
    .updateTable('studies')
    .set({ state: StudyState.stable, stable_at: now, updated_at: now })
    .where('study_instance_uid', '=', studyInstanceUid)
    .where('state', '=', StudyState.receiving)
    .executeTakeFirst();
  return Number(r.numUpdatedRows) > 0;
}

/** Studies still receiving with no unfinished stability job (rows written before stability was a job). */
export async function receivingWithoutStabilityJob(db: Db, kind: string): Promise<Pick<StudyRow, 'study_instance_uid' | 'last_received_at'>[]> {
  return db
    .selectFrom('studies')
    .select(['study_instance_uid', 'last_received_at'])
    .where('state', '=', StudyState.receiving)
    .where('study_instance_uid', 'not in', activeKeysOf(db, kind).$narrowType<{ active_key: string }>())
    .orderBy('study_instance_uid')
    .execute();
}
