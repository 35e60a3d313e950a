import { sql, type Insertable } from 'kysely';
import type { Db } from '../db/database.js';
import { storableText } from '../db/dialect.js';
import type { CodedValue, Person } from './hl7-parse.js';
import { param, precompiled } from '../db/precompiled.js';
import { LinkState, MessageStatus, type CaseState } from '../states.js';
import {
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
    .where('reuse_of', 'is', null)
    .executeTakeFirst();
}

export async function insertMessage(db: Db, row: Insertable<Hl7MessageTable>): Promise<void> {
  await db
    .insertInto('hl7_messages')
    .values({ ...row, raw: storableText(row.raw) })
    .execute();
}

/** Every column of a table, checked by the compiler: the hot inserts bind all of them (undefined as NULL). */
type AllColumns<T> = Record<keyof T, true>;
const messageColumns: AllColumns<Hl7MessageTable> = {
  id: true,
  sender_application: true,
  sender_facility: true,
  control_id: true,
  message_type: true,
  kind: true,
  hl7_version: true,
  status: true,
  reason: true,
  ack_code: true,
  study_instance_uid: true,
  accession_number: true,
  remote_address: true,
  raw: true,
  reuse_of: true,
  received_at: true,
  updated_at: true,
};
const linkableColumns = {
  accession_number: true,
  study_instance_uid: true,
  placer_order_number: true,
  filler_order_number: true,
  patient_id: true,
  patient_id_authority: true,
  patient_identifiers: true,
  link_state: true,
  linked_study_uid: true,
  hold_reason: true,
} as const;
const orderColumns: AllColumns<OrderTable> = {
  id: true,
  message_id: true,
  sender_application: true,
  ...linkableColumns,
  order_control: true,
  order_status: true,
  procedure_code: true,
  procedure_text: true,
  modality: true,
  priority: true,
  reason_for_study: true,
  relevant_clinical_info: true,
  diagnoses: true,
  referring_physician_id: true,
  referring_physician_name: true,
  second_opinion_requested: true,
  cancelled_at: true,
  created_at: true,
  updated_at: true,
};
const reportVersionColumns: AllColumns<ReportVersionTable> = {
  id: true,
  message_id: true,
  sender_application: true,
  ...linkableColumns,
  result_status: true,
  report_text: true,
  radiologist_id: true,
  radiologist_name: true,
  procedure_code: true,
  procedure_text: true,
  reason_for_study: true,
  diagnoses: true,
  observed_at: true,
  received_at: true,
  updated_at: true,
};

/** A row of `param`s, one per column. */
function paramRow<T>(columns: AllColumns<T>): T {
  return Object.fromEntries(Object.keys(columns).map((c) => [c, param(c)])) as T;
}

const insertMessageUnlessDuplicateQ = precompiled<Insertable<Hl7MessageTable>>((db) =>
  db
    .insertInto('hl7_messages')
    .values(paramRow(messageColumns))
    .onConflict((oc) =>
      oc
        .columns(['sender_application', 'sender_facility', 'control_id'])
        // Literals, not parameters: SQLite matches a partial index only against the same constant terms.
        .where('status', '<>', sql.lit(MessageStatus.rejected))
        .where('status', '<>', sql.lit(MessageStatus.duplicate))
        .where('reuse_of', 'is', null)
        .doNothing(),
    ),
);

/**
 * Inserts an applied/held message unless one with the same duplicate key is
 * already there: one statement instead of a look-up and an insert on the hot
 * path (the partial unique index decides). Returns false for a duplicate.
 */
export async function insertMessageUnlessDuplicate(db: Db, row: Insertable<Hl7MessageTable>): Promise<boolean> {
  const r = await insertMessageUnlessDuplicateQ(db, { ...row, raw: storableText(row.raw) });
  return Number(r.numAffectedRows ?? 0n) > 0;
}

