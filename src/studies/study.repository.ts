import type { Db } from '../db/database.js';
import { forUpdate, lockKey, storableText } from '../db/dialect.js';
import { param, paramsFor, precompiled } from '../db/precompiled.js';
import type { InstanceHeader } from '../dicom/instance-record.js';
import { StudyState } from '../states.js';
import {
  findVersion,
  forgetDeliveredCopies,
  insertFirstVersion,
  insertVersion,
  latestVersion,
  setVersionFields,
  supersedeVersion,
  type NewVersion,
} from './instance-version.repository.js';
import type { InstanceRow, InstanceTable, InstanceVersionRow, SeriesRow, SeriesTable, StudyRow } from './study.table.js';

export interface NewInstance extends InstanceHeader {
  filePath: string;
  sizeBytes: number;
  sha256: string;
  callingAe: string | null;
}

/** A study held (or kept held) by what this instance carried. */
export interface HoldNotice {
  studyInstanceUid: string;
  reason: HoldReason;
  /** Names of the attributes that differ (never their values: this goes to logs and the audit). */
  attributes: string[];
}

export const HoldReason = {
  identityConflict: 'identity-conflict',
  iocmIncorrectPatient: 'iocm-incorrect-patient',
} as const;
export type HoldReason = (typeof HoldReason)[keyof typeof HoldReason];

export interface InsertResult {
  outcome: 'stored' | 'duplicate';
  /** The study was new, or stable and re-opened by this (late) instance. */
  studyCreated: boolean;
  reopened: boolean;
  /** The copy's version: 1 for a first arrival, more for a re-send with other bytes. */
  version: number;
  /** Where the file was placed (relative to the spool root). */
  filePath: string;
  held: HoldNotice[];
  /** An IOCM rejection note: the instances it withdrew, per study. */
  rejected: { studyInstanceUid: string; sopInstanceUids: string[]; code: string }[];
}

// Every C-STORE's first arrival runs the statements below: built and compiled once each (db/precompiled.ts), then only
// bound, which takes kysely's per-call building and compiling off the ingest path.
const findInstanceQ = precompiled<{ sop: string }, InstanceRow>((db) => db.selectFrom('instances').selectAll().where('sop_instance_uid', '=', param('sop')));
const findStudyForUpdateQ = precompiled<{ uid: string }, StudyRow>((db) =>
  forUpdate(db, db.selectFrom('studies').selectAll().where('study_instance_uid', '=', param('uid'))),
);
/** Every column of `instances`: a first arrival sets them all. */
const INSTANCE_COLUMNS = {
  sop_instance_uid: true,
  series_instance_uid: true,
  study_instance_uid: true,
  sop_class_uid: true,
  transfer_syntax_uid: true,
  instance_number: true,
  file_path: true,
  size_bytes: true,
  sha256: true,
  calling_ae: true,
  late: true,
  received_at: true,
  version: true,
} satisfies Record<keyof InstanceTable, true>;
const insertInstanceQ = precompiled<Record<keyof InstanceTable, unknown>>((db) => db.insertInto('instances').values(paramsFor(INSTANCE_COLUMNS)));
const upsertSeriesQ = precompiled<Omit<SeriesTable, 'instance_count'>>((db) =>
  db
    .insertInto('series')
    .values({
      series_instance_uid: param('series_instance_uid'),
      study_instance_uid: param('study_instance_uid'),
      modality: param('modality'),
      body_part_examined: param('body_part_examined'),
      series_number: param('series_number'),
      series_description: param('series_description'),
      instance_count: 1,
    })
    .onConflict((oc) => oc.column('series_instance_uid').doUpdateSet((eb) => ({ instance_count: eb('series.instance_count', '+', 1) }))),
);

export async function findInstance(db: Db, sopInstanceUid: string): Promise<InstanceRow | undefined> {
  return (await findInstanceQ(db, { sop: sopInstanceUid })).rows[0];
}

