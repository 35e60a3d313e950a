import type { Db } from '../db/database.js';
import { LinkState, MessageStatus } from '../states.js';
import {
  heldItemOfMessage,
  heldItemsOfPatient,
  linkTables,
  mergeSuccessors,
  orderAccessionsOfStudy,
  ordersAndStudiesByAccession,
  ordersByStudyUid,
  pendingItemsNaming,
  setLink,
  setLinkedMessageStatus,
  studiesByAccession,
  studyAccession,
  studyKeysByUid,
  type LinkColumns,
  type LinkItem,
  type LinkTable,
  type OrderKeys,
  type StudyKeys,
} from './reconcile.repository.js';

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
  /** The selected patient id (PID-3 repetition of the configured authority, else the first). */
  patientId: string | null;
  patientAuthority?: string | null;
  /** Every identifier the item carries (all PID-3 repetitions); when absent, just patientId with patientAuthority. */
  patientIds?: readonly PatientKey[];
  /** When deciding for an existing order, its own row does not count as "the order with the same accession". */
  excludeOrderId?: string;
  /**
   * The item is an order from the RIS naming both its accession and the StudyInstanceUID: that pairing is
   * the RIS's own statement, so a study that carries another accession of the same grouped procedure links.
   */
  isOrder?: boolean;
}

/** A patient id with its assigning authority (HL7 CX.4, DICOM Issuer of Patient ID); null: none given. */
export interface PatientKey {
  id: string;
  authority: string | null;
}

/**
 * Identifiers from a stored JSON list (`[{id, authority|issuer, type}]`: orders' PID-3 repetitions,
 * studies' Other Patient IDs) plus the row's own id and authority, first, without repeats.
 */
export function patientKeys(id: string | null, authority: string | null, listJson?: string | null): PatientKey[] {
  const out: PatientKey[] = [];
  const add = (k: PatientKey) => {
    if (!out.some((o) => o.id === k.id && o.authority === k.authority)) out.push(k);
  };
  if (id) add({ id, authority: authority || null });
  if (listJson) {
    try {
      const v: unknown = JSON.parse(listJson);
      if (Array.isArray(v)) {
        for (const e of v as { id?: unknown; authority?: unknown; issuer?: unknown }[]) {
          if (typeof e?.id !== 'string' || e.id === '') continue;
          const a = typeof e.authority === 'string' ? e.authority : typeof e.issuer === 'string' ? e.issuer : null;
          add({ id: e.id, authority: a || null });
        }
      }
    } catch {
      // A list we cannot read adds nothing; the row's own id still counts.
    }
  }
  return out;
}

function requestKeys(req: LinkRequest): PatientKey[] {
  if (req.patientIds && req.patientIds.length > 0) return [...req.patientIds];
  return req.patientId ? [{ id: req.patientId, authority: req.patientAuthority ?? null }] : [];
}

export type LinkDecision =
  { state: typeof LinkState.linked; studyInstanceUid: string } | { state: typeof LinkState.pending } | { state: typeof LinkState.held; reason: string };

/** Hold reason (prefix) of a report with an OBX-11 W observation. */
export const WRONG_PATIENT_RESULT = 'wrong-patient-result';

/** Two authorities are compatible when they are equal or either is unknown (then the id alone decides). */
function authoritiesAgree(a: string | null, b: string | null): boolean {
  return a === null || b === null || a === b;
}

/**
 * Follows A40/A34 merges (prior -> surviving id), so an id a merge retired
 * still matches its successor. A merge whose MRG-1 named an authority retires
 * that authority's id only.
 */
export async function canonicalPatient(db: Db, key: PatientKey): Promise<PatientKey> {
  let current = key;
  const seen = new Set<string>([`${key.id}\u0000${key.authority ?? ''}`]);
  for (let hop = 0; hop < 8; hop++) {
    const merges = await mergeSuccessors(db, current.id);
    const next = merges.find((m) => authoritiesAgree(m.prior_authority, current.authority));
    if (!next) break;
    const k: PatientKey = { id: next.patient_id, authority: next.authority ?? current.authority };
    const tag = `${k.id}\u0000${k.authority ?? ''}`;
    if (seen.has(tag)) break;
    seen.add(tag);
    current = k;
  }
  return current;
}

