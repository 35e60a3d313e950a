import type { Kysely } from 'kysely';

// A cancelled case tells each reader pool that received it (ORM^O01, ORC-1 CA) on the pool's own HL7 channel:
// the outbound message names the destination whose channel it goes to (NULL for the RIS and QA channels).
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable('outbound_messages').addColumn('destination_id', 'varchar(128)').execute();
}
