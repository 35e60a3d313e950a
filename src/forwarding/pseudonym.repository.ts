import type { Db } from '../db/database.js';
import type { PseudonymTable } from './delivery.table.js';

/** Every stored mapping of one study at one destination. */
export async function pseudonymsOfStudy(
  db: Db,
  destinationId: string,
  studyInstanceUid: string,
): Promise<{ kind: string; original: string; pseudonym: string }[]> {
  return db
    .selectFrom('pseudonyms')
    .select(['kind', 'original', 'pseudonym'])
    .where('destination_id', '=', destinationId)
    .where('study_instance_uid', '=', studyInstanceUid)
    .execute();
}

/** Stores mappings (one already stored for the same destination, kind and original is kept), 200 rows a statement. */
export async function insertPseudonyms(db: Db, rows: readonly PseudonymTable[]): Promise<void> {
  for (let i = 0; i < rows.length; i += 200) {
    await db
      .insertInto('pseudonyms')
      .values(rows.slice(i, i + 200))
      .onConflict((oc) => oc.columns(['destination_id', 'kind', 'original']).doNothing())
      .execute();
  }
}

/** The stored mapping of a pseudonym of `kind`, at one destination or (none given) at any. */
export async function findPseudonym(
  db: Db,
  destinationId: string | undefined,
  kind: string,
  pseudonym: string,
): Promise<{ study_instance_uid: string; original: string } | undefined> {
  let q = db.selectFrom('pseudonyms').select(['study_instance_uid', 'original']).where('kind', '=', kind).where('pseudonym', '=', pseudonym);
  if (destinationId) q = q.where('destination_id', '=', destinationId);
  return q.executeTakeFirst();
}
