import type { Db } from '../db/database.js';
import { priorsOfCases, reportsLinkedToStudies } from './prior.repository.js';
import type { PriorState } from './prior.table.js';

export interface PriorView {
  studyInstanceUid: string;
  studyDate: string | null;
  modalities: string[];
  studyDescription: string | null;
  accessionNumber: string | null;
  state: PriorState;
  detail: string | null;
  /** The latest report the RIS sent for the prior (linked to it in the gateway), if any. */
  report: { resultStatus: string; observedAt: string | null; reportVersionId: string } | null;
}

/** `priors` of each case (DESIGN v2), with the reports linked to them. */
export async function priorsViewOfCases(db: Db, caseIds: readonly string[]): Promise<Map<string, PriorView[]>> {
  const rows = await priorsOfCases(db, caseIds);
  const uids = [...new Set(rows.map((r) => r.study_instance_uid))];
  const reports = await reportsLinkedToStudies(db, uids);
  const out = new Map<string, PriorView[]>();
  for (const r of rows) {
    const report = reports.filter((x) => x.linked_study_uid === r.study_instance_uid && x.result_status !== 'W' && x.result_status !== 'D').at(-1);
    const list = out.get(r.case_id) ?? [];
    list.push({
      studyInstanceUid: r.study_instance_uid,
      studyDate: r.study_date,
      modalities: JSON.parse(r.modalities) as string[],
      studyDescription: r.study_description,
      accessionNumber: r.accession_number,
      state: r.state,
      detail: r.detail,
      report: report ? { resultStatus: report.result_status, observedAt: report.observed_at, reportVersionId: report.id } : null,
    });
    out.set(r.case_id, list);
  }
  return out;
}
