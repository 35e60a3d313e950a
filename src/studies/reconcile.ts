import { sql } from 'kysely';
import type { Db } from '../db/database.js';
import { LinkState, MessageStatus } from '../states.js';
import { param, precompiled } from '../hl7/precompiled.js';

/**
 * Linking orders, primary reports and AI results to studies. They arrive in
 * any order; the link is by accession number first, then StudyInstanceUID
 * (either may come from the order when the message itself lacks it), and the
 * patient id is a consistency check. Linking a report to another patient's
 * study is the worst mistake this product can make, so any contradiction
 * holds the item for review instead of guessing.
 *
 * Every function takes the caller's transaction: the decision and the write
 * that follows it are one atomic step.
 */
export interface LinkRequest {
  accessionNumber: string | null;
  studyInstanceUid: string | null;
  patientId: string | null;
  /** When deciding for an existing order, its own row does not count as "the order with the same accession". */
  excludeOrderId?: string;
}

export type LinkDecision =
  | { state: typeof LinkState.linked; studyInstanceUid: string }
  | { state: typeof LinkState.pending }
  | { state: typeof LinkState.held; reason: string };

const linkTables = ['orders', 'report_versions', 'ai_results'] as const;
type LinkTable = (typeof linkTables)[number];

// The linking look-ups run for every order, report and AI result: built once (precompiled.ts).
const mergeSuccessorQ = precompiled<{ prior: string }, { patient_id: string }>((db) =>
  db.selectFrom('patient_merges').select('patient_id').where('prior_patient_id', '=', param('prior')).orderBy('applied_at', 'desc').orderBy('id', 'desc').limit(1),
);
type OrderKeys = { id: string; accession_number: string | null; study_instance_uid: string | null; patient_id: string | null };
const ordersWith = (column: 'accession_number' | 'study_instance_uid', excluding: boolean) =>
  precompiled<{ key: string; exclude?: string }, OrderKeys>((db) => {
    const q = db
      .selectFrom('orders')
      .select(['id', 'accession_number', 'study_instance_uid', 'patient_id'])
      .where('link_state', '<>', LinkState.held)
      .where(column, '=', param('key'));
    return excluding ? q.where('id', '<>', param('exclude')) : q;
  });
const ordersByStudyUidQ = ordersWith('study_instance_uid', false);
const ordersByStudyUidExcludingQ = ordersWith('study_instance_uid', true);
type StudyKeys = { study_instance_uid: string; accession_number: string | null; patient_id: string | null };
const studiesByAccessionQ = precompiled<{ accession: string }, StudyKeys>((db) =>
  db.selectFrom('studies').select(['study_instance_uid', 'accession_number', 'patient_id']).where('accession_number', '=', param('accession')).limit(10),
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
      .select([sql.lit('order').as('source'), 'id', 'accession_number', 'study_instance_uid', 'patient_id'])
      .where('link_state', '<>', LinkState.held)
      .where('accession_number', '=', param('accession'));
    if (excluding) orders = orders.where('id', '<>', param('exclude'));
    // A compound SELECT takes LIMIT only on the whole, hence the subquery (same limit as studiesByAccessionQ).
    const studies = db
      .selectFrom((eb) =>
        eb.selectFrom('studies').select(['study_instance_uid', 'accession_number', 'patient_id']).where('accession_number', '=', param('accession')).limit(10).as('s'),
      )
      .select([sql.lit('study').as('source'), sql<string>`null`.as('id'), 's.accession_number', 's.study_instance_uid', 's.patient_id']);
    return orders.unionAll(studies as never);
  });
const ordersAndStudiesByAccessionQ = ordersAndStudiesWith(false);
const ordersAndStudiesByAccessionExcludingQ = ordersAndStudiesWith(true);
const studyByUidQ = precompiled<{ uid: string }, StudyKeys>((db) =>
  db.selectFrom('studies').select(['study_instance_uid', 'accession_number', 'patient_id']).where('study_instance_uid', '=', param('uid')),
);

/** Follows A40 merges (prior -> surviving id), so an id a merge retired still matches its successor. */
export async function canonicalPatientId(db: Db, id: string): Promise<string> {
  let current = id;
  const seen = new Set<string>([id]);
  for (let hop = 0; hop < 8; hop++) {
    const next = (await mergeSuccessorQ(db, { prior: current })).rows[0];
    if (!next || seen.has(next.patient_id)) break;
    current = next.patient_id;
    seen.add(current);
  }
  return current;
}