const setMessageStatusQ = precompiled<{ id: string; status: MessageStatus; reason: string | null; studyUid: string | null; now: string }>((db) =>
  db
    .updateTable('hl7_messages')
    .set({ status: param('status'), reason: param('reason'), study_instance_uid: param('studyUid'), updated_at: param('now') })
    .where('id', '=', param('id')),
);

export async function setMessageStatus(db: Db, id: string, status: MessageStatus, reason: string | null, studyUid: string | null, now: string): Promise<void> {
  await setMessageStatusQ(db, { id, status, reason, studyUid, now });
}

export async function setMessageAckCode(db: Db, id: string, ackCode: string): Promise<void> {
  await db.updateTable('hl7_messages').set({ ack_code: ackCode }).where('id', '=', id).execute();
}

/** The studies the items (orders, reports, AI results) of these messages are linked to, each once. */
export async function linkedStudiesOfMessages(db: Db, messageIds: readonly string[]): Promise<string[]> {
  if (messageIds.length === 0) return [];
  const out = new Set<string>();
  for (const table of ['orders', 'report_versions', 'ai_results'] as const) {
    const rows = await db
      .selectFrom(table)
      .select('linked_study_uid')
      .where('message_id', 'in', [...messageIds])
      .where('linked_study_uid', 'is not', null)
      .execute();
    for (const r of rows) if (r.linked_study_uid) out.add(r.linked_study_uid);
  }
  return [...out];
}

/** The order an incoming ORM/OMI updates: same accession, else same placer order number (held ones never). */
export async function findOrderToUpdate(
  db: Db,
  keys: { accessionNumber: string | null; placerOrderNumber: string | null; studyInstanceUid: string | null },
): Promise<OrderRow | undefined> {
  if (keys.accessionNumber) return (await orderByAccessionQ(db, { key: keys.accessionNumber })).rows[0];
  if (keys.placerOrderNumber) return (await orderByPlacerQ(db, { key: keys.placerOrderNumber })).rows[0];
  if (keys.studyInstanceUid) return (await orderByStudyUidQ(db, { key: keys.studyInstanceUid })).rows[0];
  return undefined;
}

const orderBy = (column: 'accession_number' | 'placer_order_number' | 'study_instance_uid') =>
  precompiled<{ key: string }, OrderRow>((db) =>
    db.selectFrom('orders').selectAll().where('link_state', '<>', LinkState.held).where(column, '=', param('key')).orderBy('id', 'desc').limit(1),
  );
const orderByAccessionQ = orderBy('accession_number');
const orderByPlacerQ = orderBy('placer_order_number');
const orderByStudyUidQ = orderBy('study_instance_uid');

const insertOrderQ = precompiled<Insertable<OrderTable>>((db) => db.insertInto('orders').values(paramRow(orderColumns)));

export async function insertOrder(db: Db, row: Insertable<OrderTable>): Promise<void> {
  await insertOrderQ(db, row);
}

export async function updateOrder(db: Db, id: string, changes: Partial<Omit<OrderTable, 'id'>>): Promise<void> {
  await db.updateTable('orders').set(changes).where('id', '=', id).execute();
}

const insertReportVersionQ = precompiled<Insertable<ReportVersionTable>>((db) => db.insertInto('report_versions').values(paramRow(reportVersionColumns)));

export async function insertReportVersion(db: Db, row: Insertable<ReportVersionTable>): Promise<void> {
  await insertReportVersionQ(db, row);
}

export async function insertAiResults(db: Db, rows: Insertable<AiResultTable>[]): Promise<void> {
  if (rows.length > 0) await db.insertInto('ai_results').values(rows).execute();
}

export async function insertPatientMerge(db: Db, row: Insertable<PatientMergeTable>): Promise<void> {
  await db.insertInto('patient_merges').values(row).execute();
}

/**
 * Applies an A40/A34 to every patient id we hold; returns how many studies and
 * other records changed. A prior id with an authority (MRG-1 CX.4) moves only
 * rows of that authority or of none: the same id under another authority is
 * another patient. Moved rows take the survivor's authority when it has one.
 */