/** The identity attributes compared between copies of an instance (DICOM keywords: shown, never their values). */
const IDENTITY: [keyword: string, pick: (v: IdentityView) => string | null][] = [
  ['PatientID', (v) => v.patientId],
  ['IssuerOfPatientID', (v) => v.issuer],
  ['PatientName', (v) => v.patientName],
  ['PatientBirthDate', (v) => v.birthDate],
  ['StudyInstanceUID', (v) => v.studyUid],
  ['AccessionNumber', (v) => v.accession],
];
interface IdentityView {
  patientId: string | null;
  issuer: string | null;
  patientName: string | null;
  birthDate: string | null;
  studyUid: string | null;
  accession: string | null;
}
const viewOfInstance = (i: NewInstance): IdentityView => ({
  patientId: i.patientId,
  issuer: i.issuerOfPatientId ?? null,
  patientName: i.patientName ?? null,
  birthDate: i.patientBirthDate ?? null,
  studyUid: i.studyInstanceUid,
  accession: i.accessionNumber,
});
const viewOfVersion = (v: InstanceVersionRow): IdentityView => ({
  patientId: v.patient_id,
  issuer: v.issuer_of_patient_id,
  patientName: v.patient_name,
  birthDate: v.patient_birth_date,
  studyUid: v.study_instance_uid,
  accession: v.accession_number,
});

/** The identity attributes that differ between two copies (a value appearing or disappearing is a change too). */
export function identityChanges(before: IdentityView, after: IdentityView): string[] {
  return IDENTITY.filter(([, pick]) => (pick(before) ?? '') !== (pick(after) ?? '')).map(([k]) => k);
}

/** `instances/<study>/<series>/<sop>.dcm` for the first copy, `<sop>.v<N>.dcm` for later ones: every copy keeps its file. */
export function versionPath(firstCopyPath: string, version: number): string {
  return version === 1 ? firstCopyPath : firstCopyPath.replace(/\.dcm$/, `.v${version}.dcm`);
}

function versionRow(inst: NewInstance, version: number, filePath: string, now: string): NewVersion {
  return {
    sop_instance_uid: inst.sopInstanceUid,
    version,
    study_instance_uid: inst.studyInstanceUid,
    series_instance_uid: inst.seriesInstanceUid,
    sop_class_uid: inst.sopClassUid,
    transfer_syntax_uid: inst.transferSyntaxUid,
    instance_number: inst.instanceNumber,
    sha256: inst.sha256,
    size_bytes: inst.sizeBytes,
    file_path: filePath,
    received_at: now,
    calling_ae: inst.callingAe,
    superseded_at: null,
    patient_id: inst.patientId,
    issuer_of_patient_id: inst.issuerOfPatientId ?? null,
    patient_name: inst.patientName ? storableText(inst.patientName) : null,
    patient_birth_date: inst.patientBirthDate ?? null,
    accession_number: inst.accessionNumber,
    identity_changes: null,
    conflict_state: null,
    rejected_at: null,
    rejection_code: null,
  };
}

/**
 * Records one received copy of an instance and updates its series and study. Must run inside the
 * caller's transaction: the lookup and the writes are one decision. `onNew(filePath)` runs once the copy
 * is known to be kept (not the same bytes again), before any write, so the caller can start moving and
 * syncing the file while the rows are written.
 *
 * - the same bytes again: duplicate, nothing written;
 * - a first arrival: instance row, version 1, study and series counters; a patient id or issuer other than
 *   the study's holds the study (`identity-conflict`);
 * - other bytes for a known instance: the new copy becomes current (a new file; the old one stays as a prior
 *   version), deliveries forget the old copy so it goes out again as a delta, the study takes it as a new
 *   arrival; a changed identity (patient id, issuer, name, birth date, study, accession) holds the study
 *   (both studies when it moved);
 * - an IOCM rejection note (KOS titled by CID 7011): stored as a version only (never current, never
 *   forwarded); the instances it names leave `instances` (counts, rules, deliveries) and are marked rejected.
 */
