import type { Db } from '../db/database.js';
import { manualRequestsOfStudies } from '../cases/case.repository.js';
import type { CodedValue } from '../hl7/hl7-parse.js';
import { LinkState } from '../states.js';
import { seriesOfStudies } from '../studies/study.repository.js';
import type { StudyRow } from '../studies/study.table.js';
import type { DiagnosisInput, EvaluationInput, OrderInput, Priority, ReportStatus, ReportVersion } from './rule.types.js';
import { decisionsOfStudies, parseDecisionRow } from './rules.repository.js';

export type StoredInput = Omit<EvaluationInput, 'samplingState' | 'now'>;

/**
 * Maps what is stored about studies (series, linked order, report versions,
 * AI results, manual requests, earlier decisions) to the engine's input, in a
 * handful of queries for any number of studies: the live path asks for one,
 * a dry-run for a year of them.
 */
export async function loadEvaluationInputs(db: Db, studies: readonly StudyRow[], options: { withPriorDecisions: boolean }): Promise<Map<string, StoredInput>> {
  const uids = studies.map((s) => s.study_instance_uid);
  const out = new Map<string, StoredInput>();
  if (uids.length === 0) return out;
  const chunks: string[][] = [];
  // Keep IN lists well under SQLite's and PostgreSQL's parameter limits.
  for (let i = 0; i < uids.length; i += 500) chunks.push(uids.slice(i, i + 500));

  const series = (await Promise.all(chunks.map((c) => seriesOfStudies(db, c)))).flat();
  const orders = (
    await Promise.all(
      chunks.map((c) =>
        db.selectFrom('orders').selectAll().where('link_state', '=', LinkState.linked).where('linked_study_uid', 'in', c).orderBy('updated_at').execute(),
      ),
    )
  ).flat();
  const reports = (
    await Promise.all(
      chunks.map((c) =>
        db.selectFrom('report_versions').selectAll().where('link_state', '=', LinkState.linked).where('linked_study_uid', 'in', c).orderBy('id').execute(),
      ),
    )
  ).flat();
  const ai = (
    await Promise.all(
      chunks.map((c) =>
        db.selectFrom('ai_results').selectAll().where('link_state', '=', LinkState.linked).where('linked_study_uid', 'in', c).orderBy('id').execute(),
      ),
    )
  ).flat();
  const manual = (await Promise.all(chunks.map((c) => manualRequestsOfStudies(db, c)))).flat();
  const decisions = options.withPriorDecisions ? (await Promise.all(chunks.map((c) => decisionsOfStudies(db, c)))).flat() : [];

  for (const s of studies) {
    out.set(s.study_instance_uid, {
      study: {
        studyInstanceUid: s.study_instance_uid,
        accessionNumber: s.accession_number ?? undefined,
        patientId: s.patient_id ?? undefined,
        modalities: [],
        bodyParts: [],
        studyDescription: s.study_description ?? undefined,
        studyDate: dicomDate(s.study_date),
        callingAe: s.calling_ae ?? undefined,
        referringPhysician: s.referring_physician ?? undefined,
      },
      reports: [],
      aiResults: [],
      manualRequests: [],
      priorDecisions: [],
    });
  }
  for (const x of series) {
    const input = out.get(x.study_instance_uid);
    if (!input) continue;
    if (x.modality && !input.study.modalities.includes(x.modality)) input.study.modalities.push(x.modality);
    if (x.body_part_examined && !input.study.bodyParts.includes(x.body_part_examined)) input.study.bodyParts.push(x.body_part_examined);
  }
  for (const o of orders) {
    const input = out.get(o.linked_study_uid ?? '');
    if (!input) continue;
    // The most recently updated order of the study wins (rows come oldest first).
    const reasons = JSON.parse(o.reason_for_study) as CodedValue[];
    const order: OrderInput = {
      accessionNumber: o.accession_number ?? undefined,
      procedureCode: o.procedure_code ?? undefined,
      procedureText: o.procedure_text ?? undefined,
      reasonForStudy: reasons[0] ? { code: reasons[0].code ?? undefined, text: reasons[0].text ?? undefined } : undefined,
      diagnoses: [...codes(JSON.parse(o.diagnoses) as CodedValue[], 'DG1'), ...codes(reasons, 'OBR-31'), ...obr13Codes(o.relevant_clinical_info)],
      priority: o.priority ?? undefined,
      indication: [o.relevant_clinical_info, ...reasons.map((r) => r.text)].filter((t): t is string => !!t).join('. ') || undefined,
      secondOpinionRequested: o.second_opinion_requested === 1,
    };
    input.order = order;
  }
  for (const r of reports) {
    const input = out.get(r.linked_study_uid ?? '');
    if (!input) continue;
    const version: ReportVersion = {
      status: r.result_status as ReportStatus,
      text: r.report_text,
      radiologistId: r.radiologist_id ?? undefined,
      observedAt: r.observed_at ? new Date(r.observed_at) : new Date(r.received_at),
    };
    input.reports.push(version);
    // Diagnoses the report carries count as the order's when no order said them.
    const extra = [...codes(JSON.parse(r.diagnoses) as CodedValue[], 'DG1'), ...codes(JSON.parse(r.reason_for_study) as CodedValue[], 'OBR-31')];
    if (extra.length > 0) {
      input.order ??= { diagnoses: [] };
      for (const d of extra) if (!input.order.diagnoses.some((x) => x.code === d.code && x.source === d.source)) input.order.diagnoses.push(d);
    }
    if (input.order && !input.order.procedureCode && r.procedure_code) input.order.procedureCode = r.procedure_code;
    if (input.order && !input.order.procedureText && r.procedure_text) input.order.procedureText = r.procedure_text;
  }
  for (const a of ai) {
    out
      .get(a.linked_study_uid ?? '')
      ?.aiResults.push({ findingCode: a.finding_code ?? undefined, findingText: a.finding_text ?? undefined, positive: a.positive === 1 });
  }
  for (const m of manual) {
    out.get(m.study_instance_uid)?.manualRequests.push({
      reason: m.reason,
      requestedBy: m.requested_by,
      priority: (m.priority as Priority | null) ?? undefined,
      destinationId: m.destination_id ?? undefined,
    });
  }
  for (const d of decisions) out.get(d.study_instance_uid)?.priorDecisions?.push(parseDecisionRow(d));
  return out;
}