export async function samePatient(db: Db, a: string, b: string): Promise<boolean> {
  if (a === b) return true;
  return (await canonicalPatientId(db, a)) === (await canonicalPatientId(db, b));
}

/**
 * Where an item with these keys belongs now: linked to one study, pending (no
 * study yet), or held with a reason an operator can act on. Reasons name the
 * contradiction, never the identifiers themselves (they go to logs and lists).
 */
export async function decideLink(db: Db, req: LinkRequest): Promise<LinkDecision> {
  let accession = req.accessionNumber;
  let uid = req.studyInstanceUid;

  // Studies with the accession the request names (fetched with the orders); the accession below never differs from it.
  let studiesWithAccession: StudyKeys[] | undefined;
  // Orders we accepted earlier tell us the other key, and whose patient this accession is.
  if (accession || uid) {
    let orders: OrderKeys[];
    if (accession) {
      const q = req.excludeOrderId ? ordersAndStudiesByAccessionExcludingQ : ordersAndStudiesByAccessionQ;
      const rows = (await q(db, { accession, exclude: req.excludeOrderId })).rows;
      orders = rows.filter((r) => r.source === 'order');
      studiesWithAccession = rows.filter((r) => r.source === 'study') as StudyKeys[];
    } else {
      const q = req.excludeOrderId ? ordersByStudyUidExcludingQ : ordersByStudyUidQ;
      orders = (await q(db, { key: uid!, exclude: req.excludeOrderId })).rows;
    }
    for (const o of orders) {
      if (req.patientId && o.patient_id && !(await samePatient(db, req.patientId, o.patient_id))) {
        return { state: LinkState.held, reason: 'patient id differs from the order with the same accession number' };
      }
      if (accession && uid && o.study_instance_uid && o.study_instance_uid !== uid) {
        return { state: LinkState.held, reason: 'StudyInstanceUID differs from the order with the same accession number' };
      }
      uid ??= o.study_instance_uid;
      accession ??= o.accession_number;
    }
  }

  let study: { study_instance_uid: string; accession_number: string | null; patient_id: string | null } | undefined;
  if (accession) {
    const byAccession = studiesWithAccession ?? (await studiesByAccessionQ(db, { accession })).rows;
    if (byAccession.length > 1) {
      study = uid ? byAccession.find((s) => s.study_instance_uid === uid) : undefined;
      if (!study) return { state: LinkState.held, reason: `accession number matches ${byAccession.length} studies` };
    } else {
      study = byAccession[0];
    }
    if (study && uid && study.study_instance_uid !== uid) {
      return { state: LinkState.held, reason: 'accession number and StudyInstanceUID point to different studies' };
    }
  }
  if (!study && uid) {
    study = (await studyByUidQ(db, { uid })).rows[0];
    if (study && accession && study.accession_number && study.accession_number !== accession) {
      return { state: LinkState.held, reason: 'the study with this StudyInstanceUID has a different accession number' };
    }
  }
  if (!study) return { state: LinkState.pending };

  if (study.patient_id) {
    if (!req.patientId) return { state: LinkState.held, reason: 'message has no patient id (PID-3) to check against the study' };
    if (!(await samePatient(db, req.patientId, study.patient_id))) {
      return { state: LinkState.held, reason: "patient id differs from the study's patient id" };
    }
  }
  return { state: LinkState.linked, studyInstanceUid: study.study_instance_uid };
}

export function linkColumns(d: LinkDecision): { link_state: LinkState; linked_study_uid: string | null; hold_reason: string | null } {
  return {
    link_state: d.state,
    linked_study_uid: d.state === LinkState.linked ? d.studyInstanceUid : null,
    hold_reason: d.state === LinkState.held ? d.reason : null,
  };
}

export interface ReconcileResult {
  linked: number;
  held: number;
  /** Messages whose items changed, so their status can be refreshed. */
  messageIds: string[];
}

/**
 * A study appeared (or an order just told us its other key): every pending
 * order, report and AI result that names it is decided again. Orders first,
 * because a report may reach the study only through its order.
 */
