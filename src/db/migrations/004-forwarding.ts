import type { Kysely } from 'kysely';

// The durable outbox: one delivery per (case, destination), instance-level progress so a retry
// sends only what is missing, and the pseudonym map that links an answer back to the real study.
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('deliveries')
    .addColumn('id', 'varchar(40)', (c) => c.primaryKey())
    .addColumn('case_id', 'varchar(40)', (c) => c.notNull())
    .addColumn('destination_id', 'varchar(128)', (c) => c.notNull())
    .addColumn('study_instance_uid', 'varchar(64)', (c) => c.notNull())
    .addColumn('state', 'varchar(16)', (c) => c.notNull())
    .addColumn('deidentify', 'integer', (c) => c.notNull())
    .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('next_attempt_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('last_error', 'text')
    .addColumn('lease_owner', 'varchar(128)')
    .addColumn('lease_expires_at', 'varchar(32)')
    .addColumn('instances_total', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('instances_sent', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('updated_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('delivered_at', 'varchar(32)')
    .execute();
  await db.schema.createIndex('deliveries_case_destination').on('deliveries').columns(['case_id', 'destination_id']).unique().execute();
  await db.schema.createIndex('deliveries_due').on('deliveries').columns(['state', 'next_attempt_at']).execute();

  await db.schema
    .createTable('delivery_instances')
    .addColumn('delivery_id', 'varchar(40)', (c) => c.notNull())
    .addColumn('sop_instance_uid', 'varchar(64)', (c) => c.notNull())
    .addColumn('state', 'varchar(16)', (c) => c.notNull())
    .addColumn('error', 'text')
    .addColumn('sent_at', 'varchar(32)')
    .addPrimaryKeyConstraint('delivery_instances_pk', ['delivery_id', 'sop_instance_uid'])
    .execute();

  await db.schema
    .createTable('pseudonyms')
    .addColumn('destination_id', 'varchar(128)', (c) => c.notNull())
    .addColumn('kind', 'varchar(16)', (c) => c.notNull())
    .addColumn('original', 'varchar(128)', (c) => c.notNull())
    .addColumn('pseudonym', 'varchar(128)', (c) => c.notNull())
    .addColumn('study_instance_uid', 'varchar(64)', (c) => c.notNull())
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .addPrimaryKeyConstraint('pseudonyms_pk', ['destination_id', 'kind', 'original'])
    .execute();
  await db.schema.createIndex('pseudonyms_reverse').on('pseudonyms').columns(['destination_id', 'kind', 'pseudonym']).execute();
}