export async function insertInstance(db: Db, inst: NewInstance, now: string, onNew?: (filePath: string) => void): Promise<InsertResult> {
  // Two instances of the gateway receiving the same SOP instance at once decide one after the other (PostgreSQL).
  await lockKey(db, `sop:${inst.sopInstanceUid}`);
  const current = await findInstance(db, inst.sopInstanceUid);
  const base: Omit<InsertResult, 'outcome'> = { studyCreated: false, reopened: false, version: 1, filePath: inst.filePath, held: [], rejected: [] };
  if (current) {
    if (current.sha256 === inst.sha256) return { ...base, outcome: 'duplicate', version: current.version, filePath: current.file_path };
    return resend(db, inst, now, current, await findVersion(db, current.sop_instance_uid, current.version), onNew);
  }
  // Known only as versions: a withdrawn instance or a rejection note sent again.
  const kept = await latestVersion(db, inst.sopInstanceUid);
  if (kept) {
    if (kept.sha256 === inst.sha256) return { ...base, outcome: 'duplicate', version: kept.version, filePath: kept.file_path };
    const version = kept.version + 1;
    const filePath = versionPath(inst.filePath, version);
    onNew?.(filePath);
    await supersedeVersion(db, kept.sop_instance_uid, kept.version, now);
    // stays out of `instances`: a withdrawn instance is not brought back by a re-send
    await insertVersion(db, {
      ...versionRow(inst, version, filePath, now),
      kind: kept.kind,
      rejected_at: kept.rejected_at,
      rejection_code: kept.rejection_code,
    });
    return { ...base, outcome: 'stored', version, filePath };
  }
  if (inst.iocm) {
    onNew?.(inst.filePath);
    await insertVersion(db, { ...versionRow(inst, 1, inst.filePath, now), kind: 'iocm-rejection' });
    const rejected = await applyRejection(db, inst.iocm.sopInstanceUids, inst.iocm.code, now);
    const held: HoldNotice[] = [];
    // DCM 113038 "Incorrect Modality Worklist Entry": the images were taken under the wrong order or patient.
    if (inst.iocm.code === 'DCM:113038') {
      for (const r of rejected) held.push(await holdStudy(db, r.studyInstanceUid, HoldReason.iocmIncorrectPatient, ['IOCM:113038'], now));
    }
    return { ...base, outcome: 'stored', rejected, held: held.filter((h) => h.attributes.length > 0) };
  }
  onNew?.(inst.filePath);
  const placed = await addToStudy(db, inst, now);
  await insertInstanceQ(db, {
    sop_instance_uid: inst.sopInstanceUid,
    series_instance_uid: inst.seriesInstanceUid,
    study_instance_uid: inst.studyInstanceUid,
    sop_class_uid: inst.sopClassUid,
    transfer_syntax_uid: inst.transferSyntaxUid,
    instance_number: inst.instanceNumber,
    file_path: inst.filePath,
    size_bytes: inst.sizeBytes,
    sha256: inst.sha256,
    calling_ae: inst.callingAe,
    late: placed.reopened ? 1 : 0,
    received_at: now,
    version: 1,
  });
  const mismatch = placed.studyCreated ? [] : studyIdentityMismatch(placed.study, inst);
  await insertFirstVersion(db, {
    ...versionRow(inst, 1, inst.filePath, now),
    identity_changes: mismatch.length ? JSON.stringify(mismatch) : null,
    conflict_state: mismatch.length ? 'open' : null,
  });
  const held = mismatch.length ? [await holdStudy(db, inst.studyInstanceUid, HoldReason.identityConflict, mismatch, now)] : [];
  return { ...base, outcome: 'stored', studyCreated: placed.studyCreated, reopened: placed.reopened, held };
}

/** A new instance of a known study naming another patient (id, or issuer when both have one). */
function studyIdentityMismatch(study: Pick<StudyRow, 'patient_id' | 'issuer_of_patient_id'> | undefined, inst: NewInstance): string[] {
  if (!study) return [];
  const out: string[] = [];
  if ((study.patient_id ?? '') !== (inst.patientId ?? '')) out.push('PatientID');
  const issuer = inst.issuerOfPatientId ?? null;
  if (study.issuer_of_patient_id !== null && issuer !== null && study.issuer_of_patient_id !== issuer) out.push('IssuerOfPatientID');
  return out;
}

