import { sql } from 'kysely';
import type { Db } from '../db/database.js';
import { forUpdate } from '../db/dialect.js';
import { param, precompiled } from '../db/precompiled.js';
import { CaseState, DeliveryInstanceState, DeliveryState, StudyState } from '../states.js';
import type { DeliveryInstanceRow, DeliveryRow } from './delivery.table.js';

export interface NewDelivery {
  id: string;
  caseId: string;
  destinationId: string;
  studyInstanceUid: string;
  deidentify: boolean;
  now: string;
}

/** What one planning job looks at: one case, or the cases and deliveries of one study; everything when absent (start-up). */
export interface PlanScope {
  caseId?: string;
  studyUid?: string;
}

/** Flagged cases whose study is stable and that have no delivery yet: the next work to plan. */
export async function casesReadyToForward(db: Db, scope: PlanScope = {}) {
  let q = db
    .selectFrom('cases as c')
    .innerJoin('studies as s', 's.study_instance_uid', 'c.study_instance_uid')
    .select(['c.id', 'c.study_instance_uid', 'c.destination_id', 'c.deidentify', 'c.reader_group'])
    .where('c.state', '=', CaseState.flagged)
    .where('s.state', '=', StudyState.stable)
    .where('c.destination_id', 'is not', null)
    .where(({ not, exists, selectFrom }) => not(exists(selectFrom('deliveries as d').select('d.id').whereRef('d.case_id', '=', 'c.id'))));
  if (scope.caseId !== undefined) q = q.where('c.id', '=', scope.caseId);
  if (scope.studyUid !== undefined) q = q.where('c.study_instance_uid', '=', scope.studyUid);
  return q.orderBy('c.id').execute();
}

/** Creates the delivery with every instance of the study pending. Run in a transaction. */
export async function insertDelivery(db: Db, d: NewDelivery): Promise<number> {
  await db
    .insertInto('deliveries')
    .values({
      id: d.id,
      case_id: d.caseId,
      destination_id: d.destinationId,
      study_instance_uid: d.studyInstanceUid,
      state: DeliveryState.pending,
      deidentify: d.deidentify ? 1 : 0,
      attempts: 0,
      next_attempt_at: d.now,
      instances_total: 0,
      instances_sent: 0,
      created_at: d.now,
      updated_at: d.now,
    })
    .execute();
  return addMissingInstances(db, d.id, d.studyInstanceUid);
}

/** Adds instances of the study the delivery does not list yet (the first plan, or late instances: a delta). */
export async function addMissingInstances(db: Db, deliveryId: string, studyInstanceUid: string): Promise<number> {
  const result = await db
    .insertInto('delivery_instances')
    .columns(['delivery_id', 'sop_instance_uid', 'state'])
    .expression((eb) =>
      eb
        .selectFrom('instances as i')
        // The id is a bound parameter, not a literal: inlined, every delivery had its own SQL text, prepared
        // anew and filling database.ts's statement cache with one-off statements (native memory) that pushed
        // the hot ones out. The cast gives PostgreSQL the parameter's type, which it cannot infer from a select list.
        .select([sql<string>`cast(${deliveryId} as varchar(40))`.as('delivery_id'), 'i.sop_instance_uid', sql.lit(DeliveryInstanceState.pending).as('state')])
        .where('i.study_instance_uid', '=', studyInstanceUid)
        .where(({ not, exists, selectFrom }) =>
          not(
            exists(
              selectFrom('delivery_instances as x')
                .select('x.sop_instance_uid')
                .where('x.delivery_id', '=', deliveryId)
                .whereRef('x.sop_instance_uid', '=', 'i.sop_instance_uid'),
            ),
          ),
        ),
    )
    .executeTakeFirst();
  const added = Number(result.numInsertedOrUpdatedRows ?? 0n);
  if (added > 0) {
    await db
      .updateTable('deliveries')
      .set((eb) => ({ instances_total: eb('instances_total', '+', added) }))
      .where('id', '=', deliveryId)
      .execute();
  }
  return added;
}

