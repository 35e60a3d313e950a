import type { Kysely } from 'kysely';

// Modality Performed Procedure Steps (what a modality says it produced) and the prior studies of a case.
// An MPPS is stored before the N-CREATE / N-SET is answered; the instances its Performed Series Sequence lists
// are kept one per row, so completeness is a comparison with the study's instances. A prior is a study of the
// same patient found at the hospital PACS for a case: its row says how far finding and retrieving it got, and
// marks the study as read-only context (no case, no rules of its own).
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('mpps')
    .addColumn('sop_instance_uid', 'varchar(64)', (c) => c.primaryKey())
    // 'IN PROGRESS', 'COMPLETED' or 'DISCONTINUED' (PS3.3 C.4.14 Performed Procedure Step Status)
    .addColumn('status', 'varchar(16)', (c) => c.notNull())
    .addColumn('study_instance_uid', 'varchar(64)')
    .addColumn('accession_number', 'varchar(64)')
    .addColumn('patient_id', 'varchar(64)')
    .addColumn('issuer_of_patient_id', 'varchar(128)')
    .addColumn('modality', 'varchar(16)')
    .addColumn('calling_ae', 'varchar(16)')
    // The data set as last set (JSON, dcmjs naturalized): the N-SET merges into it.
    .addColumn('dataset', 'text', (c) => c.notNull())
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('updated_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('ended_at', 'varchar(32)')
    .execute();
  await db.schema.createIndex('mpps_study').on('mpps').column('study_instance_uid').execute();

  await db.schema
    .createTable('mpps_instances')
    .addColumn('mpps_uid', 'varchar(64)', (c) => c.notNull())
    .addColumn('sop_instance_uid', 'varchar(64)', (c) => c.notNull())
    .addColumn('sop_class_uid', 'varchar(64)')
    .addColumn('series_instance_uid', 'varchar(64)')
    .addColumn('study_instance_uid', 'varchar(64)')
    .addPrimaryKeyConstraint('mpps_instances_pk', ['mpps_uid', 'sop_instance_uid'])
    .execute();
  await db.schema.createIndex('mpps_instances_study').on('mpps_instances').column('study_instance_uid').execute();

  await db.schema
    .createTable('case_priors')
    .addColumn('case_id', 'varchar(40)', (c) => c.notNull())
    .addColumn('study_instance_uid', 'varchar(64)', (c) => c.notNull())
    .addColumn('study_date', 'varchar(8)')
    // JSON array of modality codes (ModalitiesInStudy as the PACS answered)
    .addColumn('modalities', 'text', (c) => c.notNull())
    .addColumn('study_description', 'varchar(256)')
    .addColumn('accession_number', 'varchar(64)')
    // found, retrieving, retrieved, failed
    .addColumn('state', 'varchar(16)', (c) => c.notNull())
    .addColumn('detail', 'text')
    .addColumn('instances_expected', 'integer')
    // 'pacs': the gateway fetched it for this case (read-only context, never evaluated by the rules);
    // 'gateway': it was already here when found (a study in its own right, which keeps its own life cycle)
    .addColumn('origin', 'varchar(16)', (c) => c.notNull().defaultTo('pacs'))
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('updated_at', 'varchar(32)', (c) => c.notNull())
    .addPrimaryKeyConstraint('case_priors_pk', ['case_id', 'study_instance_uid'])
    .execute();
  await db.schema.createIndex('case_priors_study').on('case_priors').column('study_instance_uid').execute();

  // A case's priors go to its destination as deliveries of their own (one per study), beside the case's own.
  await db.schema.dropIndex('deliveries_case_destination').execute();
  await db.schema
    .createIndex('deliveries_case_destination_study')
    .on('deliveries')
    .columns(['case_id', 'destination_id', 'study_instance_uid'])
    .unique()
    .execute();
}