async function resend(
  db: Db,
  inst: NewInstance,
  now: string,
  cur: InstanceRow,
  curVersion: InstanceVersionRow | undefined,
  onNew?: (filePath: string) => void,
): Promise<InsertResult> {
  // after a rejected copy the current one is not the newest: number after every copy kept
  const version = ((await latestVersion(db, cur.sop_instance_uid))?.version ?? cur.version) + 1;
  const filePath = versionPath(inst.filePath, version);
  onNew?.(filePath);
  const before: IdentityView = curVersion
    ? viewOfVersion(curVersion)
    : { patientId: null, issuer: null, patientName: null, birthDate: null, studyUid: cur.study_instance_uid, accession: null };
  const changes = identityChanges(before, viewOfInstance(inst));
  const moved = cur.study_instance_uid !== inst.studyInstanceUid;
  const sizeDelta = inst.sizeBytes - Number(cur.size_bytes);
  let placed: { studyCreated: boolean; reopened: boolean };
  if (moved || cur.series_instance_uid !== inst.seriesInstanceUid) {
    await removeFromStudy(db, cur.study_instance_uid, cur.series_instance_uid, Number(cur.size_bytes), now);
    placed = await addToStudy(db, inst, now);
  } else {
    placed = await touchStudy(db, inst.studyInstanceUid, sizeDelta, now);
  }
  await supersedeVersion(db, inst.sopInstanceUid, cur.version, now);
  await insertVersion(db, {
    ...versionRow(inst, version, filePath, now),
    identity_changes: changes.length ? JSON.stringify(changes) : null,
    conflict_state: changes.length ? 'open' : null,
  });
  await db
    .updateTable('instances')
    .set({
      series_instance_uid: inst.seriesInstanceUid,
      study_instance_uid: inst.studyInstanceUid,
      sop_class_uid: inst.sopClassUid,
      transfer_syntax_uid: inst.transferSyntaxUid,
      instance_number: inst.instanceNumber,
      file_path: filePath,
      size_bytes: inst.sizeBytes,
      sha256: inst.sha256,
      calling_ae: inst.callingAe,
      late: placed.reopened ? 1 : 0,
      received_at: now,
      version,
    })
    .where('sop_instance_uid', '=', inst.sopInstanceUid)
    .execute();
  // The pools that had the old copy get the new one as a delta once the study is stable (and not held).
  await forgetDeliveredCopies(db, [inst.sopInstanceUid], true);
  const held: HoldNotice[] = [];
  if (changes.length) {
    held.push(await holdStudy(db, inst.studyInstanceUid, HoldReason.identityConflict, changes, now));
    if (moved) held.push(await holdStudy(db, cur.study_instance_uid, HoldReason.identityConflict, changes, now));
  }
  return { outcome: 'stored', studyCreated: placed.studyCreated, reopened: placed.reopened, version, filePath, held, rejected: [] };
}

/**
 * Counts one more instance in its study and series (creating them), as an arrival: the study is
 * `receiving` again, unless held (a hold stays until a person decides; the arrival is remembered so a
 * release goes through the quiet period and the rules again).
 */