/** Deliveries of open cases whose stable study now has instances they do not list: late instances to send as a delta. */
export async function deliveriesNeedingDelta(
  db: Db,
  studyUid?: string,
): Promise<Pick<DeliveryRow, 'id' | 'study_instance_uid' | 'state' | 'destination_id'>[]> {
  let q = db
    .selectFrom('deliveries as d')
    .innerJoin('studies as s', 's.study_instance_uid', 'd.study_instance_uid')
    .select(['d.id', 'd.study_instance_uid', 'd.state', 'd.destination_id'])
    // A cancelled case takes no delta, even where its delivery had completed.
    .innerJoin('cases as c', 'c.id', 'd.case_id')
    .where('c.state', '!=', CaseState.cancelled)
    .where('s.state', '=', StudyState.stable)
    .where('d.state', 'in', [DeliveryState.delivered, DeliveryState.pending, DeliveryState.sending])
    .where(({ eb, selectFrom }) =>
      eb(
        selectFrom('instances as i')
          .select((e) => e.fn.countAll<number>().as('n'))
          .whereRef('i.study_instance_uid', '=', 'd.study_instance_uid'),
        '>',
        eb.ref('d.instances_total'),
      ),
    );
  if (studyUid !== undefined) q = q.where('d.study_instance_uid', '=', studyUid);
  return q.orderBy('d.id').execute();
}

/**
 * Why a delivery being sent must stop before its next instance: its case was
 * cancelled (the delivery is `cancelled`), or its study was held. Read by the
 * sender between instances and batches.
 */
// Run before every instance a delivery sends: built and compiled once, then only bound.
const stopQuery = precompiled<{ id: string }, { delivery: string; study: string | null }>((db) =>
  db
    .selectFrom('deliveries as d')
    .leftJoin('studies as s', 's.study_instance_uid', 'd.study_instance_uid')
    .select(['d.state as delivery', 's.state as study'])
    .where('d.id', '=', param('id')),
);

export async function deliveryStop(db: Db, deliveryId: string): Promise<'cancelled' | 'held' | undefined> {
  const row = (await stopQuery(db, { id: deliveryId })).rows[0];
  return stopReason(row?.delivery, row?.study ?? null);
}

function stopReason(delivery: string | undefined, study: string | null): 'cancelled' | 'held' | undefined {
  if (delivery === undefined || delivery === DeliveryState.cancelled) return 'cancelled';
  if (study === StudyState.held) return 'held';
  return undefined;
}

/** A delivery and, in the same read, what would stop it now (deliveryStop). */
export async function deliveryWithStop(db: Db, id: string): Promise<{ delivery: DeliveryRow; stop: 'cancelled' | 'held' | undefined } | undefined> {
  const row = await db
    .selectFrom('deliveries as d')
    .leftJoin('studies as s', 's.study_instance_uid', 'd.study_instance_uid')
    .selectAll('d')
    .select('s.state as study_state')
    .where('d.id', '=', id)
    .executeTakeFirst();
  if (!row) return undefined;
  const { study_state, ...delivery } = row;
  return { delivery, stop: stopReason(delivery.state, study_state) };
}

/** A delivery stopped mid-send because its study was held: due again (from what is missing) once the study is released. */
export async function parkDelivery(db: Db, deliveryId: string, now: string): Promise<void> {
  await db
    .updateTable('deliveries')
    .set({ state: DeliveryState.pending, next_attempt_at: now, updated_at: now })
    .where('id', '=', deliveryId)
    .where('state', 'in', [DeliveryState.sending, DeliveryState.pending])
    .execute();
}

/**
 * Deliveries waiting to be sent that have no job of `kind` (key: the delivery
 * id): parked while their study was held and now released, or from before the
 * job engine. A held study's deliveries wait. A dead job counts: a delivery whose
 * runs kept killing the process is not given a fresh one (a person retries it).
 */
