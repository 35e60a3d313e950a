import type { Selectable } from 'kysely';
import type { CaseState } from '../states.js';

export interface CaseTable {
  id: string;
  study_instance_uid: string;
  accession_number: string | null;
  state: CaseState;
  priority: string;
  sla_hours: number;
  due_at: string;
  destination_id: string | null;
  reader_group: string | null;
  /** 1: the pool is not shown the first report. */
  blinded: number;
  /** NULL: the destination's setting decides. */
  deidentify: number | null;
  rule_set_version: number | null;
  /** JSON [{ruleId, kind, detail}]: every reason the case exists, added to as rules fire again. */
  reasons: string;
  /** The reader the case is assigned to (gateway assignment), if any. */
  reader_id: string | null;
  discrepant: number;
  /** When the SLA was first found breached; NULL while within it. */
  sla_breached_at: string | null;
  /** 0 none, 1 reassigned after an SLA breach, 2 notified. */
  escalation_level: number;
  created_by: string;
  created_at: string;
  updated_at: string;
}

export interface ManualRequestTable {
  id: string;
  study_instance_uid: string;
  reason: string;
  requested_by: string;
  priority: string | null;
  destination_id: string | null;
  case_id: string | null;
  created_at: string;
}

export type CaseRow = Selectable<CaseTable>;
export type ManualRequestRow = Selectable<ManualRequestTable>;
