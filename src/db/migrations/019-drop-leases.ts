import type { Kysely } from 'kysely';

// The job engine (013-jobs) claims all background work, so the named leases (`work_leases`) and the lease columns
// of deliveries and outbound messages are no longer read or written. SQLite (3.35+) drops a column only when no
// index uses it, hence the index first; PostgreSQL would drop it with the column.
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropIndex('deliveries_lease_owner').ifExists().execute();
  for (const table of ['deliveries', 'outbound_messages']) {
    await db.schema.alterTable(table).dropColumn('lease_owner').execute();
    await db.schema.alterTable(table).dropColumn('lease_expires_at').execute();
  }
  await db.schema.dropTable('work_leases').execute();
}
