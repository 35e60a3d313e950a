import type { Kysely } from 'kysely';

// Times are ISO-8601 UTC text: portable across SQLite and PostgreSQL and sortable as strings.
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('studies')
    .addColumn('study_instance_uid', 'varchar(64)', (c) => c.primaryKey())
    .addColumn('accession_number', 'varchar(64)')
    .addColumn('patient_id', 'varchar(64)')
    .addColumn('study_date', 'varchar(8)')
    .addColumn('study_description', 'varchar(256)')
    .addColumn('referring_physician', 'varchar(256)')
    .addColumn('calling_ae', 'varchar(16)')
    .addColumn('state', 'varchar(16)', (c) => c.notNull())
    .addColumn('instance_count', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('late_instance_count', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('size_bytes', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('first_received_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('last_received_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('stable_at', 'varchar(32)')
    .addColumn('updated_at', 'varchar(32)', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('studies_accession').on('studies').column('accession_number').execute();
  await db.schema.createIndex('studies_patient').on('studies').column('patient_id').execute();
  await db.schema.createIndex('studies_state_last').on('studies').columns(['state', 'last_received_at']).execute();

  await db.schema
    .createTable('series')
    .addColumn('series_instance_uid', 'varchar(64)', (c) => c.primaryKey())
    .addColumn('study_instance_uid', 'varchar(64)', (c) => c.notNull().references('studies.study_instance_uid'))
    .addColumn('modality', 'varchar(16)')
    .addColumn('body_part_examined', 'varchar(64)')
    .addColumn('series_number', 'integer')
    .addColumn('series_description', 'varchar(256)')
    .addColumn('instance_count', 'integer', (c) => c.notNull().defaultTo(0))
    .execute();
  await db.schema.createIndex('series_study').on('series').column('study_instance_uid').execute();

  await db.schema
    .createTable('instances')
    .addColumn('sop_instance_uid', 'varchar(64)', (c) => c.primaryKey())
    .addColumn('series_instance_uid', 'varchar(64)', (c) => c.notNull().references('series.series_instance_uid'))
    .addColumn('study_instance_uid', 'varchar(64)', (c) => c.notNull().references('studies.study_instance_uid'))
    .addColumn('sop_class_uid', 'varchar(64)', (c) => c.notNull())
    .addColumn('transfer_syntax_uid', 'varchar(64)', (c) => c.notNull())
    .addColumn('instance_number', 'integer')
    .addColumn('file_path', 'varchar(512)', (c) => c.notNull())
    .addColumn('size_bytes', 'bigint', (c) => c.notNull())
    .addColumn('sha256', 'varchar(64)', (c) => c.notNull())
    .addColumn('calling_ae', 'varchar(16)')
    .addColumn('late', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('received_at', 'varchar(32)', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('instances_study').on('instances').column('study_instance_uid').execute();
  await db.schema.createIndex('instances_series').on('instances').column('series_instance_uid').execute();
}