export async function deliveriesWithoutJob(db: Db, kind: string, studyUid?: string): Promise<Pick<DeliveryRow, 'id' | 'destination_id'>[]> {
  let q = db
    .selectFrom('deliveries as d')
    .select(['d.id', 'd.destination_id'])
    .where('d.state', 'in', [DeliveryState.pending, DeliveryState.sending])
    // The hold gate: nothing of a study in state `held` (identity conflict, ...) is sent; its deliveries wait, unchanged.
    .where(({ not, exists, selectFrom }) =>
      not(
        exists(
          selectFrom('studies as hs')
            .select('hs.study_instance_uid')
            .whereRef('hs.study_instance_uid', '=', 'd.study_instance_uid')
            .where('hs.state', '=', StudyState.held),
        ),
      ),
    )
    .where(({ not, exists, selectFrom }) => not(exists(selectFrom('jobs as j').select('j.id').where('j.kind', '=', kind).whereRef('j.key', '=', 'd.id'))));
  if (studyUid !== undefined) q = q.where('d.study_instance_uid', '=', studyUid);
  return q.orderBy('d.id').execute();
}

export interface PendingInstance {
  sop_instance_uid: string;
  sop_class_uid: string;
  transfer_syntax_uid: string;
  file_path: string;
  /** 1 when a person released it from an exclusion (sent without the risk rules; still verified). */
  released: number;
}

/** What a delivery still has to send: neither sent nor kept back (excluded and not released). */
export async function pendingInstances(db: Db, deliveryId: string): Promise<PendingInstance[]> {
  return db
    .selectFrom('delivery_instances as x')
    .innerJoin('instances as i', 'i.sop_instance_uid', 'x.sop_instance_uid')
    .leftJoin('delivery_exclusions as e', (j) => j.onRef('e.delivery_id', '=', 'x.delivery_id').onRef('e.sop_instance_uid', '=', 'x.sop_instance_uid'))
    .select(['i.sop_instance_uid', 'i.sop_class_uid', 'i.transfer_syntax_uid', 'i.file_path'])
    .select((eb) => eb.case().when('e.released_at', 'is not', null).then(1).else(0).end().as('released'))
    .where('x.delivery_id', '=', deliveryId)
    .where('x.state', 'not in', [DeliveryInstanceState.sent, DeliveryInstanceState.excluded])
    .orderBy('i.series_instance_uid')
    .orderBy('i.instance_number')
    .orderBy('i.sop_instance_uid')
    .execute();
}

export async function markInstances(
  db: Db,
  deliveryId: string,
  uids: readonly string[],
  state: DeliveryInstanceRow['state'],
  now: string,
  error: string | null,
): Promise<void> {
  if (uids.length === 0) return;
  await db
    .updateTable('delivery_instances')
    .set({ state, error, sent_at: state === DeliveryInstanceState.sent ? now : null })
    .where('delivery_id', '=', deliveryId)
    .where('sop_instance_uid', 'in', uids)
    .execute();
  if (state === DeliveryInstanceState.sent) {
    await db
      .updateTable('deliveries')
      .set((eb) => ({
        instances_sent: eb
          .selectFrom('delivery_instances')
          .select((e) => e.fn.countAll<number>().as('n'))
          .where('delivery_id', '=', deliveryId)
          .where('state', '=', DeliveryInstanceState.sent),
        updated_at: now,
      }))
      .where('id', '=', deliveryId)
      .execute();
  }
}

export async function updateDelivery(
  db: Db,
  id: string,
  set: Partial<Pick<DeliveryRow, 'state' | 'attempts' | 'next_attempt_at' | 'last_error' | 'delivered_at' | 'updated_at'>>,
): Promise<void> {
  // Cancelled is terminal: a worker's late outcome (failure, hold, done) never revives a cancelled delivery.
  await db.updateTable('deliveries').set(set).where('id', '=', id).where('state', '!=', DeliveryState.cancelled).execute();
}

export async function deliveriesOfCases(db: Db, caseIds: readonly string[]): Promise<DeliveryRow[]> {
  if (caseIds.length === 0) return [];
  return db.selectFrom('deliveries').selectAll().where('case_id', 'in', caseIds).orderBy('id').execute();
}