async function addToStudy(db: Db, inst: NewInstance, now: string): Promise<{ studyCreated: boolean; reopened: boolean; study: StudyRow | undefined }> {
  const study = await findStudyForUpdate(db, inst.studyInstanceUid);
  const studyCreated = study === undefined;
  const reopened = !studyCreated && study.state !== StudyState.receiving;
  const others = inst.otherPatientIds && inst.otherPatientIds.length ? JSON.stringify(inst.otherPatientIds) : null;
  await db
    .insertInto('studies')
    .values({
      study_instance_uid: inst.studyInstanceUid,
      accession_number: inst.accessionNumber,
      patient_id: inst.patientId,
      issuer_of_patient_id: inst.issuerOfPatientId ?? null,
      other_patient_ids: others,
      patient_name: inst.patientName ? storableText(inst.patientName) : null,
      patient_birth_date: inst.patientBirthDate ?? null,
      study_date: inst.studyDate,
      study_description: inst.studyDescription,
      referring_physician: inst.referringPhysicianName,
      calling_ae: inst.callingAe,
      state: StudyState.receiving,
      instance_count: 1,
      size_bytes: inst.sizeBytes,
      first_received_at: now,
      last_received_at: now,
      updated_at: now,
    })
    .onConflict((oc) =>
      oc.column('study_instance_uid').doUpdateSet((eb) => ({
        // Qualified: PostgreSQL's DO UPDATE sees both the row and `excluded`, so a bare column is ambiguous.
        instance_count: eb('studies.instance_count', '+', 1),
        size_bytes: eb('studies.size_bytes', '+', inst.sizeBytes),
        late_instance_count: reopened ? eb('studies.late_instance_count', '+', 1) : eb.ref('studies.late_instance_count'),
        state: study?.state === StudyState.held ? StudyState.held : StudyState.receiving,
        held_from_state: study?.state === StudyState.held ? StudyState.receiving : eb.ref('studies.held_from_state'),
        last_received_at: now,
        updated_at: now,
        // Later instances may carry what the first lacked (some modalities fill the accession late).
        accession_number: eb.fn.coalesce('studies.accession_number', eb.val(inst.accessionNumber)),
        issuer_of_patient_id: eb.fn.coalesce('studies.issuer_of_patient_id', eb.val(inst.issuerOfPatientId ?? null)),
        other_patient_ids: eb.fn.coalesce('studies.other_patient_ids', eb.val(others)),
        patient_name: eb.fn.coalesce('studies.patient_name', eb.val(inst.patientName ? storableText(inst.patientName) : null)),
        patient_birth_date: eb.fn.coalesce('studies.patient_birth_date', eb.val(inst.patientBirthDate ?? null)),
      })),
    )
    .execute();
  await upsertSeriesQ(db, {
    series_instance_uid: inst.seriesInstanceUid,
    study_instance_uid: inst.studyInstanceUid,
    modality: inst.modality,
    body_part_examined: inst.bodyPartExamined,
    series_number: inst.seriesNumber,
    series_description: inst.seriesDescription,
  });
  return { studyCreated, reopened, study };
}

/** A new copy of an instance already counted in this study: an arrival, with the size difference. */
async function touchStudy(db: Db, studyInstanceUid: string, sizeDelta: number, now: string): Promise<{ studyCreated: boolean; reopened: boolean }> {
  const study = await findStudyForUpdate(db, studyInstanceUid);
  const held = study?.state === StudyState.held;
  await db
    .updateTable('studies')
    .set((eb) => ({
      size_bytes: eb('size_bytes', '+', sizeDelta),
      state: held ? StudyState.held : StudyState.receiving,
      held_from_state: held ? StudyState.receiving : eb.ref('held_from_state'),
      last_received_at: now,
      updated_at: now,
    }))
    .where('study_instance_uid', '=', studyInstanceUid)
    .execute();
  return { studyCreated: false, reopened: study !== undefined && study.state !== StudyState.receiving };
}

/** One instance less in a study and series (moved to another study, or withdrawn). */
async function removeFromStudy(db: Db, studyInstanceUid: string, seriesInstanceUid: string, sizeBytes: number, now: string): Promise<void> {
  await db
    .updateTable('studies')
    .set((eb) => ({ instance_count: eb('instance_count', '-', 1), size_bytes: eb('size_bytes', '-', sizeBytes), updated_at: now }))
    .where('study_instance_uid', '=', studyInstanceUid)
    .execute();
  await db
    .updateTable('series')
    .set((eb) => ({ instance_count: eb('instance_count', '-', 1) }))
    .where('series_instance_uid', '=', seriesInstanceUid)
    .execute();
}

