import type { AuditEventRow } from '../audit/audit.table.js';
import type { Db } from '../db/database.js';
import type { DeliveryRow } from '../forwarding/delivery.table.js';
import type { AiResultRow, OrderRow, ReportVersionRow } from '../hl7/hl7.table.js';
import type { CaseAssignmentRow, OutboundMessageRow, SecondReportRow } from '../reports/report.table.js';
import type { DecisionRow } from '../rules/rules.table.js';

/**
 * The rows a case's timeline is told from (case-timeline.ts): each read as
 * stored, oldest first where the order matters; only the columns it shows.
 */

export async function ordersLinkedToStudy(
  db: Db,
  studyInstanceUid: string,
): Promise<Pick<OrderRow, 'created_at' | 'order_control' | 'procedure_code' | 'link_state'>[]> {
  return db
    .selectFrom('orders')
    .select(['created_at', 'order_control', 'procedure_code', 'link_state'])
    .where('linked_study_uid', '=', studyInstanceUid)
    .execute();
}

export async function reportVersionsLinkedToStudy(
  db: Db,
  studyInstanceUid: string,
): Promise<Pick<ReportVersionRow, 'received_at' | 'result_status' | 'radiologist_id'>[]> {
  return db
    .selectFrom('report_versions')
    .select(['received_at', 'result_status', 'radiologist_id'])
    .where('linked_study_uid', '=', studyInstanceUid)
    .orderBy('id')
    .execute();
}

export async function aiResultsLinkedToStudy(
  db: Db,
  studyInstanceUid: string,
): Promise<Pick<AiResultRow, 'received_at' | 'finding_code' | 'finding_text' | 'positive'>[]> {
  return db
    .selectFrom('ai_results')
    .select(['received_at', 'finding_code', 'finding_text', 'positive'])
    .where('linked_study_uid', '=', studyInstanceUid)
    .orderBy('id')
    .execute();
}

export async function decisionsOfStudy(
  db: Db,
  studyInstanceUid: string,
): Promise<Pick<DecisionRow, 'evaluated_at' | 'flagged' | 'reasons' | 'trigger' | 'rule_set_version' | 'case_id'>[]> {
  return db
    .selectFrom('decisions')
    .select(['evaluated_at', 'flagged', 'reasons', 'trigger', 'rule_set_version', 'case_id'])
    .where('study_instance_uid', '=', studyInstanceUid)
    .orderBy('id')
    .execute();
}

export async function deliveriesOfCase(db: Db, caseId: string): Promise<DeliveryRow[]> {
  return db.selectFrom('deliveries').selectAll().where('case_id', '=', caseId).orderBy('id').execute();
}

export async function assignmentsOfCase(db: Db, caseId: string): Promise<CaseAssignmentRow[]> {
  return db.selectFrom('case_assignments').selectAll().where('case_id', '=', caseId).orderBy('id').execute();
}

export async function secondReportSummariesOfCase(
  db: Db,
  caseId: string,
): Promise<Pick<SecondReportRow, 'created_at' | 'version' | 'reader_id' | 'radpeer_score' | 'source' | 'submitted_by'>[]> {
  return db
    .selectFrom('second_reports')
    .select(['created_at', 'version', 'reader_id', 'radpeer_score', 'source', 'submitted_by'])
    .where('case_id', '=', caseId)
    .orderBy('version')
    .execute();
}

export async function outboundMessagesOfCase(
  db: Db,
  caseId: string,
): Promise<Pick<OutboundMessageRow, 'kind' | 'state' | 'attempts' | 'last_error' | 'created_at' | 'updated_at' | 'destination_id'>[]> {
  return db
    .selectFrom('outbound_messages')
    .select(['kind', 'state', 'attempts', 'last_error', 'created_at', 'updated_at', 'destination_id'])
    .where('case_id', '=', caseId)
    .orderBy('id')
    .execute();
}

export async function auditEventsOfCase(db: Db, caseId: string): Promise<AuditEventRow[]> {
  return db.selectFrom('audit_events').selectAll().where('entity_type', '=', 'case').where('entity_id', '=', caseId).orderBy('id').execute();
}
