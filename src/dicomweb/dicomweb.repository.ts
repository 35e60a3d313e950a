import { sql, type ExpressionBuilder } from 'kysely';
import type { Db } from '../db/database.js';
import type { Database } from '../db/schema.js';
import { CaseState, DeliveryInstanceState, StudyState } from '../states.js';

/** QIDO match keys as parsed from the query string (PS3.18 8.3.4, PS3.4 C.2.2.2). */
export interface QidoMatch {
  studyInstanceUid?: string[];
  seriesInstanceUid?: string[];
  sopInstanceUid?: string[];
  patientId?: string;
  /** With `*` and `?` wildcards. */
  patientName?: string;
  accessionNumber?: string;
  /** YYYYMMDD bounds, either open. */
  studyDate?: { from?: string; to?: string };
  modality?: string;
  modalitiesInStudy?: string[];
  limit: number;
  offset: number;
}

export interface StudyQueryRow {
  study_instance_uid: string;
  accession_number: string | null;
  patient_id: string | null;
  issuer_of_patient_id: string | null;
  patient_name: string | null;
  patient_birth_date: string | null;
  study_date: string | null;
  study_description: string | null;
  referring_physician: string | null;
  series_count: number;
  instance_count: number;
  /** One stored file of the study, for attributes beyond these columns (includefield). */
  sample_path: string | null;
}

export interface SeriesQueryRow extends StudyQueryRow {
  series_instance_uid: string;
  modality: string | null;
  series_number: number | null;
  series_description: string | null;
  body_part_examined: string | null;
  series_instance_count: number;
}

export interface InstanceQueryRow extends SeriesQueryRow {
  sop_instance_uid: string;
  sop_class_uid: string;
  transfer_syntax_uid: string;
  instance_number: number | null;
  file_path: string;
  size_bytes: number;
}

type StudyEb = ExpressionBuilder<Database & { s: Database['studies'] }, 's'>;

/** PN wildcard match (`*`, `?`), case-insensitive on both engines. */
function likePattern(value: string): string {
  return value
    .toLowerCase()
    .replace(/[\\%_]/g, (c) => `\\${c}`)
    .replace(/\*/g, '%')
    .replace(/\?/g, '_');
}

function studyFilters(eb: StudyEb, m: QidoMatch) {
  const and = [];
  if (m.studyInstanceUid?.length) and.push(eb('s.study_instance_uid', 'in', m.studyInstanceUid));
  if (m.patientId !== undefined) and.push(eb('s.patient_id', '=', m.patientId));
  if (m.accessionNumber !== undefined) and.push(eb('s.accession_number', '=', m.accessionNumber));
  if (m.patientName !== undefined) {
    // DICOM PN keeps `^` between components; a search for "DOE*" matches "DOE^JANE".
    and.push(sql<boolean>`lower(coalesce(s.patient_name, '')) like ${likePattern(m.patientName)} escape '\\'`);
  }
  if (m.studyDate?.from) and.push(eb('s.study_date', '>=', m.studyDate.from));
  if (m.studyDate?.to) and.push(eb('s.study_date', '<=', m.studyDate.to));
  if (m.modalitiesInStudy?.length) {
    const mods = m.modalitiesInStudy;
    and.push(
      eb.exists(
        eb
          .selectFrom('series as ms')
          .select('ms.series_instance_uid')
          .whereRef('ms.study_instance_uid', '=', 's.study_instance_uid')
          .where('ms.modality', 'in', mods),
      ),
    );
  }
  return eb.and(and);
}

const studyColumns = [
  's.study_instance_uid',
  's.accession_number',
  's.patient_id',
  's.issuer_of_patient_id',
  's.patient_name',
  's.patient_birth_date',
  's.study_date',
  's.study_description',
  's.referring_physician',
  's.instance_count',
] as const;

export async function queryStudies(db: Db, m: QidoMatch): Promise<StudyQueryRow[]> {
  const rows = await db
    .selectFrom('studies as s')
    .select(studyColumns)
    .select((eb) => [
      eb
        .selectFrom('series as c')
        .select((e) => e.fn.countAll<number>().as('n'))
        .whereRef('c.study_instance_uid', '=', 's.study_instance_uid')
        .as('series_count'),
      eb
        .selectFrom('instances as i')
        .select('i.file_path')
        .whereRef('i.study_instance_uid', '=', 's.study_instance_uid')
        .orderBy('i.sop_instance_uid')
        .limit(1)
        .as('sample_path'),
    ])
    .where((eb) => studyFilters(eb, m))
    .orderBy('s.first_received_at')
    .orderBy('s.study_instance_uid')
    .limit(m.limit)
    .offset(m.offset)
    .execute();
  return rows.map((r) => ({ ...r, series_count: Number(r.series_count ?? 0), instance_count: Number(r.instance_count), sample_path: r.sample_path ?? null }));
}