export async function linkPendingForStudy(db: Db, studyInstanceUid: string, now: string): Promise<ReconcileResult> {
  const study = await db
    .selectFrom('studies')
    .select(['study_instance_uid', 'accession_number'])
    .where('study_instance_uid', '=', studyInstanceUid)
    .executeTakeFirst();
  const result: ReconcileResult = { linked: 0, held: 0, messageIds: [] };
  if (!study) return result;
  const accessions = new Set<string>();
  if (study.accession_number) accessions.add(study.accession_number);
  const viaOrders = await db
    .selectFrom('orders')
    .select('accession_number')
    .where('study_instance_uid', '=', studyInstanceUid)
    .where('link_state', '<>', LinkState.held)
    .execute();
  for (const o of viaOrders) if (o.accession_number) accessions.add(o.accession_number);

  for (const table of linkTables) {
    const rows = await db
      .selectFrom(table)
      .select(['id', 'message_id', 'accession_number', 'study_instance_uid', 'patient_id'])
      .where('link_state', '=', LinkState.pending)
      .where((eb) => {
        const ors = [eb('study_instance_uid', '=', studyInstanceUid)];
        if (accessions.size > 0) ors.push(eb('accession_number', 'in', [...accessions]));
        return eb.or(ors);
      })
      .orderBy('id')
      .execute();
    await redecide(db, table, rows, LinkState.pending, now, result);
  }
  return result;
}

/**
 * An A40 merge may dissolve a contradiction that held an item: those held for
 * the surviving patient id are decided again. Holds for other reasons stay.
 */
export async function reconsiderHeldForPatient(db: Db, patientId: string, now: string): Promise<ReconcileResult> {
  const result: ReconcileResult = { linked: 0, held: 0, messageIds: [] };
  for (const table of linkTables) {
    const rows = await db
      .selectFrom(table)
      .select(['id', 'message_id', 'accession_number', 'study_instance_uid', 'patient_id'])
      .where('link_state', '=', LinkState.held)
      .where('patient_id', '=', patientId)
      .orderBy('id')
      .execute();
    await redecide(db, table, rows, LinkState.held, now, result);
  }
  return result;
}

/**
 * Decides each row's link again and stores the decisions that move it out of
 * `unchanged` (its current state), counting them in `result`.
 */
async function redecide(
  db: Db,
  table: LinkTable,
  rows: readonly { id: string; message_id: string; accession_number: string | null; study_instance_uid: string | null; patient_id: string | null }[],
  unchanged: LinkState,
  now: string,
  result: ReconcileResult,
): Promise<void> {
  for (const row of rows) {
    const d = await decideLink(db, {
      accessionNumber: row.accession_number,
      studyInstanceUid: row.study_instance_uid,
      patientId: row.patient_id,
      excludeOrderId: table === 'orders' ? row.id : undefined,
    });
    if (d.state === unchanged) continue;
    await setLink(db, table, row.id, d, now);
    if (d.state === LinkState.linked) result.linked++;
    else if (d.state === LinkState.held) result.held++;
    result.messageIds.push(row.message_id);
  }
}

async function setLink(db: Db, table: LinkTable, id: string, d: LinkDecision, now: string): Promise<void> {
  await db
    .updateTable(table)
    .set({ ...linkColumns(d), updated_at: now })
    .where('id', '=', id)
    .execute();
}

/**
 * A message is `held` while any item it carries is held (with that item's
 * reason), `applied` otherwise. Rejected and duplicate messages keep their status.
 */
export async function refreshMessageStatus(db: Db, messageIds: readonly string[], now: string): Promise<void> {
  for (const id of new Set(messageIds)) {
    let reason: string | null = null;
    for (const table of linkTables) {
      const held = await db
        .selectFrom(table)
        .select('hold_reason')
        .where('message_id', '=', id)
        .where('link_state', '=', LinkState.held)
        .executeTakeFirst();
      if (held) {
        reason = held.hold_reason ?? 'held';
        break;
      }
    }
    await db
      .updateTable('hl7_messages')
      .set({ status: reason ? MessageStatus.held : MessageStatus.applied, reason, updated_at: now })
      .where('id', '=', id)
      .where('status', 'in', [MessageStatus.applied, MessageStatus.held])
      .execute();
  }
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
