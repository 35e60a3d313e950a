import type { Kysely } from 'kysely';

// Where audit events go besides the audit table (IHE ATNA syslog, RIS status updates): a sink is a row while it is
// configured; recordAudit queues the event for every sink whose prefix matches its action, in the event's transaction.
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('audit_sinks')
    .addColumn('sink', 'text', (c) => c.primaryKey())
    .addColumn('action_prefix', 'text', (c) => c.notNull())
    .addColumn('enabled_at', 'text', (c) => c.notNull())
    .execute();
  await db.schema
    .createTable('audit_outbox')
    .addColumn('sink', 'text', (c) => c.notNull())
    .addColumn('audit_id', 'text', (c) => c.notNull())
    .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('last_error', 'text')
    .addPrimaryKeyConstraint('audit_outbox_pk', ['sink', 'audit_id'])
    .execute();
}