/**
 * The identifier a patient is known by now, after A40/A34 merges: the
 * write-back's PID carries it, not an id the RIS has retired.
 */
export async function survivingPatientId(db: Db, id: string, authority: string | null): Promise<PatientKey> {
  return canonicalPatient(db, { id, authority });
}

export async function canonicalPatientId(db: Db, id: string): Promise<string> {
  return (await canonicalPatient(db, { id, authority: null })).id;
}

export async function samePatient(db: Db, a: string, b: string): Promise<boolean> {
  if (a === b) return true;
  return (await canonicalPatientId(db, a)) === (await canonicalPatientId(db, b));
}

/**
 * Identity with its authority: two sets of identifiers (after merges) name the
 * same patient when some pair is equal in id and, where both carry an
 * authority, in authority; and no authority both sides use gives them
 * different ids there (MRN 1 at HOSP and MRN 2 at HOSP are two patients, even
 * if they share another number). The same id under two different authorities
 * is two patients. When one side has no authority, the id alone is compared.
 */
export async function identityMatch(db: Db, a: readonly PatientKey[], b: readonly PatientKey[]): Promise<{ match: true } | { match: false; detail: string }> {
  // As sent first (no query: the common case on the hot path); merges only when that does not match.
  const direct = compareIdentity(a, b);
  if (direct.match) return direct;
  const ca = await Promise.all(a.map((k) => canonicalPatient(db, k)));
  const cb = await Promise.all(b.map((k) => canonicalPatient(db, k)));
  return compareIdentity(ca, cb);
}

function compareIdentity(a: readonly PatientKey[], b: readonly PatientKey[]): { match: true } | { match: false; detail: string } {
  for (const x of a) {
    if (x.authority === null) continue;
    const theirs = b.filter((y) => y.authority === x.authority);
    if (theirs.length > 0 && !theirs.some((y) => a.some((o) => o.authority === x.authority && o.id === y.id))) return { match: false, detail: '' };
  }
  let sameIdOtherAuthority = false;
  for (const x of a) {
    for (const y of b) {
      if (x.id !== y.id) continue;
      if (authoritiesAgree(x.authority, y.authority)) return { match: true };
      sameIdOtherAuthority = true;
    }
  }
  return { match: false, detail: sameIdOtherAuthority ? ' (the same id under another assigning authority is another patient)' : '' };
}

/**
 * Where an item with these keys belongs now: linked to one study, pending (no
 * study yet), or held with a reason an operator can act on. Reasons name the
 * contradiction, never the identifiers themselves (they go to logs and lists).
 */
