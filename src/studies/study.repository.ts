import type { Db } from '../db/database.js';
import { forClaim } from '../db/dialect.js';
import type { InstanceHeader } from '../dicom/instance-record.js';
import { StudyState } from '../states.js';
import type { InstanceRow, SeriesRow, StudyRow } from './study.table.js';

export interface NewInstance extends InstanceHeader {
  filePath: string;
  sizeBytes: number;
  sha256: string;
  callingAe: string | null;
}

export interface InsertResult {
  outcome: 'stored' | 'duplicate';
  /** The study was new, or stable and re-opened by this (late) instance. */
  studyCreated: boolean;
  reopened: boolean;
}

export async function findInstance(db: Db, sopInstanceUid: string): Promise<InstanceRow | undefined> {
  return db.selectFrom('instances').selectAll().where('sop_instance_uid', '=', sopInstanceUid).executeTakeFirst();
}

/**
 * Records one instance and updates its series and study counters. Must run
 * inside the caller's transaction: the duplicate check and the insert are one
 * decision. `onNew` runs once the instance is known not to be a duplicate,
 * before any write, so the caller can start slow work (moving and syncing
 * the file) that overlaps the inserts. Four statements: one read, two
 * upserts, one insert.
 */
export async function insertInstance(db: Db, inst: NewInstance, now: string, onNew?: () => void): Promise<InsertResult> {
  // The duplicate check and the study's state in one round: (instance exists?, study state or null).
  const prior = await db
    .selectNoFrom((eb) => [
      eb.exists(eb.selectFrom('instances').select('sop_instance_uid').where('sop_instance_uid', '=', inst.sopInstanceUid)).as('duplicate'),
      eb.selectFrom('studies').select('state').where('study_instance_uid', '=', inst.studyInstanceUid).as('study_state'),
    ])
    .executeTakeFirstOrThrow();
  if (Number(prior.duplicate) === 1) return { outcome: 'duplicate', studyCreated: false, reopened: false };
  onNew?.();

  const studyCreated = prior.study_state === null;
  const reopened = !studyCreated && prior.study_state !== StudyState.receiving;
  await db
    .insertInto('studies')
    .values({
      study_instance_uid: inst.studyInstanceUid,
      accession_number: inst.accessionNumber,
      patient_id: inst.patientId,
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
        state: StudyState.receiving,
        last_received_at: now,
        updated_at: now,
        // Later instances may carry an accession the first lacked (some modalities fill it late).
        accession_number: eb.fn.coalesce('studies.accession_number', eb.val(inst.accessionNumber)),
      })),
    )
    .execute();

  await db
    .insertInto('series')
    .values({
      series_instance_uid: inst.seriesInstanceUid,
      study_instance_uid: inst.studyInstanceUid,
      modality: inst.modality,
      body_part_examined: inst.bodyPartExamined,
      series_number: inst.seriesNumber,
      series_description: inst.seriesDescription,
      instance_count: 1,
    })
    .onConflict((oc) => oc.column('series_instance_uid').doUpdateSet((eb) => ({ instance_count: eb('series.instance_count', '+', 1) })))
    .execute();

  await db
    .insertInto('instances')
    .values({
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
      late: reopened ? 1 : 0,
      received_at: now,
    })
    .execute();
  return { outcome: 'stored', studyCreated, reopened };
}

/**
 * Marks every receiving study quiet since `cutoff` as stable; returns those it
 * changed. Several instances may sweep at once: each study changes (and is
 * reported) in exactly one of them, and on PostgreSQL a sweep skips the rows
 * another is changing instead of waiting (dialect.ts).
 */
export async function markStable(db: Db, cutoff: string, now: string): Promise<Pick<StudyRow, 'study_instance_uid' | 'instance_count'>[]> {
  return db
    .updateTable('studies')
    .set({ state: StudyState.stable, stable_at: now, updated_at: now })
    .where('study_instance_uid', 'in', forClaim(db, db.selectFrom('studies').select('study_instance_uid').where('state', '=', StudyState.receiving).where('last_received_at', '<=', cutoff)))
    // Re-checked on the row itself: PostgreSQL re-evaluates this after a concurrent change of the row.
    .where('state', '=', StudyState.receiving)
    .returning(['study_instance_uid', 'instance_count'])
    .execute();
}

/** The oldest last-arrival among receiving studies: when the next one can become stable. */
export async function oldestReceiving(db: Db): Promise<string | null> {
  const row = await db
    .selectFrom('studies')
    .select((eb) => eb.fn.min<string>('last_received_at').as('oldest'))
    .where('state', '=', StudyState.receiving)
    .executeTakeFirst();
  return row?.oldest ?? null;
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
