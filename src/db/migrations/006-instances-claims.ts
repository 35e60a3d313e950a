import type { Kysely } from 'kysely';

// Several instances on one PostgreSQL: who is alive (heartbeats, for the console and health), named leases
// (a destination is worked by one instance at a time, which keeps its deliveries in order), and a lease on
// each outbound message so two instances never send the same write-back.
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('gateway_instances')
    .addColumn('instance_id', 'varchar(128)', (c) => c.primaryKey())
    .addColumn('host', 'varchar(256)', (c) => c.notNull())
    .addColumn('pid', 'integer', (c) => c.notNull())
    .addColumn('version', 'varchar(32)')
    .addColumn('started_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('heartbeat_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('stopped_at', 'varchar(32)')
    .execute();

  await db.schema
    .createTable('work_leases')
    .addColumn('name', 'varchar(256)', (c) => c.primaryKey())
    .addColumn('owner', 'varchar(128)')
    .addColumn('acquired_at', 'varchar(32)')
    .addColumn('expires_at', 'varchar(32)')
    .execute();

  await db.schema.alterTable('outbound_messages').addColumn('lease_owner', 'varchar(128)').execute();
  await db.schema.alterTable('outbound_messages').addColumn('lease_expires_at', 'varchar(32)').execute();
  await db.schema.createIndex('deliveries_lease_owner').on('deliveries').column('lease_owner').execute();
}
