import type { Selectable } from 'kysely';
import type { OutboundKind, OutboundState } from '../states.js';

export interface CaseAssignmentTable {
  id: string;
  case_id: string;
  reader_id: string;
  assigned_by: string;
  reason: string;
  assigned_at: string;
  ended_at: string | null;
  /** declined, sla-breach, reassigned, reported */
  end_reason: string | null;
}

export interface SecondReportTable {
  id: string;
  case_id: string;
  /** 1 for the report, 2+ for addenda. */
  version: number;
  reader_id: string;
  text: string;
  impression: string | null;
  radpeer_score: string;
  discrepant: number;
  addendum: number;
  /** api or hl7 */
  source: string;
  submitted_by: string;
  created_at: string;
}

/** What the gateway sends besides images, durably: the write-back ORU to the RIS and QA notifications. */
export interface OutboundMessageTable {
  id: string;
  kind: OutboundKind;
  case_id: string;
  report_id: string | null;
  /** MSH-10 of an HL7 payload: the same on every resend, so the RIS can recognise a retry. */
  control_id: string | null;
  /** The exact bytes to send (HL7 text or JSON): built once, resent unchanged. */
  payload: string;
  state: OutboundState;
  attempts: number;
  next_attempt_at: string;
  last_error: string | null;
  /** The ACK or HTTP status that settled it. */
  response: string | null;
  /** The destination whose `hl7` channel a pool-cancel goes to; NULL for the RIS and QA channels. */
  destination_id: string | null;
  created_at: string;
  updated_at: string;
}

export type CaseAssignmentRow = Selectable<CaseAssignmentTable>;
export type SecondReportRow = Selectable<SecondReportTable>;
export type OutboundMessageRow = Selectable<OutboundMessageTable>;
