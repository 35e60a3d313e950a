import type { Db } from '../db/database.js';
import type { CaseRow } from '../cases/case.table.js';
import type { SecondReportRow } from '../reports/report.table.js';
import type { StudyRow } from '../studies/study.table.js';
import type { SopRef } from './sr-builder.js';

/** What an output of one second report version is built from. */
export interface OutputSource {
  report: SecondReportRow;
  case: CaseRow;
  study: StudyRow;
  /** The version before this one (an addendum amends it). */
  previousReportId: string | null;
}

export async function loadOutputSource(db: Db, reportId: string): Promise<OutputSource | undefined> {
  const report = await db.selectFrom('second_reports').selectAll().where('id', '=', reportId).executeTakeFirst();
  if (!report) return undefined;
  const c = await db.selectFrom('cases').selectAll().where('id', '=', report.case_id).executeTakeFirst();
  if (!c) return undefined;
  const study = await db.selectFrom('studies').selectAll().where('study_instance_uid', '=', c.study_instance_uid).executeTakeFirst();
  if (!study) return undefined;
  const previous = await db
    .selectFrom('second_reports')
    .select('id')
    .where('case_id', '=', report.case_id)
    .where('version', '<', report.version)
    .orderBy('version', 'desc')
    .executeTakeFirst();
  return { report, case: c, study, previousReportId: previous?.id ?? null };
}

/** The study's current instances (series, then instance number), with the file of the first for its header. */
export async function studyInstances(db: Db, studyInstanceUid: string): Promise<(SopRef & { filePath: string })[]> {
  const rows = await db
    .selectFrom('instances')
    .select(['series_instance_uid', 'sop_class_uid', 'sop_instance_uid', 'file_path'])
    .where('study_instance_uid', '=', studyInstanceUid)
    .orderBy('series_instance_uid')
    .orderBy('instance_number')
    .orderBy('sop_instance_uid')
    .execute();
  return rows.map((r) => ({
    seriesInstanceUid: r.series_instance_uid,
    sopClassUid: r.sop_class_uid,
    sopInstanceUid: r.sop_instance_uid,
    filePath: r.file_path,
  }));
}

/** Of the given SOP Instance UIDs, those that are instances of the study (with their series and class). */
export async function instancesOfStudy(db: Db, studyInstanceUid: string, sopInstanceUids: readonly string[]): Promise<SopRef[]> {
  if (sopInstanceUids.length === 0) return [];
  const rows = await db
    .selectFrom('instances')
    .select(['series_instance_uid', 'sop_class_uid', 'sop_instance_uid'])
    .where('study_instance_uid', '=', studyInstanceUid)
    .where('sop_instance_uid', 'in', [...sopInstanceUids])
    .execute();
  return rows.map((r) => ({ seriesInstanceUid: r.series_instance_uid, sopClassUid: r.sop_class_uid, sopInstanceUid: r.sop_instance_uid }));
}

export async function insertKeyImages(db: Db, reportId: string, images: readonly SopRef[]): Promise<void> {
  if (images.length === 0) return;
  await db
    .insertInto('second_report_key_images')
    .values(
      images.map((i, position) => ({
        report_id: reportId,
        position,
        sop_instance_uid: i.sopInstanceUid,
        series_instance_uid: i.seriesInstanceUid,
        sop_class_uid: i.sopClassUid,
      })),
    )
    .execute();
}

export async function keyImagesOf(db: Db, reportId: string): Promise<SopRef[]> {
  const rows = await db.selectFrom('second_report_key_images').selectAll().where('report_id', '=', reportId).orderBy('position').execute();
  return rows.map((r) => ({ seriesInstanceUid: r.series_instance_uid, sopClassUid: r.sop_class_uid, sopInstanceUid: r.sop_instance_uid }));
}