export async function listDeliveries(
  db: Db,
  f: { state?: DeliveryRow['state']; destinationId?: string; limit: number; offset: number },
): Promise<DeliveryRow[]> {
  let q = db.selectFrom('deliveries').selectAll();
  if (f.state) q = q.where('state', '=', f.state);
  if (f.destinationId) q = q.where('destination_id', '=', f.destinationId);
  return q.orderBy('updated_at', 'desc').limit(f.limit).offset(f.offset).execute();
}

/**
 * Waits for (PostgreSQL: locks until COMMIT) the row a planning trigger changes
 * before it enqueues: a trigger still in flight commits before the planning
 * job reads.
 */
export async function waitForPlanTrigger(trx: Db, scope: PlanScope): Promise<void> {
  if (scope.caseId !== undefined) await forUpdate(trx, trx.selectFrom('cases').select('id').where('id', '=', scope.caseId)).execute();
  if (scope.studyUid !== undefined) {
    await forUpdate(trx, trx.selectFrom('studies').select('study_instance_uid').where('study_instance_uid', '=', scope.studyUid)).execute();
  }
}

/**
 * Locks the case until COMMIT and says whether it is still flagged. A row
 * another transaction holds is waited for, not skipped: the holder may be a
 * re-evaluation that only updates the case's reasons (nothing would plan it
 * after), and a second planner finds it `forwarding` once the first commits.
 */
export async function claimFlaggedCase(trx: Db, caseId: string): Promise<boolean> {
  return (
    (await forUpdate(trx, trx.selectFrom('cases').select('id').where('id', '=', caseId).where('state', '=', CaseState.flagged)).executeTakeFirst()) !==
    undefined
  );
}

/** Gateway assignment chose a reader whose destination differs from the rules'. */
export async function setCaseDestination(trx: Db, caseId: string, destinationId: string | null): Promise<void> {
  await trx.updateTable('cases').set({ destination_id: destinationId }).where('id', '=', caseId).execute();
}

/**
 * Locks the delivery until COMMIT, waiting for another holder (its own job
 * recording progress, or another instance adding the same delta: adding the
 * missing instances again then adds none).
 */
export async function lockDelivery(trx: Db, deliveryId: string): Promise<DeliveryState | undefined> {
  return (await forUpdate(trx, trx.selectFrom('deliveries').select('state').where('id', '=', deliveryId)).executeTakeFirst())?.state as
    DeliveryState | undefined;
}

/** Whether any instance of the delivery is still pending. */
export async function hasPendingInstances(db: Db, deliveryId: string): Promise<boolean> {
  const row = await db
    .selectFrom('delivery_instances')
    .select('sop_instance_uid')
    .where('delivery_id', '=', deliveryId)
    .where('state', '=', DeliveryInstanceState.pending)
    .executeTakeFirst();
  return row !== undefined;
}

export async function instancesSentOf(db: Db, deliveryId: string): Promise<number> {
  const row = await db.selectFrom('deliveries').select(['instances_sent']).where('id', '=', deliveryId).executeTakeFirstOrThrow();
  return Number(row.instances_sent);
}

export async function caseStateOf(db: Db, caseId: string): Promise<{ state: CaseState; study_instance_uid: string } | undefined> {
  return db.selectFrom('cases').select(['state', 'study_instance_uid']).where('id', '=', caseId).executeTakeFirst();
}

export async function isInstanceOfStudy(db: Db, sopInstanceUid: string, studyUid: string): Promise<boolean> {
  const row = await db
    .selectFrom('instances')
    .select('sop_instance_uid')
    .where('sop_instance_uid', '=', sopInstanceUid)
    .where('study_instance_uid', '=', studyUid)
    .executeTakeFirst();
  return row !== undefined;
}

/** A person's retry: the delivery's failed instances are pending again. */
export async function resetFailedInstances(db: Db, deliveryId: string): Promise<void> {
  await db
    .updateTable('delivery_instances')
    .set({ state: DeliveryInstanceState.pending, error: null })
    .where('delivery_id', '=', deliveryId)
    .where('state', '=', DeliveryInstanceState.failed)
    .execute();
}
