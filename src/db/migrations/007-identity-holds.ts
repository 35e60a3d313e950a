import type { Kysely } from 'kysely';

// Identity with its authority and study holds. A patient id means nothing without its assigning authority
// (DICOM Issuer of Patient ID, HL7 CX.4), so the study keeps the issuer it was sent with and the other ids it
// is known by; a study can be held (identity conflict, incomplete, IOCM) with the reason shown to QA.
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable('studies').addColumn('issuer_of_patient_id', 'varchar(128)').execute();
  // JSON array of {id, issuer, type}: Other Patient IDs Sequence (0010,1002) as sent.
  await db.schema.alterTable('studies').addColumn('other_patient_ids', 'text').execute();
  await db.schema.alterTable('studies').addColumn('hold_reason', 'varchar(64)').execute();
  await db.schema.alterTable('studies').addColumn('hold_detail', 'text').execute();
  await db.schema.alterTable('studies').addColumn('held_at', 'varchar(32)').execute();
}
