import type { Db } from '../db/database.js';
import { DeliveryInstanceState } from '../states.js';
import type { DeliveryExclusionRow } from './delivery.table.js';

export interface NewExclusion {
  deliveryId: string;
  caseId: string;
  sopInstanceUid: string;
  sopClassUid: string;
  seriesDescription: string | null;
  reason: string;
  /** Attribute paths and the rule that fired; never a value. */
  detail: string | null;
  now: string;
}

/**
 * Records an instance as kept back from its delivery (or again, after a
 * release the verifier then stopped): the exclusion row and the delivery
 * instance's state move together. Run in a transaction.
 */
export async function excludeInstance(db: Db, e: NewExclusion): Promise<void> {
  const row = {
    delivery_id: e.deliveryId,
    case_id: e.caseId,
    sop_instance_uid: e.sopInstanceUid,
    sop_class_uid: e.sopClassUid,
    series_description: e.seriesDescription,
    reason: e.reason,
    detail: e.detail,
    excluded_at: e.now,
    released_at: null,
    released_by: null,
    release_reason: null,
  };
  await db
    .insertInto('delivery_exclusions')
    .values(row)
    .onConflict((oc) =>
      oc
        .columns(['delivery_id', 'sop_instance_uid'])
        .doUpdateSet({ reason: e.reason, detail: e.detail, excluded_at: e.now, released_at: null, sop_class_uid: e.sopClassUid }),
    )
    .execute();
  await db
    .updateTable('delivery_instances')
    .set({ state: DeliveryInstanceState.excluded, error: e.reason })
    .where('delivery_id', '=', e.deliveryId)
    .where('sop_instance_uid', '=', e.sopInstanceUid)
    .execute();
}

/** Instances currently kept back (not released) from the deliveries of these cases. */
export async function openExclusionsOfCases(db: Db, caseIds: readonly string[]): Promise<(DeliveryExclusionRow & { destination_id: string })[]> {
  if (caseIds.length === 0) return [];
  return db
    .selectFrom('delivery_exclusions as e')
    .innerJoin('deliveries as d', 'd.id', 'e.delivery_id')
    .selectAll('e')
    .select('d.destination_id')
    .where('e.case_id', 'in', caseIds)
    .where('e.released_at', 'is', null)
    .orderBy('e.excluded_at')
    .orderBy('e.sop_instance_uid')
    .execute();
}

/** Every exclusion row of one instance in one case (one per delivery), released or not. */
export async function exclusionsOfInstance(db: Db, caseId: string, sopInstanceUid: string): Promise<DeliveryExclusionRow[]> {
  return db
    .selectFrom('delivery_exclusions')
    .selectAll()
    .where('case_id', '=', caseId)
    .where('sop_instance_uid', '=', sopInstanceUid)
    .orderBy('delivery_id')
    .execute();
}

/** Marks an exclusion released and queues its instance again in its delivery. Run in a transaction. */
export async function releaseExclusion(
  db: Db,
  r: { deliveryId: string; sopInstanceUid: string; actor: string; reason: string | null; now: string },
): Promise<boolean> {
  const u = await db
    .updateTable('delivery_exclusions')
    .set({ released_at: r.now, released_by: r.actor, release_reason: r.reason })
    .where('delivery_id', '=', r.deliveryId)
    .where('sop_instance_uid', '=', r.sopInstanceUid)
    .where('released_at', 'is', null)
    .executeTakeFirst();
  if (Number(u.numUpdatedRows) !== 1) return false;
  await db
    .updateTable('delivery_instances')
    .set({ state: DeliveryInstanceState.pending, error: null })
    .where('delivery_id', '=', r.deliveryId)
    .where('sop_instance_uid', '=', r.sopInstanceUid)
    .execute();
  return true;
}

/** Whether a delivery still has instances kept back that nobody released. */
export async function hasOpenExclusions(db: Db, deliveryId: string): Promise<boolean> {
  const row = await db
    .selectFrom('delivery_exclusions')
    .select('sop_instance_uid')
    .where('delivery_id', '=', deliveryId)
    .where('released_at', 'is', null)
    .executeTakeFirst();
  return row !== undefined;
}

/** Series descriptions of these instances (for the exclusion list a person reads). */
export async function seriesDescriptions(db: Db, sopInstanceUids: readonly string[]): Promise<Map<string, string | null>> {
  if (sopInstanceUids.length === 0) return new Map();
  const rows = await db
    .selectFrom('instances as i')
    .innerJoin('series as s', 's.series_instance_uid', 'i.series_instance_uid')
    .select(['i.sop_instance_uid', 's.series_description'])
    .where('i.sop_instance_uid', 'in', sopInstanceUids)
    .execute();
  return new Map(rows.map((r) => [r.sop_instance_uid, r.series_description]));
}

/** The pseudonymous UIDs a destination got for these originals (what a reader of a de-identified case may see). */
export async function uidPseudonyms(db: Db, destinationId: string, originals: readonly string[]): Promise<Map<string, string>> {
  if (originals.length === 0) return new Map();
  const rows = await db
    .selectFrom('pseudonyms')
    .select(['original', 'pseudonym'])
    .where('destination_id', '=', destinationId)
    .where('kind', '=', 'uid')
    .where('original', 'in', originals)
    .execute();
  return new Map(rows.map((r) => [r.original, r.pseudonym]));
}
