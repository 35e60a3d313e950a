import { sql } from 'kysely';
import type { Db } from '../db/database.js';
import { param, precompiled } from '../db/precompiled.js';
import { LinkState, MessageStatus } from '../states.js';

/**
 * The statements of linking (reconcile.ts decides; this reads and writes).
 * Every function takes the caller's transaction.
 */

/** The tables whose rows are linked to studies: orders, primary reports, AI results. */
export const linkTables = ['orders', 'report_versions', 'ai_results'] as const;
export type LinkTable = (typeof linkTables)[number];

export interface MergeSuccessor {
  patient_id: string;
  authority: string | null;
  prior_authority: string | null;
}

export type OrderKeys = {
  id: string;
  accession_number: string | null;
  study_instance_uid: string | null;
  patient_id: string | null;
  patient_id_authority: string | null;
  patient_identifiers: string | null;
};

export type StudyKeys = {
  study_instance_uid: string;
  accession_number: string | null;
  patient_id: string | null;
  issuer_of_patient_id: string | null;
  other_patient_ids: string | null;
};

/** A pending or held row of a link table, with the keys a link is decided on. */
export interface LinkItem {
  id: string;
  message_id: string;
  accession_number: string | null;
  study_instance_uid: string | null;
  patient_id: string | null;
  patient_id_authority: string | null;
  patient_identifiers: string | null;
}

export interface LinkColumns {
  link_state: LinkState;
  linked_study_uid: string | null;
  hold_reason: string | null;
}

// The linking look-ups run for every order, report and AI result: built once (precompiled.ts).
const mergeSuccessorsQ = precompiled<{ prior: string }, MergeSuccessor>((db) =>
  db
    .selectFrom('patient_merges')
    .select(['patient_id', 'authority', 'prior_authority'])
    .where('prior_patient_id', '=', param('prior'))
    .orderBy('applied_at', 'desc')
    .orderBy('id', 'desc')
    .limit(20),
);
const orderKeyColumns = ['id', 'accession_number', 'study_instance_uid', 'patient_id', 'patient_id_authority', 'patient_identifiers'] as const;
const ordersWith = (column: 'accession_number' | 'study_instance_uid', excluding: boolean) =>
  precompiled<{ key: string; exclude?: string }, OrderKeys>((db) => {
    const q = db.selectFrom('orders').select(orderKeyColumns).where('link_state', '<>', LinkState.held).where(column, '=', param('key'));
    return excluding ? q.where('id', '<>', param('exclude')) : q;
  });
const ordersByStudyUidQ = ordersWith('study_instance_uid', false);
const ordersByStudyUidExcludingQ = ordersWith('study_instance_uid', true);
const studyKeyColumns = ['study_instance_uid', 'accession_number', 'patient_id', 'issuer_of_patient_id', 'other_patient_ids'] as const;
const studiesByAccessionQ = precompiled<{ accession: string }, StudyKeys>((db) =>
  db.selectFrom('studies').select(studyKeyColumns).where('accession_number', '=', param('accession')).limit(10),
);
/**
 * With an accession number (almost always), the orders and the studies that
 * carry it come back from one statement: the study look-up uses the same
 * accession whatever the orders say, so the two need not wait for each other.
 */
const ordersAndStudiesWith = (excluding: boolean) =>
  precompiled<{ accession: string; exclude?: string }, OrderKeys & { source: 'order' | 'study' }>((db) => {
    let orders = db
      .selectFrom('orders')
      .select([sql.lit('order').as('source'), ...orderKeyColumns])
      .where('link_state', '<>', LinkState.held)
      .where('accession_number', '=', param('accession'));
    if (excluding) orders = orders.where('id', '<>', param('exclude'));
    // A compound SELECT takes LIMIT only on the whole, hence the subquery (same limit as studiesByAccessionQ).
    const studies = db
      .selectFrom((eb) => eb.selectFrom('studies').select(studyKeyColumns).where('accession_number', '=', param('accession')).limit(10).as('s'))
      // The study's issuer and other ids ride in the order columns' places (same shape for the UNION).
      .select([
        sql.lit('study').as('source'),
        sql<string>`null`.as('id'),
        's.accession_number',
        's.study_instance_uid',
        's.patient_id',
        's.issuer_of_patient_id as patient_id_authority',
        's.other_patient_ids as patient_identifiers',
      ]);
    return orders.unionAll(studies as never);
  });
const ordersAndStudiesByAccessionQ = ordersAndStudiesWith(false);
const ordersAndStudiesByAccessionExcludingQ = ordersAndStudiesWith(true);
const studyByUidQ = precompiled<{ uid: string }, StudyKeys>((db) =>
  db.selectFrom('studies').select(studyKeyColumns).where('study_instance_uid', '=', param('uid')),
);

/** The A40/A34 merges that retired `priorId`, newest first (at most 20). */
export async function mergeSuccessors(db: Db, priorId: string): Promise<MergeSuccessor[]> {
  return (await mergeSuccessorsQ(db, { prior: priorId })).rows;
}

/**
 * The orders (not held) with this accession, and the studies that carry it
 * (at most 10), in one statement; `excludeOrderId`: an order whose own row does not count.
 */
