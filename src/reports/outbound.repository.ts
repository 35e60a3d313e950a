import type { Db } from '../db/database.js';
import { forClaim } from '../db/dialect.js';
import { CaseState, DeliveryState, OutboundKind, OutboundState, StudyState } from '../states.js';
import type { OutboundMessageRow } from './report.table.js';

/**
 * Why a claimed message must not be sent now (read just before it goes on the
 * wire): it is no longer pending (its case was cancelled meanwhile), or its
 * case's study was held. Undefined: send it.
 */
export async function outboundStop(db: Db, id: string): Promise<string | undefined> {
  const row = await db
    .selectFrom('outbound_messages as m')
    .leftJoin('cases as c', 'c.id', 'm.case_id')
    .leftJoin('studies as s', 's.study_instance_uid', 'c.study_instance_uid')
    .select(['m.state', 'm.kind', 's.state as study'])
    .where('m.id', '=', id)
    .executeTakeFirst();
  if (!row) return 'gone';
  if (row.state !== OutboundState.pending) return row.state;
  if (row.kind !== OutboundKind.poolCancel && row.study === StudyState.held) return 'held';
  return undefined;
}

export async function findOutbound(db: Db, id: string): Promise<OutboundMessageRow | undefined> {
  return db.selectFrom('outbound_messages').selectAll().where('id', '=', id).executeTakeFirst();
}

/** The outcome of one send, written (fenced, in the job's transaction) only while the message is still pending. */
export async function settleOutbound(
  trx: Db,
  id: string,
  set: { state?: OutboundState; attempts: number; lastError: string | null; response?: string | null; nextAttemptAt?: string; now: string },
): Promise<boolean> {
  const r = await trx
    .updateTable('outbound_messages')
    .set({
      ...(set.state ? { state: set.state } : {}),
      attempts: set.attempts,
      last_error: set.lastError,
      ...(set.response !== undefined ? { response: set.response } : {}),
      ...(set.nextAttemptAt ? { next_attempt_at: set.nextAttemptAt } : {}),
      updated_at: set.now,
    })
    .where('id', '=', id)
    .where('state', '=', OutboundState.pending)
    .executeTakeFirst();
  return Number(r.numUpdatedRows) > 0;
}

/** A person's retry: the case's failed write-backs become pending again, attempts from zero. Returns their ids. */
export async function reopenFailedWriteBacks(trx: Db, caseId: string, now: string): Promise<string[]> {
  const failed = await failedWriteBacksOf(trx, caseId);
  if (failed.length === 0) return [];
  await trx
    .updateTable('outbound_messages')
    .set({ state: OutboundState.pending, attempts: 0, next_attempt_at: now, updated_at: now })
    .where(
      'id',
      'in',
      failed.map((f) => f.id),
    )
    .execute();
  return failed.map((f) => f.id);
}

export async function insertOutbound(trx: Db, row: OutboundMessageRow): Promise<void> {
  await trx.insertInto('outbound_messages').values(row).execute();
}

/** Waiting write-backs whose case's study now has a final (or corrected) primary report linked: their ORU can be built. */
export async function waitingWriteBacksReady(db: Db, limit: number): Promise<OutboundMessageRow[]> {
  return db
    .selectFrom('outbound_messages as m')
    .innerJoin('cases as c', 'c.id', 'm.case_id')
    .selectAll('m')
    .where('m.kind', '=', OutboundKind.writeBack)
    .where('m.state', '=', OutboundState.waiting)
    .where(({ exists, selectFrom }) =>
      exists(
        selectFrom('report_versions as r')
          .select('r.id')
          .whereRef('r.linked_study_uid', '=', 'c.study_instance_uid')
          .where('r.link_state', '=', 'linked')
          .where('r.result_status', 'in', ['F', 'C']),
      ),
    )
    .orderBy('m.created_at')
    .orderBy('m.id')
    .limit(limit)
    .execute();
}

/** Locks a waiting message for the transaction that builds it (PostgreSQL: another instance building it skips it). */
export async function lockWaiting(trx: Db, id: string): Promise<boolean> {
  const row = await forClaim(
    trx,
    trx.selectFrom('outbound_messages').select('id').where('id', '=', id).where('state', '=', OutboundState.waiting),
  ).executeTakeFirst();
  return row !== undefined;
}

