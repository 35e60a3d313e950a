import type { Kysely } from 'kysely';
import type { Db } from '../database.js';
import { createAfterInsertTrigger } from '../dialect.js';

// Every audit event is queued for each configured sink whose prefix matches its action (017-audit-outbox) by the
// database, in the event's own insert: one statement a event instead of two, the same transaction as before.
export async function up(db: Kysely<unknown>): Promise<void> {
  await createAfterInsertTrigger(
    db as unknown as Db,
    'audit_events_to_outbox',
    'audit_events',
    `insert into audit_outbox (sink, audit_id) select sink, NEW.id from audit_sinks where NEW.action like action_prefix || '%'`,
  );
}
