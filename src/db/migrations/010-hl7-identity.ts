import { sql, type Kysely } from 'kysely';

// HL7 identity with its authority, reused control ids, order cancels.
export async function up(db: Kysely<unknown>): Promise<void> {
  // Every PID-3 repetition as sent: JSON [{id, authority, type}] (CX.1, CX.4, CX.5). patient_id/_authority stay the selected one.
  for (const t of ['orders', 'report_versions', 'ai_results']) {
    await db.schema.alterTable(t).addColumn('patient_identifiers', 'text').execute();
  }
  // ORC-1 CA/DC/OC: when the RIS cancelled the order (NULL: live).
  await db.schema.alterTable('orders').addColumn('cancelled_at', 'varchar(32)').execute();
  // MRG-1's CX.4: a merge retires the prior id of that authority only.
  await db.schema.alterTable('patient_merges').addColumn('prior_authority', 'varchar(128)').execute();
  // A message that reuses an earlier message's MSH-3/4/10 with other content is kept (held) and points at the first one;
  // the duplicate key holds only among first messages, so the dedup index gains that condition.
  await db.schema.alterTable('hl7_messages').addColumn('reuse_of', 'varchar(64)').execute();
  await db.schema.dropIndex('hl7_messages_dedup').execute();
  await db.schema
    .createIndex('hl7_messages_dedup')
    .on('hl7_messages')
    .columns(['sender_application', 'sender_facility', 'control_id'])
    .unique()
    .where(sql.ref('status'), '<>', 'rejected')
    .where(sql.ref('status'), '<>', 'duplicate')
    .where(sql.ref('reuse_of'), 'is', null)
    .execute();
}
