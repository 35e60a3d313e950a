import type { Db } from '../db/database.js';
import { param, paramsFor, precompiled } from '../db/precompiled.js';
import { OPEN_CASE_STATES } from '../states.js';
import type { ConflictState, InstanceVersionRow, InstanceVersionTable } from './study.table.js';

export type NewVersion = Omit<InstanceVersionTable, 'kind'> & { kind?: InstanceVersionRow['kind'] };

export async function insertVersion(db: Db, v: NewVersion): Promise<void> {
  await db.insertInto('instance_versions').values(v).execute();
}

/** Every column of a version but `kind` (its default): the shape of a first arrival's version, compiled once. */
const FIRST_VERSION_COLUMNS = {
  sop_instance_uid: true,
  version: true,
  study_instance_uid: true,
  series_instance_uid: true,
  sop_class_uid: true,
  transfer_syntax_uid: true,
  instance_number: true,
  sha256: true,
  size_bytes: true,
  file_path: true,
  received_at: true,
  calling_ae: true,
  superseded_at: true,
  patient_id: true,
  issuer_of_patient_id: true,
  patient_name: true,
  patient_birth_date: true,
  accession_number: true,
  identity_changes: true,
  conflict_state: true,
  rejected_at: true,
  rejection_code: true,
} satisfies Record<Exclude<keyof InstanceVersionTable, 'kind'>, true>;
const insertFirstVersionQ = precompiled<Omit<NewVersion, 'kind'>>((db) => db.insertInto('instance_versions').values(paramsFor(FIRST_VERSION_COLUMNS)));
const latestVersionQ = precompiled<{ sop: string }, InstanceVersionRow>((db) =>
  db.selectFrom('instance_versions').selectAll().where('sop_instance_uid', '=', param('sop')).orderBy('version', 'desc').limit(1),
);

/** A version of the default kind (every C-STORE's first arrival): the same row as insertVersion, without kysely's per-call compile. */
export async function insertFirstVersion(db: Db, v: Omit<NewVersion, 'kind'>): Promise<void> {
  await insertFirstVersionQ(db, v);
}

/** The newest copy of a SOP instance (current or, for rejected instances and rejection notes, the last one kept). */
export async function latestVersion(db: Db, sopInstanceUid: string): Promise<InstanceVersionRow | undefined> {
  return (await latestVersionQ(db, { sop: sopInstanceUid })).rows[0];
}

export async function findVersion(db: Db, sopInstanceUid: string, version: number): Promise<InstanceVersionRow | undefined> {
  return db.selectFrom('instance_versions').selectAll().where('sop_instance_uid', '=', sopInstanceUid).where('version', '=', version).executeTakeFirst();
}

export async function supersedeVersion(db: Db, sopInstanceUid: string, version: number, now: string): Promise<void> {
  await db.updateTable('instance_versions').set({ superseded_at: now }).where('sop_instance_uid', '=', sopInstanceUid).where('version', '=', version).execute();
}

export async function setVersionFields(
  db: Db,
  sopInstanceUid: string,
  version: number,
  set: Partial<Pick<InstanceVersionRow, 'superseded_at' | 'conflict_state' | 'rejected_at' | 'rejection_code'>>,
): Promise<void> {
  await db.updateTable('instance_versions').set(set).where('sop_instance_uid', '=', sopInstanceUid).where('version', '=', version).execute();
}

/**
 * Versions shown on a study: every copy of the SOP instances that were received more than once
 * (with other bytes), or withdrawn by an IOCM rejection, or that are rejection notes.
 */
