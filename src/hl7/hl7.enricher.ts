import type { Db } from '../db/database.js';
import type { StudyEnricher } from '../http/studies.routes.js';
import { aiResultsOfStudy, currentReportVersion, json, ordersOfStudy, reportVersionsOfStudy } from './hl7.repository.js';
import type { AiResultRow, OrderRow, ReportVersionRow } from './hl7.table.js';

/**
 * The study resource's `order`, `primaryReport` ({current, history}) and
 * `aiResults`: only what is linked to the study. Held items are not the
 * study's (they may be another patient's); they are listed under /api/messages.
 */
export const hl7StudyEnricher: StudyEnricher = async (db: Db, studyInstanceUid: string) => {
  const [orders, versions, ai] = await Promise.all([
    ordersOfStudy(db, studyInstanceUid),
    reportVersionsOfStudy(db, studyInstanceUid),
    aiResultsOfStudy(db, studyInstanceUid),
  ]);
  const current = currentReportVersion(versions);
  // The latest order is the study's; more than one (a re-ordered exam) are all listed.
  const order = orders.at(-1);
  return {
    order: order ? presentOrder(order) : null,
    orders: orders.map(presentOrder),
    primaryReport: { current: current ? presentReport(current) : null, history: versions.map(presentReport) },
    aiResults: ai.map(presentAiResult),
  };
};

export function presentOrder(o: OrderRow): Record<string, unknown> {
  return {
    accessionNumber: o.accession_number,
    placerOrderNumber: o.placer_order_number,
    fillerOrderNumber: o.filler_order_number,
    orderControl: o.order_control,
    orderStatus: o.order_status,
    procedure: o.procedure_code || o.procedure_text ? { code: o.procedure_code, text: o.procedure_text } : null,
    modality: o.modality,
    priority: o.priority,
    reasonForStudy: json.parseCoded(o.reason_for_study),
    relevantClinicalInfo: o.relevant_clinical_info,
    diagnoses: json.parseCoded(o.diagnoses),
    referringPhysician: o.referring_physician_id || o.referring_physician_name ? { id: o.referring_physician_id, name: o.referring_physician_name } : null,
    secondOpinionRequested: o.second_opinion_requested === 1,
    cancelledAt: o.cancelled_at,
    updatedAt: o.updated_at,
  };
}

export function presentReport(r: ReportVersionRow): Record<string, unknown> {
  return {
    status: r.result_status,
    text: r.report_text,
    radiologistId: r.radiologist_id,
    radiologistName: r.radiologist_name,
    observedAt: r.observed_at,
    receivedAt: r.received_at,
    procedure: r.procedure_code || r.procedure_text ? { code: r.procedure_code, text: r.procedure_text } : null,
    reasonForStudy: json.parseCoded(r.reason_for_study),
    diagnoses: json.parseCoded(r.diagnoses),
  };
}

export function presentAiResult(a: AiResultRow): Record<string, unknown> {
  return {
    sender: a.sender_application,
    finding: { code: a.finding_code, text: a.finding_text, system: a.finding_system },
    value: a.value_text,
    abnormalFlags: a.abnormal_flags ? a.abnormal_flags.split('~') : [],
    positive: a.positive === 1,
    status: a.result_status,
    observedAt: a.observed_at,
    receivedAt: a.received_at,
  };
}
