import { sql, type Kysely } from 'kysely';

// Versions of an instance: a SOP instance re-sent with other bytes becomes the current copy and the older one is
// kept (file and row), with the identity each copy carried, so a changed patient or study can be held and shown to
// QA. IOCM rejection notes and the instances they reject are kept here too, out of `instances` (and so out of
// counts, rules and forwarding). Studies keep the decoded patient name and birth date, and the state a hold
// interrupted.
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('instance_versions')
    .addColumn('sop_instance_uid', 'varchar(64)', (c) => c.notNull())
    .addColumn('version', 'integer', (c) => c.notNull())
    .addColumn('study_instance_uid', 'varchar(64)', (c) => c.notNull())
    .addColumn('series_instance_uid', 'varchar(64)', (c) => c.notNull())
    .addColumn('sop_class_uid', 'varchar(64)', (c) => c.notNull())
    .addColumn('transfer_syntax_uid', 'varchar(64)', (c) => c.notNull())
    .addColumn('instance_number', 'integer')
    .addColumn('sha256', 'varchar(64)', (c) => c.notNull())
    .addColumn('size_bytes', 'bigint', (c) => c.notNull())
    .addColumn('file_path', 'text', (c) => c.notNull())
    .addColumn('received_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('calling_ae', 'varchar(16)')
    .addColumn('superseded_at', 'varchar(32)')
    .addColumn('patient_id', 'varchar(64)')
    .addColumn('issuer_of_patient_id', 'varchar(128)')
    .addColumn('patient_name', 'varchar(256)')
    .addColumn('patient_birth_date', 'varchar(8)')
    .addColumn('accession_number', 'varchar(64)')
    // 'instance', or 'iocm-rejection' for a rejection note (stored, never current, never forwarded)
    .addColumn('kind', 'varchar(16)', (c) => c.notNull().defaultTo('instance'))
    // JSON array of the identity attributes that differ from the version before (null: none)
    .addColumn('identity_changes', 'text')
    // null, or 'open' / 'released' / 'rejected': this version caused an identity-conflict hold
    .addColumn('conflict_state', 'varchar(16)')
    // IOCM: withdrawn by a rejection note (its code, e.g. DCM:113001)
    .addColumn('rejected_at', 'varchar(32)')
    .addColumn('rejection_code', 'varchar(32)')
    .addPrimaryKeyConstraint('instance_versions_pk', ['sop_instance_uid', 'version'])
    .execute();
  await db.schema.createIndex('instance_versions_study').on('instance_versions').column('study_instance_uid').execute();
  await db.schema
    .alterTable('instances')
    .addColumn('version', 'integer', (c) => c.notNull().defaultTo(1))
    .execute();
  await db.schema.alterTable('studies').addColumn('patient_name', 'varchar(256)').execute();
  await db.schema.alterTable('studies').addColumn('patient_birth_date', 'varchar(8)').execute();
  await db.schema.alterTable('studies').addColumn('held_from_state', 'varchar(16)').execute();
  // Instances stored before this migration: their copy is version 1, with the identity their study was filed under.
  await sql`
    insert into instance_versions (sop_instance_uid, version, study_instance_uid, series_instance_uid, sop_class_uid, transfer_syntax_uid,
      instance_number, sha256, size_bytes, file_path, received_at, calling_ae, patient_id, issuer_of_patient_id, accession_number, kind)
    select i.sop_instance_uid, 1, i.study_instance_uid, i.series_instance_uid, i.sop_class_uid, i.transfer_syntax_uid,
      i.instance_number, i.sha256, i.size_bytes, i.file_path, i.received_at, i.calling_ae, s.patient_id, s.issuer_of_patient_id, s.accession_number, 'instance'
    from instances i join studies s on s.study_instance_uid = i.study_instance_uid`.execute(db);
}