export async function ordersAndStudiesByAccession(
  db: Db,
  accession: string,
  excludeOrderId: string | undefined,
): Promise<{ orders: OrderKeys[]; studies: StudyKeys[] }> {
  const q = excludeOrderId ? ordersAndStudiesByAccessionExcludingQ : ordersAndStudiesByAccessionQ;
  const rows = (await q(db, { accession, exclude: excludeOrderId })).rows;
  return {
    orders: rows.filter((r) => r.source === 'order'),
    studies: rows
      .filter((r) => r.source === 'study')
      .map((r) => ({
        study_instance_uid: r.study_instance_uid!,
        accession_number: r.accession_number,
        patient_id: r.patient_id,
        issuer_of_patient_id: r.patient_id_authority,
        other_patient_ids: r.patient_identifiers,
      })),
  };
}

/** The orders (not held) naming this StudyInstanceUID; `excludeOrderId`: an order whose own row does not count. */
export async function ordersByStudyUid(db: Db, uid: string, excludeOrderId: string | undefined): Promise<OrderKeys[]> {
  const q = excludeOrderId ? ordersByStudyUidExcludingQ : ordersByStudyUidQ;
  return (await q(db, { key: uid, exclude: excludeOrderId })).rows;
}

/** The studies with this accession number (at most 10). */
export async function studiesByAccession(db: Db, accession: string): Promise<StudyKeys[]> {
  return (await studiesByAccessionQ(db, { accession })).rows;
}

export async function studyKeysByUid(db: Db, uid: string): Promise<StudyKeys | undefined> {
  return (await studyByUidQ(db, { uid })).rows[0];
}

export async function studyAccession(db: Db, studyInstanceUid: string): Promise<{ study_instance_uid: string; accession_number: string | null } | undefined> {
  return db.selectFrom('studies').select(['study_instance_uid', 'accession_number']).where('study_instance_uid', '=', studyInstanceUid).executeTakeFirst();
}

/** The accession numbers of the orders (not held) that name this study. */
export async function orderAccessionsOfStudy(db: Db, studyInstanceUid: string): Promise<(string | null)[]> {
  const rows = await db
    .selectFrom('orders')
    .select('accession_number')
    .where('study_instance_uid', '=', studyInstanceUid)
    .where('link_state', '<>', LinkState.held)
    .execute();
  return rows.map((r) => r.accession_number);
}

const linkItemColumns = ['id', 'message_id', 'accession_number', 'study_instance_uid', 'patient_id', 'patient_id_authority', 'patient_identifiers'] as const;

/** Pending rows of `table` that name this study, or one of `accessions`, in id order. */
export async function pendingItemsNaming(db: Db, table: LinkTable, studyInstanceUid: string, accessions: readonly string[]): Promise<LinkItem[]> {
  return db
    .selectFrom(table)
    .select(linkItemColumns)
    .where('link_state', '=', LinkState.pending)
    .where((eb) => {
      const ors = [eb('study_instance_uid', '=', studyInstanceUid)];
      if (accessions.length > 0) ors.push(eb('accession_number', 'in', [...accessions]));
      return eb.or(ors);
    })
    .orderBy('id')
    .execute();
}

/**
 * Held rows of `table` for this patient id, in id order, except those held
 * with a hold reason starting with `keepPrefix` (they stay held whatever happens).
 */
export async function heldItemsOfPatient(db: Db, table: LinkTable, patientId: string, keepPrefix: string): Promise<LinkItem[]> {
  return db
    .selectFrom(table)
    .select(linkItemColumns)
    .where('link_state', '=', LinkState.held)
    .where('patient_id', '=', patientId)
    .where((eb) => eb.or([eb('hold_reason', 'is', null), eb('hold_reason', 'not like', `${keepPrefix}%`)]))
    .orderBy('id')
    .execute();
}

export async function setLink(db: Db, table: LinkTable, id: string, columns: LinkColumns, now: string): Promise<void> {
  await db
    .updateTable(table)
    .set({ ...columns, updated_at: now })
    .where('id', '=', id)
    .execute();
}

/** One held row of `table` from this message (its hold reason), if any. */
export async function heldItemOfMessage(db: Db, table: LinkTable, messageId: string): Promise<{ hold_reason: string | null } | undefined> {
  return db.selectFrom(table).select('hold_reason').where('message_id', '=', messageId).where('link_state', '=', LinkState.held).executeTakeFirst();
}

/** Sets a message's status from its items' links; rejected and duplicate messages keep theirs. */
export async function setLinkedMessageStatus(db: Db, id: string, status: MessageStatus, reason: string | null, now: string): Promise<void> {
  await db
    .updateTable('hl7_messages')
    .set({ status, reason, updated_at: now })
    .where('id', '=', id)
    .where('status', 'in', [MessageStatus.applied, MessageStatus.held])
    .execute();
}

/** Pending items whose study exists already (a missed study event, or one that failed): used at start-up. */
export async function studiesWithPendingItems(db: Db): Promise<string[]> {
  const uids = new Set<string>();
  for (const table of linkTables) {
    const byUid = await db
      .selectFrom(table)
      .innerJoin('studies', 'studies.study_instance_uid', `${table}.study_instance_uid`)
      .select('studies.study_instance_uid as uid')
      .where(`${table}.link_state`, '=', LinkState.pending)
      .execute();
    const byAccession = await db
      .selectFrom(table)
      .innerJoin('studies', 'studies.accession_number', `${table}.accession_number`)
      .select('studies.study_instance_uid as uid')
      .where(`${table}.link_state`, '=', LinkState.pending)
      .execute();
    for (const r of [...byUid, ...byAccession]) uids.add(r.uid);
  }
  return [...uids];
}
