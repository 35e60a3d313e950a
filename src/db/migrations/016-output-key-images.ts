import type { Kysely } from 'kysely';

// The images a second reader marked as key images with a report version: the Key Object Selection
// sent to the PACS is built from them, and they are kept with the report they belong to.
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('second_report_key_images')
    .addColumn('report_id', 'text', (c) => c.notNull().references('second_reports.id'))
    .addColumn('position', 'integer', (c) => c.notNull())
    .addColumn('sop_instance_uid', 'text', (c) => c.notNull())
    .addColumn('series_instance_uid', 'text', (c) => c.notNull())
    .addColumn('sop_class_uid', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('second_report_key_images_pk', ['report_id', 'sop_instance_uid'])
    .execute();
}
