import type { Kysely } from 'kysely';

// The YAML text of a rule-set version as the QA officer wrote it, comments included, so the
// next edit (in the form or as YAML) starts from that text rather than from regenerated JSON.
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable('rule_sets').addColumn('source_text', 'text').execute();
}
