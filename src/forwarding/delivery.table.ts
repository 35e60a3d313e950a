import type { Selectable } from 'kysely';
import type { DeliveryInstanceState, DeliveryState } from '../states.js';

export interface DeliveryTable {
  id: string;
  case_id: string;
  destination_id: string;
  study_instance_uid: string;
  state: DeliveryState;
  /** Decided when the delivery is planned (rule override, else the destination's setting). */
  deidentify: number;
  attempts: number;
  next_attempt_at: string;
  last_error: string | null;
  instances_total: number;
  instances_sent: number;
  created_at: string;
  updated_at: string;
  delivered_at: string | null;
}

export interface DeliveryInstanceTable {
  delivery_id: string;
  sop_instance_uid: string;
  state: DeliveryInstanceState;
  error: string | null;
  sent_at: string | null;
}

/**
 * An instance kept back from a de-identified delivery. `detail` names what was
 * found (attribute paths, the risk rule), never a value. Released rows stay, with
 * who released them and why; a released instance that the verifier then stops is
 * excluded again (reason phi-detected, released_at cleared).
 */
export interface DeliveryExclusionTable {
  delivery_id: string;
  case_id: string;
  sop_instance_uid: string;
  sop_class_uid: string;
  series_description: string | null;
  reason: string;
  detail: string | null;
  excluded_at: string;
  released_at: string | null;
  released_by: string | null;
  release_reason: string | null;
}

/** Original identifier -> what a destination saw, so a returned report links back to the real study. */
export interface PseudonymTable {
  destination_id: string;
  /** uid, patient-id, patient-name, accession */
  kind: string;
  original: string;
  pseudonym: string;
  study_instance_uid: string;
  created_at: string;
}

export type DeliveryRow = Selectable<DeliveryTable>;
export type DeliveryInstanceRow = Selectable<DeliveryInstanceTable>;
export type DeliveryExclusionRow = Selectable<DeliveryExclusionTable>;
