import type { Selectable } from 'kysely';
import type { LinkState, MessageStatus } from '../states.js';

export interface Hl7MessageTable {
  /** Sortable (time-ordered) text id: portable, and orders rows by arrival. */
  id: string;
  /** MSH-3 / MSH-4 / MSH-10: the duplicate key (empty string, not NULL, when absent, so the key compares). */
  sender_application: string;
  sender_facility: string;
  control_id: string;
  /** `ORU^R01` as sent (MSH-9.1^MSH-9.2). */
  message_type: string;
  /** order, report, ai-result, patient-merge, unsupported, malformed. */
  kind: string;
  hl7_version: string | null;
  status: MessageStatus;
  reason: string | null;
  ack_code: string;
  /** The first study / accession the message is about, for the review list. */
  study_instance_uid: string | null;
  accession_number: string | null;
  remote_address: string | null;
  /** The message as received, decoded in its MSH-18 character set. PHI lives here and only here (never in logs). */
  raw: string;
  /** Set on a message that reused this earlier message's MSH-3/4/10 with other content (held, answered AR). */
  reuse_of: string | null;
  received_at: string;
  updated_at: string;
}

interface Linkable {
  accession_number: string | null;
  /** As the message gave it (ZDS-1 / IPC-3), before linking. */
  study_instance_uid: string | null;
  placer_order_number: string | null;
  filler_order_number: string | null;
  patient_id: string | null;
  patient_id_authority: string | null;
  /** JSON [{id, authority, type}]: every PID-3 repetition (NULL for rows from before migration 010). */
  patient_identifiers: string | null;
  link_state: LinkState;
  /** The study it is linked to (only when link_state is linked). */
  linked_study_uid: string | null;
  hold_reason: string | null;
}

export interface OrderTable extends Linkable {
  id: string;
  /** The message that created or last changed it. */
  message_id: string;
  sender_application: string;
  order_control: string | null;
  order_status: string | null;
  procedure_code: string | null;
  procedure_text: string | null;
  modality: string | null;
  priority: string | null;
  /** JSON arrays of {code, text, system}: read whole, never queried inside. */
  reason_for_study: string;
  relevant_clinical_info: string | null;
  diagnoses: string;
  referring_physician_id: string | null;
  referring_physician_name: string | null;
  second_opinion_requested: number;
  /** ORC-1 CA/DC/OC received: the RIS cancelled this order. */
  cancelled_at: string | null;
  created_at: string;
  updated_at: string;
}

export interface ReportVersionTable extends Linkable {
  id: string;
  message_id: string;
  sender_application: string;
  result_status: string;
  report_text: string;
  radiologist_id: string | null;
  radiologist_name: string | null;
  procedure_code: string | null;
  procedure_text: string | null;
  reason_for_study: string;
  diagnoses: string;
  observed_at: string | null;
  received_at: string;
  updated_at: string;
}

export interface AiResultTable extends Linkable {
  id: string;
  message_id: string;
  sender_application: string;
  finding_code: string | null;
  finding_text: string | null;
  finding_system: string | null;
  value_text: string | null;
  abnormal_flags: string | null;
  positive: number;
  result_status: string | null;
  observed_at: string | null;
  received_at: string;
  updated_at: string;
}

export interface PatientMergeTable {
  id: string;
  message_id: string;
  patient_id: string;
  prior_patient_id: string;
  /** The surviving id's authority (PID-3 CX.4). */
  authority: string | null;
  /** MRG-1 CX.4. */
  prior_authority: string | null;
  studies_updated: number;
  records_updated: number;
  applied_at: string;
}

export type Hl7MessageRow = Selectable<Hl7MessageTable>;
export type OrderRow = Selectable<OrderTable>;
export type ReportVersionRow = Selectable<ReportVersionTable>;
export type AiResultRow = Selectable<AiResultTable>;
export type PatientMergeRow = Selectable<PatientMergeTable>;
