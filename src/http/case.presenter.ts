/**
 * Cases as the API answers them (the Case schema of cases.schemas.ts), with
 * their deliveries, kept-back instances, latest second report and write-back.
 * The reader's view of a case is built from this in reader-view.ts.
 */
import { caseReasons } from '../cases/case.repository.js';
import { secondReportsOfCases, writeBacksOfCases } from '../cases/case-view.repository.js';
import type { CaseRow } from '../cases/case.table.js';
import { priorsViewOfCases } from '../priors/prior.presenter.js';
import type { Db } from '../db/database.js';
import { openExclusionsOfCases } from '../forwarding/exclusion.repository.js';
import type { DeliveryExclusionRow, DeliveryRow } from '../forwarding/delivery.table.js';
import { deliveriesOfCases } from '../forwarding/outbox.repository.js';
import type { OutboundMessageRow, SecondReportRow } from '../reports/report.table.js';
import type { CaseView, DeliveryView, ExcludedInstanceView, SecondReportView } from './cases.schemas.js';

export function presentDelivery(d: DeliveryRow): DeliveryView {
  return {
    id: d.id,
    destinationId: d.destination_id,
    state: d.state,
    attempts: d.attempts,
    lastError: d.last_error,
    deidentified: d.deidentify === 1,
    instancesTotal: d.instances_total,
    instancesSent: d.instances_sent,
    nextAttemptAt: d.state === 'pending' ? d.next_attempt_at : null,
    deliveredAt: d.delivered_at,
    updatedAt: d.updated_at,
  };
}

/** An instance kept back from a de-identified delivery: what a person needs to decide on a release (no values). */
export function presentExclusion(e: DeliveryExclusionRow & { destination_id: string }): ExcludedInstanceView {
  return {
    sopInstanceUid: e.sop_instance_uid,
    sopClassUid: e.sop_class_uid,
    seriesDescription: e.series_description,
    reason: e.reason,
    detail: e.detail,
    destinationId: e.destination_id,
    excludedAt: e.excluded_at,
  };
}

export function presentReport(r: SecondReportRow): SecondReportView {
  return {
    id: r.id,
    version: r.version,
    readerId: r.reader_id,
    text: r.text,
    impression: r.impression,
    radpeerScore: r.radpeer_score as SecondReportView['radpeerScore'],
    concordance: r.radpeer_score === '1' ? 'CONCORDANT' : 'DISCORDANT',
    discrepant: r.discrepant === 1,
    addendum: r.addendum === 1,
    source: r.source as SecondReportView['source'],
    createdAt: r.created_at,
  };
}

/** Cases with their deliveries, latest second report and latest write-back, in a few queries. */
export async function presentCases(db: Db, rows: readonly CaseRow[]): Promise<CaseView[]> {
  const ids = rows.map((c) => c.id);
  if (ids.length === 0) return [];
  const deliveries = await deliveriesOfCases(db, ids);
  const exclusions = await openExclusionsOfCases(db, ids);
  const reports = await secondReportsOfCases(db, ids);
  const writeBacks = await writeBacksOfCases(db, ids);
  const priors = await priorsViewOfCases(db, ids);
  return rows.map((c) => {
    const mine = reports.filter((r) => r.case_id === c.id);
    const wb = writeBacks.filter((w) => w.case_id === c.id).at(-1);
    const presented = presentCase(
      c,
      deliveries.filter((d) => d.case_id === c.id),
      mine.at(-1),
      mine.length,
      wb,
      exclusions.filter((e) => e.case_id === c.id),
    );
    return { ...presented, priors: priors.get(c.id) ?? [] };
  });
}

export function presentCase(
  c: CaseRow,
  deliveries: readonly DeliveryRow[] = [],
  report?: SecondReportRow,
  reportVersions = 0,
  writeBack?: OutboundMessageRow,
  exclusions: readonly (DeliveryExclusionRow & { destination_id: string })[] = [],
): Omit<CaseView, 'priors'> {
  const reasons = caseReasons(c);
  return {
    id: c.id,
    studyInstanceUid: c.study_instance_uid,
    accessionNumber: c.accession_number,
    state: c.state,
    ruleIds: [...new Set(reasons.map((r) => r.ruleId))],
    reasons,
    priority: c.priority as CaseView['priority'],
    slaHours: c.sla_hours,
    dueAt: c.due_at,
    readerId: c.reader_id,
    destinationId: c.destination_id,
    readerGroup: c.reader_group,
    blinded: c.blinded === 1,
    deidentify: c.deidentify === null ? null : c.deidentify === 1,
    discrepant: c.discrepant === 1,
    ruleSetVersion: c.rule_set_version,
    slaBreachedAt: c.sla_breached_at,
    escalationLevel: c.escalation_level,
    deliveries: deliveries.map(presentDelivery),
    excludedInstances: exclusions.map(presentExclusion),
    secondReport: report ? { ...presentReport(report), versions: reportVersions } : null,
    writeBack: writeBack
      ? {
          state: writeBack.state,
          attempts: writeBack.attempts,
          lastError: writeBack.last_error,
          controlId: writeBack.control_id,
          response: writeBack.response,
          updatedAt: writeBack.updated_at,
        }
      : null,
    createdBy: c.created_by,
    createdAt: c.created_at,
    updatedAt: c.updated_at,
  };
}