export async function querySeries(db: Db, m: QidoMatch): Promise<SeriesQueryRow[]> {
  let q = db
    .selectFrom('series as r')
    .innerJoin('studies as s', 's.study_instance_uid', 'r.study_instance_uid')
    .select(studyColumns)
    .select([
      'r.series_instance_uid',
      'r.modality',
      'r.series_number',
      'r.series_description',
      'r.body_part_examined',
      'r.instance_count as series_instance_count',
    ])
    .select((eb) => [
      eb
        .selectFrom('series as c')
        .select((e) => e.fn.countAll<number>().as('n'))
        .whereRef('c.study_instance_uid', '=', 's.study_instance_uid')
        .as('series_count'),
      eb
        .selectFrom('instances as i')
        .select('i.file_path')
        .whereRef('i.series_instance_uid', '=', 'r.series_instance_uid')
        .orderBy('i.sop_instance_uid')
        .limit(1)
        .as('sample_path'),
    ])
    .where((eb) => studyFilters(eb as unknown as StudyEb, m));
  if (m.seriesInstanceUid?.length) q = q.where('r.series_instance_uid', 'in', m.seriesInstanceUid);
  if (m.modality !== undefined) q = q.where('r.modality', '=', m.modality);
  const rows = await q.orderBy('r.series_number').orderBy('r.series_instance_uid').limit(m.limit).offset(m.offset).execute();
  return rows.map((r) => ({
    ...r,
    series_count: Number(r.series_count ?? 0),
    instance_count: Number(r.instance_count),
    series_instance_count: Number(r.series_instance_count),
    sample_path: r.sample_path ?? null,
  }));
}

export async function queryInstances(db: Db, m: QidoMatch): Promise<InstanceQueryRow[]> {
  let q = db
    .selectFrom('instances as i')
    .innerJoin('series as r', 'r.series_instance_uid', 'i.series_instance_uid')
    .innerJoin('studies as s', 's.study_instance_uid', 'i.study_instance_uid')
    .select(studyColumns)
    .select([
      'r.series_instance_uid',
      'r.modality',
      'r.series_number',
      'r.series_description',
      'r.body_part_examined',
      'r.instance_count as series_instance_count',
    ])
    .select(['i.sop_instance_uid', 'i.sop_class_uid', 'i.transfer_syntax_uid', 'i.instance_number', 'i.file_path', 'i.size_bytes'])
    .select((eb) =>
      eb
        .selectFrom('series as c')
        .select((e) => e.fn.countAll<number>().as('n'))
        .whereRef('c.study_instance_uid', '=', 's.study_instance_uid')
        .as('series_count'),
    )
    .where((eb) => studyFilters(eb as unknown as StudyEb, m));
  if (m.seriesInstanceUid?.length) q = q.where('i.series_instance_uid', 'in', m.seriesInstanceUid);
  if (m.sopInstanceUid?.length) q = q.where('i.sop_instance_uid', 'in', m.sopInstanceUid);
  if (m.modality !== undefined) q = q.where('r.modality', '=', m.modality);
  const rows = await q
    .orderBy('r.series_number')
    .orderBy('i.series_instance_uid')
    .orderBy('i.instance_number')
    .orderBy('i.sop_instance_uid')
    .limit(m.limit)
    .offset(m.offset)
    .execute();
  return rows.map((r) => ({
    ...r,
    series_count: Number(r.series_count ?? 0),
    instance_count: Number(r.instance_count),
    series_instance_count: Number(r.series_instance_count),
    size_bytes: Number(r.size_bytes),
    sample_path: r.file_path,
  }));
}

/** Case states in which the assigned reader may fetch the study: sent or being sent, and read (an addendum may follow). */
export const PULLABLE_CASE_STATES: readonly CaseState[] = [CaseState.forwarding, CaseState.awaitingRead, CaseState.reported];

export interface ReaderStudy {
  caseId: string;
  studyInstanceUid: string;
  deliveryId: string;
  destinationId: string;
  deidentify: boolean;
}