/**
 * IOCM: the named instances leave `instances` (and so the counts, the rules' view and every delivery
 * not yet finished); their copies stay as versions marked rejected. Unknown UIDs are ignored (a note
 * that arrives before its instances rejects nothing).
 */
async function applyRejection(db: Db, sopInstanceUids: readonly string[], code: string, now: string): Promise<InsertResult['rejected']> {
  if (sopInstanceUids.length === 0) return [];
  const rows = await db.selectFrom('instances').selectAll().where('sop_instance_uid', 'in', sopInstanceUids).execute();
  const byStudy = new Map<string, string[]>();
  for (const r of rows) {
    await removeFromStudy(db, r.study_instance_uid, r.series_instance_uid, Number(r.size_bytes), now);
    await setVersionFields(db, r.sop_instance_uid, r.version, { rejected_at: now, rejection_code: code });
    await db.deleteFrom('instances').where('sop_instance_uid', '=', r.sop_instance_uid).execute();
    byStudy.set(r.study_instance_uid, [...(byStudy.get(r.study_instance_uid) ?? []), r.sop_instance_uid]);
  }
  await forgetDeliveredCopies(
    db,
    rows.map((r) => r.sop_instance_uid),
    false,
  );
  for (const study of byStudy.keys()) {
    // A changed study is decided again after its quiet period, as after an arrival (unless held).
    await db
      .updateTable('studies')
      .set((eb) => ({
        state: eb.case().when('state', '=', StudyState.held).then(StudyState.held).else(StudyState.receiving).end(),
        last_received_at: now,
        updated_at: now,
      }))
      .where('study_instance_uid', '=', study)
      .execute();
  }
  return [...byStudy].map(([studyInstanceUid, uids]) => ({ studyInstanceUid, sopInstanceUids: uids, code }));
}

/**
 * Puts a study on hold (or keeps it held, adding the attribute names to what is shown). The state the
 * hold interrupted is kept so a release goes back to it.
 */
export async function holdStudy(db: Db, studyInstanceUid: string, reason: HoldReason, attributes: string[], now: string): Promise<HoldNotice> {
  const s = await findStudy(db, studyInstanceUid);
  if (!s) return { studyInstanceUid, reason, attributes: [] };
  const wasHeld = s.state === StudyState.held;
  const seen = new Set(
    wasHeld && s.hold_detail
      ? s.hold_detail
          .replace(/^[^:]*:\s*/, '')
          .split(/,\s*/)
          .filter(Boolean)
      : [],
  );
  for (const a of attributes) seen.add(a);
  const keptReason = wasHeld && s.hold_reason ? s.hold_reason : reason;
  await db
    .updateTable('studies')
    .set({
      state: StudyState.held,
      hold_reason: keptReason,
      hold_detail: `changed: ${[...seen].join(', ')}`,
      held_at: wasHeld && s.held_at ? s.held_at : now,
      held_from_state: wasHeld ? s.held_from_state : s.state,
      updated_at: now,
    })
    .where('study_instance_uid', '=', studyInstanceUid)
    .execute();
  return { studyInstanceUid, reason: keptReason as HoldReason, attributes };
}

/** Ends a hold: back to the state it interrupted. Returns that state, or undefined when the study was not held. */
export async function endHold(db: Db, studyInstanceUid: string, now: string): Promise<StudyState | undefined> {
  const s = await findStudy(db, studyInstanceUid);
  if (!s || s.state !== StudyState.held) return undefined;
  const to = s.held_from_state === StudyState.stable ? StudyState.stable : StudyState.receiving;
  await db
    .updateTable('studies')
    .set({ state: to, hold_reason: null, hold_detail: null, held_at: null, held_from_state: null, updated_at: now })
    .where('study_instance_uid', '=', studyInstanceUid)
    .where('state', '=', StudyState.held)
    .execute();
  return to;
}

/**
 * Undoes the copy `v` (a rejected identity change): the copy before it becomes current again (in its own
 * study and series), or, for a first arrival, the instance leaves the study. The copy's file and row stay.
 */
