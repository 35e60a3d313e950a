import type { Selectable } from 'kysely';

export const ArbitrationState = {
  /** Assigned to a third reader (gateway assignment), waiting for the verdict. */
  open: 'open',
  /** Nobody could be assigned (pool assignment, or no reader fits): held for admin/QA, who name one or give the verdict. */
  unassigned: 'unassigned',
  done: 'done',
  /** Its case was cancelled. */
  cancelled: 'cancelled',
} as const;
export type ArbitrationState = (typeof ArbitrationState)[keyof typeof ArbitrationState];

export const ARBITRATION_VERDICTS = ['agree-first', 'agree-second', 'other'] as const;
export type ArbitrationVerdict = (typeof ARBITRATION_VERDICTS)[number];

export interface CaseArbitrationTable {
  id: string;
  case_id: string;
  /** The second report (version 1) whose score asked for arbitration. */
  report_id: string;
  /** JSON list of the ids of the rules whose `arbitration` applied. */
  rule_ids: string;
  trigger_score: string;
  reader_group: string | null;
  state: ArbitrationState;
  arbitrator_id: string | null;
  unassigned_reason: string | null;
  verdict: ArbitrationVerdict | null;
  /** The RADPEER score of the first read after arbitration: 1 (first read stands), the second read's, or the arbitrator's. */
  final_score: string | null;
  text: string | null;
  decided_by: string | null;
  created_at: string;
  decided_at: string | null;
}

export type CaseArbitrationRow = Selectable<CaseArbitrationTable>;
