import type { Db } from '../db/database.js';
import { DeliveryInstanceState, DeliveryState, OutboundKind, OutboundState } from '../states.js';

/** Deliveries that may still send something; a delivered one stays delivered (it arrived). */
const LIVE_DELIVERIES: readonly DeliveryState[] = [DeliveryState.pending, DeliveryState.sending, DeliveryState.dead, DeliveryState.held];
/** Write-backs not yet sent (a failed one stays failed: it records what the RIS answered). */
const UNSENT_WRITE_BACKS: readonly OutboundState[] = [OutboundState.pending, OutboundState.waiting];

export interface EndedWork {
  deliveries: number;
  instancesDropped: number;
  writeBacks: number;
}

/**
 * What a case that ends stops, in the transaction that ends it: its live
 * deliveries become `cancelled` (a worker sending one sees that before its next
 * instance and stops; a fenced update never revives it), their unsent instances
 * are dropped, its unsent write-backs (pending or waiting) become `cancelled`,
 * and open reader assignments end. QA notifications already queued are kept:
 * they report a second read that happened, which the cancel does not undo.
 * Telling the pool is queued by the outbound worker from these rows
 * (outbound.repository.ts, poolCancelsDue).
 */
export async function endCaseWork(trx: Db, caseId: string, now: string, why: string): Promise<EndedWork> {
  const live = await trx.selectFrom('deliveries').select(['id', 'state']).where('case_id', '=', caseId).where('state', 'in', LIVE_DELIVERIES).execute();
  const ids = live.map((d) => d.id);
  let instancesDropped = 0;
  if (ids.length > 0) {
    await trx.updateTable('deliveries').set({ state: DeliveryState.cancelled, last_error: why, updated_at: now }).where('id', 'in', ids).execute();
    // A delivery being sent right now keeps its rows until its worker has recorded the batch on the wire
    // (forwarding.service.ts drops the rest when it stops), so what arrived stays counted.
    const idle = live.filter((d) => d.state !== DeliveryState.sending).map((d) => d.id);
    instancesDropped = await dropUnsentInstances(trx, idle);
  }
  const wb = await trx
    .updateTable('outbound_messages')
    .set({ state: OutboundState.cancelled, last_error: why, updated_at: now })
    .where('case_id', '=', caseId)
    .where('kind', '=', OutboundKind.writeBack)
    .where('state', 'in', UNSENT_WRITE_BACKS)
    .executeTakeFirst();
  await trx
    .updateTable('case_assignments')
    .set({ ended_at: now, end_reason: 'cancelled' })
    .where('case_id', '=', caseId)
    .where('ended_at', 'is', null)
    .execute();
  return { deliveries: ids.length, instancesDropped, writeBacks: Number(wb.numUpdatedRows) };
}

/** Forgets the instances a cancelled delivery never sent. */
export async function dropUnsentInstances(trx: Db, deliveryIds: readonly string[]): Promise<number> {
  if (deliveryIds.length === 0) return 0;
  const r = await trx
    .deleteFrom('delivery_instances')
    .where('delivery_id', 'in', deliveryIds)
    .where('state', '!=', DeliveryInstanceState.sent)
    .executeTakeFirst();
  return Number(r.numDeletedRows);
}
