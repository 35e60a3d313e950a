import type { AiResultTable, Hl7MessageTable, OrderTable, PatientMergeTable, ReportVersionTable } from '../hl7/hl7.table.js';
import type { DeliveryExclusionTable, DeliveryInstanceTable, DeliveryTable, PseudonymTable } from '../forwarding/delivery.table.js';
import type { CaseAssignmentTable, OutboundMessageTable, SecondReportTable } from '../reports/report.table.js';
import type { AuditEventTable, AuditOutboxTable, AuditSinkTable } from '../audit/audit.table.js';
import type { CaseArbitrationTable } from '../reports/arbitration.table.js';
import type { CaseTable, ManualRequestTable } from '../cases/case.table.js';
import type { DecisionTable, RuleSetTable, SamplingBucketTable, SettingTable } from '../rules/rules.table.js';
import type { StudyTable, SeriesTable, InstanceTable, InstanceVersionTable } from '../studies/study.table.js';
import type { MppsInstanceTable, MppsTable } from '../studies/mpps.table.js';
import type { CasePriorTable } from '../priors/prior.table.js';
import type { GatewayInstanceTable } from '../instances/instance.table.js';
import type { JobTable } from '../jobs/job.table.js';
import type { SecondReportKeyImageTable } from '../outputs/output.table.js';

/** Every table, by name, as kysely sees it. Each domain owns its `*.table.ts`. */
export interface Database {
  studies: StudyTable;
  series: SeriesTable;
  instances: InstanceTable;
  instance_versions: InstanceVersionTable;
  hl7_messages: Hl7MessageTable;
  orders: OrderTable;
  report_versions: ReportVersionTable;
  ai_results: AiResultTable;
  patient_merges: PatientMergeTable;
  settings: SettingTable;
  rule_sets: RuleSetTable;
  audit_events: AuditEventTable;
  audit_sinks: AuditSinkTable;
  audit_outbox: AuditOutboxTable;
  decisions: DecisionTable;
  sampling_buckets: SamplingBucketTable;
  cases: CaseTable;
  manual_requests: ManualRequestTable;
  deliveries: DeliveryTable;
  delivery_instances: DeliveryInstanceTable;
  delivery_exclusions: DeliveryExclusionTable;
  pseudonyms: PseudonymTable;
  case_assignments: CaseAssignmentTable;
  second_reports: SecondReportTable;
  outbound_messages: OutboundMessageTable;
  case_arbitrations: CaseArbitrationTable;
  gateway_instances: GatewayInstanceTable;
  jobs: JobTable;
  second_report_key_images: SecondReportKeyImageTable;
  mpps: MppsTable;
  mpps_instances: MppsInstanceTable;
  case_priors: CasePriorTable;
}
