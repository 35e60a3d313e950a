import type { Db } from '../db/database.js';

/**
 * Raw text of the HL7 orders and reports that belong to a study (linked to it,
 * naming its StudyInstanceUID, or carrying its accession number): what the
 * verifier reads the patient's other identifiers from.
 */
export async function rawHl7OfStudy(db: Db, studyInstanceUid: string): Promise<string[]> {
  const study = await db.selectFrom('studies').select(['accession_number']).where('study_instance_uid', '=', studyInstanceUid).executeTakeFirst();
  const accession = study?.accession_number ?? null;
  const ofStudy = <T extends 'orders' | 'report_versions'>(table: T) =>
    db
      .selectFrom(`${table} as x` as 'orders as x')
      .innerJoin('hl7_messages as m', 'm.id', 'x.message_id')
      .select('m.raw')
      .where((eb) =>
        eb.or([
          eb('x.linked_study_uid', '=', studyInstanceUid),
          eb('x.study_instance_uid', '=', studyInstanceUid),
          ...(accession ? [eb('x.accession_number', '=', accession)] : []),
        ]),
      )
      .execute();
  const rows = [...(await ofStudy('orders')), ...(await ofStudy('report_versions'))];
  return [...new Set(rows.map((r) => r.raw))];
}
