import type { Kysely } from 'kysely';

// Arbitration: a discrepant second read a rule sends to a third reader. One row per arbitration of a case
// (a case has at most one open at a time); the verdict closes it and the write-back that waited for it goes.
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('case_arbitrations')
    .addColumn('id', 'varchar(40)', (c) => c.primaryKey())
    .addColumn('case_id', 'varchar(40)', (c) => c.notNull())
    .addColumn('report_id', 'varchar(40)', (c) => c.notNull())
    .addColumn('rule_ids', 'text', (c) => c.notNull())
    .addColumn('trigger_score', 'varchar(4)', (c) => c.notNull())
    .addColumn('reader_group', 'varchar(128)')
    .addColumn('state', 'varchar(16)', (c) => c.notNull())
    .addColumn('arbitrator_id', 'varchar(128)')
    .addColumn('unassigned_reason', 'text')
    .addColumn('verdict', 'varchar(16)')
    .addColumn('final_score', 'varchar(4)')
    .addColumn('text', 'text')
    .addColumn('decided_by', 'varchar(128)')
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('decided_at', 'varchar(32)')
    .execute();
  await db.schema.createIndex('case_arbitrations_case').on('case_arbitrations').column('case_id').execute();
  await db.schema.createIndex('case_arbitrations_arbitrator').on('case_arbitrations').columns(['arbitrator_id', 'state']).execute();
}
