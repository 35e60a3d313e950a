import type { Kysely } from 'kysely';

// Instances kept back from a de-identified delivery (burned-in risk, encapsulated document, an identifier found by
// the verifier...), one row per delivery and instance, with the reason and a detail that names attribute paths,
// never values. A person may release one after looking at it; the release is recorded here and in the audit.
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('delivery_exclusions')
    .addColumn('delivery_id', 'varchar(40)', (c) => c.notNull())
    .addColumn('case_id', 'varchar(40)', (c) => c.notNull())
    .addColumn('sop_instance_uid', 'varchar(64)', (c) => c.notNull())
    .addColumn('sop_class_uid', 'varchar(64)', (c) => c.notNull())
    .addColumn('series_description', 'varchar(256)')
    .addColumn('reason', 'varchar(64)', (c) => c.notNull())
    .addColumn('detail', 'text')
    .addColumn('excluded_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('released_at', 'varchar(32)')
    .addColumn('released_by', 'varchar(128)')
    .addColumn('release_reason', 'text')
    .addPrimaryKeyConstraint('delivery_exclusions_pk', ['delivery_id', 'sop_instance_uid'])
    .execute();
  await db.schema.createIndex('delivery_exclusions_case').on('delivery_exclusions').column('case_id').execute();
}
