import type { Kysely } from 'kysely';

// Reader assignments, second reports (versions: an addendum is a new one), and the durable queue of what the
// gateway sends out besides images: the HL7 write-back to the RIS and discrepancy notifications.
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable('cases').addColumn('sla_breached_at', 'varchar(32)').execute();
  await db.schema
    .alterTable('cases')
    .addColumn('escalation_level', 'integer', (c) => c.notNull().defaultTo(0))
    .execute();

  await db.schema
    .createTable('case_assignments')
    .addColumn('id', 'varchar(40)', (c) => c.primaryKey())
    .addColumn('case_id', 'varchar(40)', (c) => c.notNull())
    .addColumn('reader_id', 'varchar(128)', (c) => c.notNull())
    .addColumn('assigned_by', 'varchar(128)', (c) => c.notNull())
    .addColumn('reason', 'text', (c) => c.notNull())
    .addColumn('assigned_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('ended_at', 'varchar(32)')
    .addColumn('end_reason', 'varchar(32)')
    .execute();
  await db.schema.createIndex('case_assignments_case').on('case_assignments').column('case_id').execute();

  await db.schema
    .createTable('second_reports')
    .addColumn('id', 'varchar(40)', (c) => c.primaryKey())
    .addColumn('case_id', 'varchar(40)', (c) => c.notNull())
    .addColumn('version', 'integer', (c) => c.notNull())
    .addColumn('reader_id', 'varchar(128)', (c) => c.notNull())
    .addColumn('text', 'text', (c) => c.notNull())
    .addColumn('impression', 'text')
    .addColumn('radpeer_score', 'varchar(4)', (c) => c.notNull())
    .addColumn('discrepant', 'integer', (c) => c.notNull())
    .addColumn('addendum', 'integer', (c) => c.notNull())
    .addColumn('source', 'varchar(16)', (c) => c.notNull())
    .addColumn('submitted_by', 'varchar(128)', (c) => c.notNull())
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('second_reports_case').on('second_reports').columns(['case_id', 'version']).unique().execute();

  await db.schema
    .createTable('outbound_messages')
    .addColumn('id', 'varchar(40)', (c) => c.primaryKey())
    .addColumn('kind', 'varchar(16)', (c) => c.notNull())
    .addColumn('case_id', 'varchar(40)', (c) => c.notNull())
    .addColumn('report_id', 'varchar(40)')
    .addColumn('control_id', 'varchar(20)')
    .addColumn('payload', 'text', (c) => c.notNull())
    .addColumn('state', 'varchar(16)', (c) => c.notNull())
    .addColumn('attempts', 'integer', (c) => c.notNull())
    .addColumn('next_attempt_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('last_error', 'text')
    .addColumn('response', 'text')
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('updated_at', 'varchar(32)', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('outbound_due').on('outbound_messages').columns(['state', 'next_attempt_at']).execute();
  await db.schema.createIndex('outbound_case').on('outbound_messages').column('case_id').execute();
}