export async function versionsOfStudy(db: Db, studyInstanceUid: string): Promise<InstanceVersionRow[]> {
  return db
    .selectFrom('instance_versions as v')
    .selectAll('v')
    .where((eb) =>
      eb.or([
        eb('v.study_instance_uid', '=', studyInstanceUid),
        // a copy that moved to another study still belongs to this one's history
        eb('v.sop_instance_uid', 'in', eb.selectFrom('instance_versions').select('sop_instance_uid').where('study_instance_uid', '=', studyInstanceUid)),
      ]),
    )
    .where((eb) =>
      eb.or([
        eb('v.version', '>', 1),
        eb('v.kind', '!=', 'instance'),
        eb('v.rejected_at', 'is not', null),
        eb.exists(
          eb.selectFrom('instance_versions as w').select('w.version').whereRef('w.sop_instance_uid', '=', 'v.sop_instance_uid').where('w.version', '>', 1),
        ),
      ]),
    )
    .orderBy('v.sop_instance_uid')
    .orderBy('v.version')
    .limit(1000)
    .execute();
}

/** Versions whose identity change holds a study and is not yet decided, in the study or moved out of it. */
export async function openConflicts(db: Db, studyInstanceUid: string): Promise<InstanceVersionRow[]> {
  return db
    .selectFrom('instance_versions as v')
    .selectAll('v')
    .where('v.conflict_state', '=', 'open')
    .where((eb) =>
      eb.or([
        eb('v.study_instance_uid', '=', studyInstanceUid),
        eb.exists(
          eb
            .selectFrom('instance_versions as p')
            .select('p.version')
            .whereRef('p.sop_instance_uid', '=', 'v.sop_instance_uid')
            .whereRef('p.version', '<', 'v.version')
            .where('p.study_instance_uid', '=', studyInstanceUid),
        ),
      ]),
    )
    .orderBy('v.sop_instance_uid')
    .orderBy('v.version')
    .execute();
}

export async function decideConflict(db: Db, sopInstanceUid: string, version: number, state: ConflictState): Promise<void> {
  await db
    .updateTable('instance_versions')
    .set({ conflict_state: state })
    .where('sop_instance_uid', '=', sopInstanceUid)
    .where('version', '=', version)
    .execute();
}

/**
 * A SOP instance whose current copy changed, or that was withdrawn: the deliveries that listed it forget it,
 * so the next delta plan (forwarding: a stable study with more instances than its delivery lists) adds it again
 * as pending and sends the current copy, exactly as for an instance arriving for the first time; a withdrawn one
 * is gone from `instances` and is not added again. `onlyDone`: keep rows still pending (they will send the
 * current copy anyway). Open cases only: a finished case's record stays as it was. Counters are recomputed
 * from the rows. Returns how many delivery rows were dropped.
 */
export async function forgetDeliveredCopies(db: Db, sopInstanceUids: readonly string[], onlyDone: boolean): Promise<number> {
  if (sopInstanceUids.length === 0) return 0;
  const openDeliveries = db.selectFrom('deliveries as d').innerJoin('cases as c', 'c.id', 'd.case_id').select('d.id').where('c.state', 'in', OPEN_CASE_STATES);
  const rows = await db
    .selectFrom('delivery_instances')
    .select(['delivery_id', 'sop_instance_uid', 'state'])
    .where('sop_instance_uid', 'in', sopInstanceUids)
    .where('delivery_id', 'in', openDeliveries)
    .execute();
  const drop = rows.filter((r) => !onlyDone || r.state !== 'pending');
  if (drop.length === 0) return 0;
  for (const r of drop) {
    await db.deleteFrom('delivery_instances').where('delivery_id', '=', r.delivery_id).where('sop_instance_uid', '=', r.sop_instance_uid).execute();
  }
  for (const id of [...new Set(drop.map((r) => r.delivery_id))]) {
    await db
      .updateTable('deliveries')
      .set((eb) => ({
        instances_total: eb
          .selectFrom('delivery_instances')
          .select((e) => e.fn.countAll<number>().as('n'))
          .where('delivery_id', '=', id),
        instances_sent: eb
          .selectFrom('delivery_instances')
          .select((e) => e.fn.countAll<number>().as('n'))
          .where('delivery_id', '=', id)
          .where('state', '=', 'sent'),
      }))
      .where('id', '=', id)
      .execute();
  }
  return drop.length;
}
