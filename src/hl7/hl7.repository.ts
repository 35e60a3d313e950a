import { sql, type Insertable } from 'kysely';
import type { Db } from '../db/database.js';
import type { CodedValue, Person } from './hl7-parse.js';
import {
  LinkState,
  MessageStatus,
  type AiResultRow,
  type Hl7MessageRow,
  type Hl7MessageTable,
  type OrderRow,
  type OrderTable,
  type ReportVersionRow,
  type ReportVersionTable,
  type AiResultTable,
  type PatientMergeTable,
} from './hl7.table.js';

/**
 * The earlier message with the same duplicate key that we acted on (applied or
 * held). The WHERE repeats the partial unique index's condition so SQLite can use it.
 */
export async function findAcceptedMessage(
  db: Db,
  senderApplication: string,
  senderFacility: string,
  controlId: string,
): Promise<Pick<Hl7MessageRow, 'id' | 'raw' | 'status'> | undefined> {
  return db
    .selectFrom('hl7_messages')
    .select(['id', 'raw', 'status'])
    .where('sender_application', '=', senderApplication)
    .where('sender_facility', '=', senderFacility)
    .where('control_id', '=', controlId)
    .where('status', '<>', sql.lit(MessageStatus.rejected))
    .where('status', '<>', sql.lit(MessageStatus.duplicate))
    .executeTakeFirst();
}

export async function insertMessage(db: Db, row: Insertable<Hl7MessageTable>): Promise<void> {
  await db.insertInto('hl7_messages').values(row).execute();
}

/**
 * Inserts an applied/held message unless one with the same duplicate key is
 * already there: one statement instead of a look-up and an insert on the hot
 * path (the partial unique index decides). Returns false for a duplicate.
 */
export async function insertMessageUnlessDuplicate(db: Db, row: Insertable<Hl7MessageTable>): Promise<boolean> {
  const r = await db
    .insertInto('hl7_messages')
    .values(row)
    .onConflict((oc) =>
      oc
        .columns(['sender_application', 'sender_facility', 'control_id'])
        // Literals, not parameters: SQLite matches a partial index only against the same constant terms.
        .where('status', '<>', sql.lit(MessageStatus.rejected))
        .where('status', '<>', sql.lit(MessageStatus.duplicate))
        .doNothing(),
    )
    .executeTakeFirst();
  return Number(r.numInsertedOrUpdatedRows ?? 0n) > 0;
}

export async function setMessageStatus(db: Db, id: string, status: MessageStatus, reason: string | null, studyUid: string | null, now: string): Promise<void> {
  await db.updateTable('hl7_messages').set({ status, reason, study_instance_uid: studyUid, updated_at: now }).where('id', '=', id).execute();
}

/** The order an incoming ORM/OMI updates: same accession, else same placer order number (held ones never). */
export async function findOrderToUpdate(
  db: Db,
  keys: { accessionNumber: string | null; placerOrderNumber: string | null; studyInstanceUid: string | null },
): Promise<OrderRow | undefined> {
  const base = () => db.selectFrom('orders').selectAll().where('link_state', '<>', LinkState.held).orderBy('id', 'desc');
  if (keys.accessionNumber) return base().where('accession_number', '=', keys.accessionNumber).executeTakeFirst();
  if (keys.placerOrderNumber) return base().where('placer_order_number', '=', keys.placerOrderNumber).executeTakeFirst();
  if (keys.studyInstanceUid) return base().where('study_instance_uid', '=', keys.studyInstanceUid).executeTakeFirst();
  return undefined;
}

export async function insertOrder(db: Db, row: Insertable<OrderTable>): Promise<void> {
  await db.insertInto('orders').values(row).execute();
}

export async function updateOrder(db: Db, id: string, changes: Partial<Omit<OrderTable, 'id'>>): Promise<void> {
  await db.updateTable('orders').set(changes).where('id', '=', id).execute();
}

export async function insertReportVersion(db: Db, row: Insertable<ReportVersionTable>): Promise<void> {
  await db.insertInto('report_versions').values(row).execute();
}

export async function insertAiResults(db: Db, rows: Insertable<AiResultTable>[]): Promise<void> {
  if (rows.length > 0) await db.insertInto('ai_results').values(rows).execute();
}

export async function insertPatientMerge(db: Db, row: Insertable<PatientMergeTable>): Promise<void> {
  await db.insertInto('patient_merges').values(row).execute();
}

/** Applies an A40 to every patient id we hold; returns how many studies and other records changed. */
export async function applyPatientMerge(db: Db, priorId: string, newId: string, now: string): Promise<{ studies: number; records: number }> {
  const s = await db.updateTable('studies').set({ patient_id: newId, updated_at: now }).where('patient_id', '=', priorId).executeTakeFirst();
  let records = 0;
  for (const table of ['orders', 'report_versions', 'ai_results'] as const) {
    const r = await db.updateTable(table).set({ patient_id: newId, updated_at: now }).where('patient_id', '=', priorId).executeTakeFirst();
    records += Number(r.numUpdatedRows);
  }
  return { studies: Number(s.numUpdatedRows), records };
}

export async function ordersOfStudy(db: Db, studyInstanceUid: string): Promise<OrderRow[]> {
  return db.selectFrom('orders').selectAll().where('linked_study_uid', '=', studyInstanceUid).orderBy('id').execute();
}

/** Every linked version of the primary report, oldest first. */
export async function reportVersionsOfStudy(db: Db, studyInstanceUid: string): Promise<ReportVersionRow[]> {
  return db.selectFrom('report_versions').selectAll().where('linked_study_uid', '=', studyInstanceUid).orderBy('id').execute();
}

export async function aiResultsOfStudy(db: Db, studyInstanceUid: string): Promise<AiResultRow[]> {
  return db.selectFrom('ai_results').selectAll().where('linked_study_uid', '=', studyInstanceUid).orderBy('id').execute();
}

export interface MessageFilter {
  statuses: readonly MessageStatus[];
  limit: number;
  offset: number;
}

export async function listMessages(db: Db, f: MessageFilter): Promise<Hl7MessageRow[]> {
  return db
    .selectFrom('hl7_messages')
    .selectAll()
    .where('status', 'in', [...f.statuses])
    .orderBy('id', 'desc')
    .limit(f.limit)
    .offset(f.offset)
    .execute();
}

const statusRank: Record<string, number> = { P: 0, F: 1, C: 2, X: 3 };

/**
 * The version the study shows: the last received, except that a preliminary
 * arriving after a final or corrected one (a late resend) does not replace it.
 */
export function currentReportVersion<T extends { result_status: string }>(versionsOldestFirst: readonly T[]): T | undefined {
  let current: T | undefined;
  for (const v of versionsOldestFirst) {
    if (current && v.result_status === 'P' && (statusRank[current.result_status] ?? 0) > 0) continue;
    current = v;
  }
  return current;
}

export const json = {
  coded: (v: CodedValue[]): string => JSON.stringify(v),
  parseCoded: (text: string | null): CodedValue[] => {
    if (!text) return [];
    try {
      const v: unknown = JSON.parse(text);
      return Array.isArray(v) ? (v as CodedValue[]) : [];
    } catch {
      return [];
    }
  },
};

export function personName(p: Person | null): string | null {
  if (!p) return null;
  const name = [p.givenName, p.familyName].filter(Boolean).join(' ');
  return name || null;
}