export async function discardCopy(db: Db, v: InstanceVersionRow, now: string): Promise<void> {
  const cur = await findInstance(db, v.sop_instance_uid);
  const prior = v.version > 1 ? await findVersion(db, v.sop_instance_uid, v.version - 1) : undefined;
  await setVersionFields(db, v.sop_instance_uid, v.version, { superseded_at: now, conflict_state: 'rejected' });
  if (!cur || cur.version !== v.version) return;
  await removeFromStudy(db, cur.study_instance_uid, cur.series_instance_uid, Number(cur.size_bytes), now);
  if (!prior) {
    await db.deleteFrom('instances').where('sop_instance_uid', '=', v.sop_instance_uid).execute();
    return;
  }
  await setVersionFields(db, prior.sop_instance_uid, prior.version, { superseded_at: null });
  await db
    .updateTable('instances')
    .set({
      series_instance_uid: prior.series_instance_uid,
      study_instance_uid: prior.study_instance_uid,
      sop_class_uid: prior.sop_class_uid,
      transfer_syntax_uid: prior.transfer_syntax_uid,
      instance_number: prior.instance_number,
      file_path: prior.file_path,
      size_bytes: prior.size_bytes,
      sha256: prior.sha256,
      version: prior.version,
    })
    .where('sop_instance_uid', '=', v.sop_instance_uid)
    .execute();
  await db
    .updateTable('studies')
    .set((eb) => ({ instance_count: eb('instance_count', '+', 1), size_bytes: eb('size_bytes', '+', Number(prior.size_bytes)), updated_at: now }))
    .where('study_instance_uid', '=', prior.study_instance_uid)
    .execute();
  await db
    .updateTable('series')
    .set((eb) => ({ instance_count: eb('instance_count', '+', 1) }))
    .where('series_instance_uid', '=', prior.series_instance_uid)
    .execute();
  await forgetDeliveredCopies(db, [v.sop_instance_uid], true);
}

export interface StudyFilter {
  accessionNumber?: string;
  patientId?: string;
  state?: string;
  limit: number;
  offset: number;
}

export async function listStudies(db: Db, f: StudyFilter): Promise<StudyRow[]> {
  let q = db.selectFrom('studies').selectAll();
  if (f.accessionNumber) q = q.where('accession_number', '=', f.accessionNumber);
  if (f.patientId) q = q.where('patient_id', '=', f.patientId);
  if (f.state) q = q.where('state', '=', f.state as StudyRow['state']);
  return q.orderBy('last_received_at', 'desc').orderBy('study_instance_uid').limit(f.limit).offset(f.offset).execute();
}

/**
 * The study row, locked until the transaction ends (PostgreSQL; SQLite's transaction is the only writer): an arrival
 * decides from it whether it re-opens the study, and a stability job marking the study stable meanwhile must wait
 * for that decision, or be waited for; otherwise the arrival would set `receiving` again believing it never
 * stopped, and no stability job would be left to end the episode.
 */
async function findStudyForUpdate(db: Db, studyInstanceUid: string): Promise<StudyRow | undefined> {
  return (await findStudyForUpdateQ(db, { uid: studyInstanceUid })).rows[0];
}

export async function findStudy(db: Db, studyInstanceUid: string): Promise<StudyRow | undefined> {
  return db.selectFrom('studies').selectAll().where('study_instance_uid', '=', studyInstanceUid).executeTakeFirst();
}

export async function seriesOfStudies(db: Db, studyUids: readonly string[]): Promise<SeriesRow[]> {
  if (studyUids.length === 0) return [];
  return db.selectFrom('series').selectAll().where('study_instance_uid', 'in', studyUids).orderBy('series_number').execute();
}

export async function instancesOfStudy(db: Db, studyInstanceUid: string): Promise<InstanceRow[]> {
  return db.selectFrom('instances').selectAll().where('study_instance_uid', '=', studyInstanceUid).orderBy('received_at').execute();
}