export async function setWriteBackPayload(
  trx: Db,
  id: string,
  set: { payload: string; state: OutboundState; lastError: string | null; now: string },
): Promise<void> {
  await trx
    .updateTable('outbound_messages')
    .set({ payload: set.payload, state: set.state, last_error: set.lastError, next_attempt_at: set.now, updated_at: set.now })
    .where('id', '=', id)
    .execute();
}

export interface PoolCancelDue {
  caseId: string;
  destinationId: string;
  deidentify: number;
  studyInstanceUid: string;
  accessionNumber: string | null;
  patientId: string | null;
  issuerOfPatientId: string | null;
}

/**
 * Cancelled cases whose study reached one of `destinations` (something of it
 * was sent, or all of it), and whose pool has not been told yet: one
 * pool-cancel per (case, destination) is queued from these.
 */
export async function poolCancelsDue(db: Db, destinations: readonly string[], limit: number): Promise<PoolCancelDue[]> {
  if (destinations.length === 0) return [];
  const rows = await db
    .selectFrom('deliveries as d')
    .innerJoin('cases as c', 'c.id', 'd.case_id')
    .innerJoin('studies as s', 's.study_instance_uid', 'd.study_instance_uid')
    .select(['d.case_id', 'd.destination_id', 'd.deidentify', 'd.study_instance_uid', 'c.accession_number', 's.patient_id', 's.issuer_of_patient_id'])
    .where('c.state', '=', CaseState.cancelled)
    .where('d.destination_id', 'in', destinations)
    .where((eb) => eb.or([eb('d.state', '=', DeliveryState.delivered), eb('d.instances_sent', '>', 0)]))
    .where(({ not, exists, selectFrom }) =>
      not(
        exists(
          selectFrom('outbound_messages as x')
            .select('x.id')
            .whereRef('x.case_id', '=', 'd.case_id')
            .whereRef('x.destination_id', '=', 'd.destination_id')
            .where('x.kind', '=', OutboundKind.poolCancel),
        ),
      ),
    )
    .orderBy('d.id')
    .limit(limit)
    .execute();
  return rows.map((r) => ({
    caseId: r.case_id,
    destinationId: r.destination_id,
    deidentify: r.deidentify,
    studyInstanceUid: r.study_instance_uid,
    accessionNumber: r.accession_number,
    patientId: r.patient_id,
    issuerOfPatientId: r.issuer_of_patient_id,
  }));
}

/** Locks the case row while its pool-cancel is queued, so two instances do not both queue it. */
export async function lockCancelledCase(trx: Db, caseId: string): Promise<boolean> {
  const row = await forClaim(trx, trx.selectFrom('cases').select('id').where('id', '=', caseId).where('state', '=', CaseState.cancelled)).executeTakeFirst();
  return row !== undefined;
}

export async function hasPoolCancel(trx: Db, caseId: string, destinationId: string): Promise<boolean> {
  const row = await trx
    .selectFrom('outbound_messages')
    .select('id')
    .where('case_id', '=', caseId)
    .where('destination_id', '=', destinationId)
    .where('kind', '=', OutboundKind.poolCancel)
    .executeTakeFirst();
  return row !== undefined;
}

/** What a destination was sent in place of these originals (the pseudonym map; read only). */
export async function sentPseudonyms(db: Db, destinationId: string, studyInstanceUid: string): Promise<Map<string, string>> {
  const rows = await db
    .selectFrom('pseudonyms')
    .select(['kind', 'original', 'pseudonym'])
    .where('destination_id', '=', destinationId)
    .where('study_instance_uid', '=', studyInstanceUid)
    .execute();
  return new Map(rows.map((r) => [`${r.kind}|${r.original}`, r.pseudonym]));
}

/** What an escalation notice may say about a case (no patient identifiers). */
export async function caseForNotice(db: Db, caseId: string) {
  return db.selectFrom('cases').select(['accession_number', 'study_instance_uid', 'priority', 'reader_id']).where('id', '=', caseId).executeTakeFirst();
}

export async function failedWriteBacksOf(db: Db, caseId: string): Promise<{ id: string }[]> {
  return db
    .selectFrom('outbound_messages')
    .select('id')
    .where('case_id', '=', caseId)
    .where('kind', '=', OutboundKind.writeBack)
    .where('state', '=', OutboundState.failed)
    .execute();
}