/**
 * One page of the studies first received in [from, to) (either bound may be absent), oldest first
 * (then by UID), after the keyset `after` (the last study of the previous page): the dry run's input.
 */
export async function studiesReceivedPage(db: Db, o: { from?: string; to?: string; after?: { at: string; uid: string } }, limit: number): Promise<StudyRow[]> {
  let q = db.selectFrom('studies').selectAll();
  if (o.from) q = q.where('first_received_at', '>=', o.from);
  if (o.to) q = q.where('first_received_at', '<', o.to);
  if (o.after) {
    const a = o.after;
    q = q.where((eb) => eb.or([eb('first_received_at', '>', a.at), eb.and([eb('first_received_at', '=', a.at), eb('study_instance_uid', '>', a.uid)])]));
  }
  return q.orderBy('first_received_at').orderBy('study_instance_uid').limit(limit).execute();
}

function codes(values: readonly CodedValue[], source: DiagnosisInput['source']): DiagnosisInput[] {
  return values.filter((v) => !!v.code).map((v) => ({ code: v.code!, text: v.text ?? undefined, source }));
}

/** OBR-13 is free text that some RIS fill with `code^text`: take a leading ICD-10-looking code. */
function obr13Codes(text: string | null): DiagnosisInput[] {
  const m = text ? /^\s*([A-Z][0-9][0-9A-Z](?:\.?[0-9A-Z]{1,4})?)\b/.exec(text) : null;
  return m?.[1] ? [{ code: m[1], source: 'OBR-13' }] : [];
}

function dicomDate(da: string | null): Date | undefined {
  if (!da || !/^\d{8}$/.test(da)) return undefined;
  const d = new Date(Date.UTC(Number(da.slice(0, 4)), Number(da.slice(4, 6)) - 1, Number(da.slice(6, 8))));
  return Number.isNaN(d.getTime()) ? undefined : d;
}
