import type { Db } from '../db/database.js';
import { forClaim } from '../db/dialect.js';
import { OutboundState } from '../states.js';
import type { OutboundMessageRow } from './report.table.js';

/**
 * Claims, for `owner` until `leaseUntil`, up to `limit` due outbound messages
 * that are each the oldest pending one of their case and channel (kind): an
 * earlier message still pending (waiting for its retry, or being sent by any
 * instance) keeps the later ones back, so the RIS gets a case's messages in
 * order. A claim whose lease ran out (its instance died) is taken over. One
 * UPDATE over a candidate SELECT that skips rows another instance is locking
 * (PostgreSQL, dialect.ts); oldest first.
 */
export async function claimOutbound(db: Db, owner: string, now: string, leaseUntil: string, limit: number): Promise<OutboundMessageRow[]> {
  const candidates = db
    .selectFrom('outbound_messages as m')
    .select('m.id')
    .where('m.state', '=', OutboundState.pending)
    .where('m.next_attempt_at', '<=', now)
    .where((eb) => eb.or([eb('m.lease_owner', 'is', null), eb('m.lease_expires_at', '<', now)]))
    .where(({ not, exists, selectFrom }) =>
      not(
        exists(
          selectFrom('outbound_messages as x')
            .select('x.id')
            .whereRef('x.kind', '=', 'm.kind')
            .whereRef('x.case_id', '=', 'm.case_id')
            .where('x.state', '=', OutboundState.pending)
            .where((eb) => eb.or([eb('x.created_at', '<', eb.ref('m.created_at')), eb.and([eb('x.created_at', '=', eb.ref('m.created_at')), eb('x.id', '<', eb.ref('m.id'))])])),
        ),
      ),
    )
    .orderBy('m.created_at')
    .orderBy('m.id')
    .limit(limit);
  const rows = await db
    .updateTable('outbound_messages')
    .set({ lease_owner: owner, lease_expires_at: leaseUntil })
    .where('id', 'in', forClaim(db, candidates))
    .returningAll()
    .execute();
  return rows.sort((a, b) => (a.created_at < b.created_at ? -1 : a.created_at > b.created_at ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}
