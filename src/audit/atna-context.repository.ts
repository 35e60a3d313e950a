import type { Db } from '../db/database.js';
import type { AtnaContext, AtnaEventRow } from './atna-message.js';

/**
 * What an audit event refers to, for its ATNA message: the case's or study's
 * patient (id, issuer), study and accession, and the delivery it names.
 * Read when the message is built (these do not change after the event).
 */
export async function atnaContext(db: Db, row: AtnaEventRow, details: Record<string, unknown>): Promise<AtnaContext> {
  let studyUid: string | undefined;
  let accession: string | null = null;
  if (row.entity_type === 'case' && row.entity_id) {
    const c = await db.selectFrom('cases').select(['study_instance_uid', 'accession_number']).where('id', '=', row.entity_id).executeTakeFirst();
    if (c) {
      studyUid = c.study_instance_uid;
      accession = c.accession_number;
    }
  } else if (row.entity_type === 'study' && row.entity_id) {
    studyUid = row.entity_id;
  }
  let ctx: AtnaContext = {};
  if (studyUid) {
    const s = await db
      .selectFrom('studies')
      .select(['patient_id', 'issuer_of_patient_id', 'accession_number'])
      .where('study_instance_uid', '=', studyUid)
      .executeTakeFirst();
    ctx = {
      studyInstanceUid: studyUid,
      accessionNumber: accession ?? s?.accession_number ?? null,
      ...(s?.patient_id ? { patient: { id: s.patient_id, issuer: s.issuer_of_patient_id } } : {}),
    };
  }
  const deliveryId = typeof details['deliveryId'] === 'string' ? details['deliveryId'] : undefined;
  if (deliveryId) {
    const d = await db.selectFrom('deliveries').select(['destination_id', 'deidentify']).where('id', '=', deliveryId).executeTakeFirst();
    if (d) ctx = { ...ctx, delivery: { destinationId: d.destination_id, deidentified: d.deidentify === 1 } };
  } else if (row.entity_type === 'case' && row.entity_id && (row.action === 'case.forwarding' || row.action === 'case.awaiting-read')) {
    // Forwarding starts for every destination of the case: name the latest delivery's.
    const d = await db
      .selectFrom('deliveries')
      .select(['destination_id', 'deidentify'])
      .where('case_id', '=', row.entity_id)
      .orderBy('id', 'desc')
      .executeTakeFirst();
    if (d) ctx = { ...ctx, delivery: { destinationId: d.destination_id, deidentified: d.deidentify === 1 } };
  }
  return ctx;
}