/**
 * The studies a reader may fetch: those of cases assigned to them in a
 * pullable state, through the case's delivery (to its destination if there is
 * one, else its latest), of a study that is not held. What may be served of
 * each is what that delivery sent (see `sentInstances`).
 */
export async function readerStudies(db: Db, readerId: string): Promise<ReaderStudy[]> {
  const rows = await db
    .selectFrom('cases as c')
    .innerJoin('deliveries as d', 'd.case_id', 'c.id')
    .innerJoin('studies as s', 's.study_instance_uid', 'c.study_instance_uid')
    .select(['c.id as case_id', 'c.study_instance_uid', 'c.destination_id as case_destination', 'd.id as delivery_id', 'd.destination_id', 'd.deidentify'])
    .where('c.reader_id', '=', readerId)
    .where('c.state', 'in', PULLABLE_CASE_STATES)
    .where('s.state', '!=', StudyState.held)
    .orderBy('c.id')
    .orderBy('d.id')
    .execute();
  const byCase = new Map<string, ReaderStudy>();
  for (const r of rows) {
    const prev = byCase.get(r.case_id);
    // The delivery to the case's own destination wins; else the latest (ids sort by creation).
    if (prev && prev.destinationId === r.case_destination && r.destination_id !== r.case_destination) continue;
    byCase.set(r.case_id, {
      caseId: r.case_id,
      studyInstanceUid: r.study_instance_uid,
      deliveryId: r.delivery_id,
      destinationId: r.destination_id,
      deidentify: r.deidentify === 1,
    });
  }
  return [...byCase.values()];
}

/** The instances a delivery sent (for a pull destination: prepared and verified), with what serving them needs. */
export async function sentInstances(
  db: Db,
  deliveryId: string,
): Promise<(Omit<InstanceQueryRow, keyof StudyQueryRow | 'sample_path'> & { released: number })[]> {
  const rows = await db
    .selectFrom('delivery_instances as x')
    .innerJoin('instances as i', 'i.sop_instance_uid', 'x.sop_instance_uid')
    .innerJoin('series as r', 'r.series_instance_uid', 'i.series_instance_uid')
    .leftJoin('delivery_exclusions as e', (j) => j.onRef('e.delivery_id', '=', 'x.delivery_id').onRef('e.sop_instance_uid', '=', 'x.sop_instance_uid'))
    .select([
      'r.series_instance_uid',
      'r.modality',
      'r.series_number',
      'r.series_description',
      'r.body_part_examined',
      'r.instance_count as series_instance_count',
    ])
    .select(['i.sop_instance_uid', 'i.sop_class_uid', 'i.transfer_syntax_uid', 'i.instance_number', 'i.file_path', 'i.size_bytes'])
    .select((eb) => eb.case().when('e.released_at', 'is not', null).then(1).else(0).end().as('released'))
    .where('x.delivery_id', '=', deliveryId)
    .where('x.state', '=', DeliveryInstanceState.sent)
    .orderBy('r.series_number')
    .orderBy('i.series_instance_uid')
    .orderBy('i.instance_number')
    .orderBy('i.sop_instance_uid')
    .execute();
  return rows.map((r) => ({ ...r, series_instance_count: Number(r.series_instance_count), size_bytes: Number(r.size_bytes), released: Number(r.released) }));
}

export async function studyRow(db: Db, studyInstanceUid: string): Promise<StudyQueryRow | undefined> {
  const rows = await queryStudies(db, { studyInstanceUid: [studyInstanceUid], limit: 1, offset: 0 });
  return rows[0];
}

/** Whether the study exists (with that series, when given). */
export async function studyHasSeries(db: Db, studyInstanceUid: string, seriesInstanceUid?: string): Promise<boolean> {
  let q = db.selectFrom('series').select('series_instance_uid').where('study_instance_uid', '=', studyInstanceUid);
  if (seriesInstanceUid !== undefined) q = q.where('series_instance_uid', '=', seriesInstanceUid);
  return (await q.executeTakeFirst()) !== undefined;
}

/** ModalitiesInStudy of each study: the distinct modalities of its series. */
export async function modalitiesOfStudies(db: Db, studyUids: string[]): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  if (studyUids.length === 0) return out;
  const rows = await db.selectFrom('series').select(['study_instance_uid', 'modality']).where('study_instance_uid', 'in', studyUids).execute();
  for (const r of rows) {
    if (!r.modality) continue;
    const list = out.get(r.study_instance_uid) ?? [];
    if (!list.includes(r.modality)) list.push(r.modality);
    out.set(r.study_instance_uid, list);
  }
  return out;
}
