import type { Kysely } from 'kysely';

// Rule-set versions, decisions with their reasons, sampling counters, cases and the audit trail.
// JSON columns hold whole values that are read whole and never queried inside (portable as text).
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('settings')
    .addColumn('key', 'varchar(64)', (c) => c.primaryKey())
    .addColumn('value', 'text', (c) => c.notNull())
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .execute();

  await db.schema
    .createTable('rule_sets')
    .addColumn('version', 'integer', (c) => c.primaryKey())
    .addColumn('rules_json', 'text', (c) => c.notNull())
    .addColumn('content_hash', 'varchar(64)', (c) => c.notNull())
    .addColumn('source', 'varchar(16)', (c) => c.notNull())
    .addColumn('created_by', 'varchar(128)', (c) => c.notNull())
    .addColumn('comment', 'text')
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .execute();

  await db.schema
    .createTable('audit_events')
    .addColumn('id', 'varchar(40)', (c) => c.primaryKey())
    .addColumn('at', 'varchar(32)', (c) => c.notNull())
    .addColumn('actor', 'varchar(128)', (c) => c.notNull())
    .addColumn('action', 'varchar(64)', (c) => c.notNull())
    .addColumn('entity_type', 'varchar(32)', (c) => c.notNull())
    .addColumn('entity_id', 'varchar(128)')
    .addColumn('details', 'text')
    .execute();
  await db.schema.createIndex('audit_entity').on('audit_events').columns(['entity_type', 'entity_id']).execute();

  await db.schema
    .createTable('decisions')
    .addColumn('id', 'varchar(40)', (c) => c.primaryKey())
    .addColumn('study_instance_uid', 'varchar(64)', (c) => c.notNull())
    .addColumn('rule_set_version', 'integer', (c) => c.notNull())
    .addColumn('trigger', 'varchar(32)', (c) => c.notNull())
    .addColumn('basis', 'varchar(16)', (c) => c.notNull())
    .addColumn('flagged', 'integer', (c) => c.notNull())
    .addColumn('priority', 'varchar(16)')
    .addColumn('reasons', 'text', (c) => c.notNull())
    .addColumn('sampling_slots', 'text', (c) => c.notNull())
    .addColumn('case_id', 'varchar(40)')
    .addColumn('evaluated_at', 'varchar(32)', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('decisions_study').on('decisions').columns(['study_instance_uid', 'id']).execute();

  await db.schema
    .createTable('sampling_buckets')
    .addColumn('bucket_key', 'varchar(256)', (c) => c.primaryKey())
    .addColumn('rule_id', 'varchar(128)', (c) => c.notNull())
    .addColumn('radiologist_id', 'varchar(128)', (c) => c.notNull())
    .addColumn('modality', 'varchar(16)', (c) => c.notNull())
    .addColumn('period_key', 'varchar(16)', (c) => c.notNull())
    .addColumn('seen', 'integer', (c) => c.notNull())
    .addColumn('selected', 'integer', (c) => c.notNull())
    .addColumn('updated_at', 'varchar(32)', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('sampling_period').on('sampling_buckets').columns(['period_key', 'rule_id']).execute();

  await db.schema
    .createTable('cases')
    .addColumn('id', 'varchar(40)', (c) => c.primaryKey())
    .addColumn('study_instance_uid', 'varchar(64)', (c) => c.notNull())
    .addColumn('accession_number', 'varchar(64)')
    .addColumn('state', 'varchar(16)', (c) => c.notNull())
    .addColumn('priority', 'varchar(16)', (c) => c.notNull())
    .addColumn('sla_hours', 'integer', (c) => c.notNull())
    .addColumn('due_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('destination_id', 'varchar(128)')
    .addColumn('reader_group', 'varchar(128)')
    .addColumn('blinded', 'integer', (c) => c.notNull())
    .addColumn('deidentify', 'integer')
    .addColumn('rule_set_version', 'integer')
    .addColumn('reasons', 'text', (c) => c.notNull())
    .addColumn('reader_id', 'varchar(128)')
    .addColumn('discrepant', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('created_by', 'varchar(128)', (c) => c.notNull())
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('updated_at', 'varchar(32)', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('cases_study').on('cases').column('study_instance_uid').execute();
  await db.schema.createIndex('cases_state').on('cases').columns(['state', 'due_at']).execute();

  await db.schema
    .createTable('manual_requests')
    .addColumn('id', 'varchar(40)', (c) => c.primaryKey())
    .addColumn('study_instance_uid', 'varchar(64)', (c) => c.notNull())
    .addColumn('reason', 'text', (c) => c.notNull())
    .addColumn('requested_by', 'varchar(128)', (c) => c.notNull())
    .addColumn('priority', 'varchar(16)')
    .addColumn('destination_id', 'varchar(128)')
    .addColumn('case_id', 'varchar(40)')
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('manual_requests_study').on('manual_requests').column('study_instance_uid').execute();
}