export async function decideLink(db: Db, req: LinkRequest): Promise<LinkDecision> {
  let accession = req.accessionNumber;
  let uid = req.studyInstanceUid;
  const reqKeys = requestKeys(req);
  // Orders that pair this accession with a StudyInstanceUID: the RIS's word that they belong together (grouped procedures).
  const pairs: { accession: string; uid: string }[] = [];
  if (req.isOrder && req.accessionNumber && req.studyInstanceUid) pairs.push({ accession: req.accessionNumber, uid: req.studyInstanceUid });

  // Studies with the accession the request names (fetched with the orders); the accession below never differs from it.
  let studiesWithAccession: StudyKeys[] | undefined;
  // Orders we accepted earlier tell us the other key, and whose patient this accession is.
  if (accession || uid) {
    let orders: OrderKeys[];
    if (accession) {
      const both = await ordersAndStudiesByAccession(db, accession, req.excludeOrderId);
      orders = both.orders;
      studiesWithAccession = both.studies;
    } else {
      orders = await ordersByStudyUid(db, uid!, req.excludeOrderId);
    }
    for (const o of orders) {
      const orderKeys = patientKeys(o.patient_id, o.patient_id_authority, o.patient_identifiers);
      if (reqKeys.length > 0 && orderKeys.length > 0) {
        const m = await identityMatch(db, reqKeys, orderKeys);
        if (!m.match) return { state: LinkState.held, reason: `patient id differs from the order with the same accession number${m.detail}` };
      }
      if (accession && uid && o.study_instance_uid && o.study_instance_uid !== uid) {
        return { state: LinkState.held, reason: 'StudyInstanceUID differs from the order with the same accession number' };
      }
      if (o.accession_number && o.study_instance_uid) pairs.push({ accession: o.accession_number, uid: o.study_instance_uid });
      uid ??= o.study_instance_uid;
      accession ??= o.accession_number;
    }
  }

  let study: StudyKeys | undefined;
  if (accession) {
    const byAccession = studiesWithAccession ?? (await studiesByAccession(db, accession));
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
    study = await studyKeysByUid(db, uid);
    const s = study;
    if (
      s &&
      accession &&
      s.accession_number &&
      s.accession_number !== accession &&
      !pairs.some((p) => p.accession === accession && p.uid === s.study_instance_uid)
    ) {
      return { state: LinkState.held, reason: 'the study with this StudyInstanceUID has a different accession number' };
    }
  }
  if (!study) return { state: LinkState.pending };

  // Never on accession / StudyInstanceUID alone: both sides must name the patient, and agree.
  const studyKeys = patientKeys(study.patient_id, study.issuer_of_patient_id, study.other_patient_ids);
  if (studyKeys.length === 0) return { state: LinkState.held, reason: 'patient-id-missing: the study has no patient id to check against' };
  if (reqKeys.length === 0) return { state: LinkState.held, reason: 'patient-id-missing: message has no patient id (PID-3) to check against the study' };
  const m = await identityMatch(db, reqKeys, studyKeys);
  if (!m.match) return { state: LinkState.held, reason: `patient id differs from the study's patient id${m.detail}` };
  return { state: LinkState.linked, studyInstanceUid: study.study_instance_uid };
}

export function linkColumns(d: LinkDecision): LinkColumns {
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
  const study = await studyAccession(db, studyInstanceUid);
  const result: ReconcileResult = { linked: 0, held: 0, messageIds: [] };
  if (!study) return result;
  const accessions = new Set<string>();
  if (study.accession_number) accessions.add(study.accession_number);
  for (const a of await orderAccessionsOfStudy(db, studyInstanceUid)) if (a) accessions.add(a);

  for (const table of linkTables) {
    const rows = await pendingItemsNaming(db, table, studyInstanceUid, [...accessions]);
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
    // A result the sender itself marked wrong-patient (OBX-11 W) stays held whatever a merge says.
    const rows = await heldItemsOfPatient(db, table, patientId, WRONG_PATIENT_RESULT);
    await redecide(db, table, rows, LinkState.held, now, result);
  }
  return result;
}

/**
 * Decides each row's link again and stores the decisions that move it out of
 * `unchanged` (its current state), counting them in `result`.
 */
async function redecide(db: Db, table: LinkTable, rows: readonly LinkItem[], unchanged: LinkState, now: string, result: ReconcileResult): Promise<void> {
  for (const row of rows) {
    const d = await decideLink(db, {
      accessionNumber: row.accession_number,
      studyInstanceUid: row.study_instance_uid,
      patientId: row.patient_id,
      patientIds: patientKeys(row.patient_id, row.patient_id_authority, row.patient_identifiers),
      excludeOrderId: table === 'orders' ? row.id : undefined,
      isOrder: table === 'orders',
    });
    if (d.state === unchanged) continue;
    await setLink(db, table, row.id, linkColumns(d), now);
    if (d.state === LinkState.linked) result.linked++;
    else if (d.state === LinkState.held) result.held++;
    result.messageIds.push(row.message_id);
  }
}

/**
 * A message is `held` while any item it carries is held (with that item's
 * reason), `applied` otherwise. Rejected and duplicate messages keep their status.
 */
export async function refreshMessageStatus(db: Db, messageIds: readonly string[], now: string): Promise<void> {
  for (const id of new Set(messageIds)) {
    let reason: string | null = null;
    for (const table of linkTables) {
      const held = await heldItemOfMessage(db, table, id);
      if (held) {
        reason = held.hold_reason ?? 'held';
        break;
      }
    }
    await setLinkedMessageStatus(db, id, reason ? MessageStatus.held : MessageStatus.applied, reason, now);
  }
}
