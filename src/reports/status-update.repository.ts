import type { Db } from '../db/database.js';

export interface StatusUpdateCase {
  accessionNumber: string | null;
  studyInstanceUid: string;
  /** JSON [{ruleId, kind, detail}]. */
  reasons: string;
  order: {
    placerOrderNumber: string | null;
    fillerOrderNumber: string | null;
    accessionNumber: string | null;
    patientId: string | null;
    patientIdAuthority: string | null;
    procedureCode: string | null;
    procedureText: string | null;
  } | null;
}

/**
 * A case and the RIS order it is the second read of: the latest order linked to
 * its study (of its accession when the case has one), as the RIS sent it.
 */
export async function statusUpdateCase(db: Db, caseId: string): Promise<StatusUpdateCase | undefined> {
  const c = await db.selectFrom('cases').select(['accession_number', 'study_instance_uid', 'reasons']).where('id', '=', caseId).executeTakeFirst();
  if (!c) return undefined;
  let q = db
    .selectFrom('orders')
    .select(['placer_order_number', 'filler_order_number', 'accession_number', 'patient_id', 'patient_id_authority', 'procedure_code', 'procedure_text'])
    .where('linked_study_uid', '=', c.study_instance_uid)
    .where('link_state', '=', 'linked');
  if (c.accession_number) q = q.where('accession_number', '=', c.accession_number);
  const o = await q.orderBy('updated_at', 'desc').orderBy('id', 'desc').executeTakeFirst();
  return {
    accessionNumber: c.accession_number,
    studyInstanceUid: c.study_instance_uid,
    reasons: c.reasons,
    order: o
      ? {
          placerOrderNumber: o.placer_order_number,
          fillerOrderNumber: o.filler_order_number,
          accessionNumber: o.accession_number,
          patientId: o.patient_id,
          patientIdAuthority: o.patient_id_authority,
          procedureCode: o.procedure_code,
          procedureText: o.procedure_text,
        }
      : null,
  };
}