export async function applyPatientMerge(
  db: Db,
  prior: { id: string; authority: string | null },
  survivor: { id: string; authority: string | null },
  now: string,
): Promise<{ studies: number; records: number }> {
  let sq = db
    .updateTable('studies')
    .set({ patient_id: survivor.id, ...(survivor.authority ? { issuer_of_patient_id: survivor.authority } : {}), updated_at: now })
    .where('patient_id', '=', prior.id);
  if (prior.authority) sq = sq.where((eb) => eb.or([eb('issuer_of_patient_id', 'is', null), eb('issuer_of_patient_id', '=', prior.authority)]));
  const s = await sq.executeTakeFirst();
  let records = 0;
  for (const table of ['orders', 'report_versions', 'ai_results'] as const) {
    let q = db
      .updateTable(table)
      .set({ patient_id: survivor.id, ...(survivor.authority ? { patient_id_authority: survivor.authority } : {}), updated_at: now })
      .where('patient_id', '=', prior.id);
    if (prior.authority) q = q.where((eb) => eb.or([eb('patient_id_authority', 'is', null), eb('patient_id_authority', '=', prior.authority)]));
    const r = await q.executeTakeFirst();
    records += Number(r.numUpdatedRows);
  }
  return { studies: Number(s.numUpdatedRows), records };
}

/** Orders of a study the RIS has not cancelled (a grouped procedure has several). */
export async function liveOrdersOfStudy(db: Db, studyInstanceUid: string): Promise<number> {
  const r = await db
    .selectFrom('orders')
    .select((eb) => eb.fn.countAll<string | number>().as('n'))
    .where('linked_study_uid', '=', studyInstanceUid)
    .where('link_state', '=', LinkState.linked)
    .where('cancelled_at', 'is', null)
    .executeTakeFirst();
  return Number(r?.n ?? 0);
}

/** The orders linked to a study and how many of them the RIS cancelled (ORC-1 CA/DC/OC). */
export async function orderCountsOfStudy(db: Db, studyInstanceUid: string): Promise<{ linked: number; cancelled: number }> {
  const r = await db
    .selectFrom('orders')
    .select((eb) => [eb.fn.countAll<string | number>().as('linked'), eb.fn.count<string | number>('cancelled_at').as('cancelled')])
    .where('linked_study_uid', '=', studyInstanceUid)
    .where('link_state', '=', LinkState.linked)
    .executeTakeFirst();
  return { linked: Number(r?.linked ?? 0), cancelled: Number(r?.cancelled ?? 0) };
}

/** Cases of a study, oldest first (any state: the caller decides which can move). */
export async function casesOfStudy(db: Db, studyInstanceUid: string): Promise<{ id: string; state: CaseState }[]> {
  return db.selectFrom('cases').select(['id', 'state']).where('study_instance_uid', '=', studyInstanceUid).orderBy('id').execute();
}

/**
 * The study a final (F/C) primary report of this order was linked to: by the
 * order's accession, else its StudyInstanceUID, else the study the new item
 * linked to. Null when no final report of the order is linked.
 */
export async function finalReportStudyOfOrder(
  db: Db,
  keys: { accessionNumber: string | null; studyInstanceUid: string | null; linkedStudyUid: string | null },
): Promise<string | null> {
  const q = db
    .selectFrom('report_versions')
    .select('linked_study_uid')
    .where('link_state', '=', LinkState.linked)
    .where('result_status', 'in', ['F', 'C'])
    .orderBy('id', 'desc')
    .limit(1);
  const tries: ['accession_number' | 'study_instance_uid' | 'linked_study_uid', string | null][] = [
    ['accession_number', keys.accessionNumber],
    ['study_instance_uid', keys.studyInstanceUid],
    ['linked_study_uid', keys.linkedStudyUid],
  ];
  for (const [column, value] of tries) {
    if (!value) continue;
    const row = await q.where(column, '=', value).executeTakeFirst();
    if (row?.linked_study_uid) return row.linked_study_uid;
  }
  return null;
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
