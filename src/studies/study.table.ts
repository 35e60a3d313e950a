import type { Generated, Selectable } from 'kysely';
import type { StudyState } from '../states.js';

export interface StudyTable {
  study_instance_uid: string;
  accession_number: string | null;
  patient_id: string | null;
  study_date: string | null;
  study_description: string | null;
  referring_physician: string | null;
  /** The AE that sent the first instance; rules may condition on it. */
  calling_ae: string | null;
  state: StudyState;
  instance_count: Generated<number>;
  /** Instances that arrived after the study had been declared stable. */
  late_instance_count: Generated<number>;
  size_bytes: Generated<number>;
  first_received_at: string;
  last_received_at: string;
  stable_at: string | null;
  updated_at: string;
  /** Issuer of Patient ID (0010,0021) as sent: the authority of `patient_id`. */
  issuer_of_patient_id: string | null;
  /** JSON array of `{id, issuer, type}` from Other Patient IDs Sequence (0010,1002). */
  other_patient_ids: string | null;
  /** Set while `state` is `held`: why (`identity-conflict`, `incomplete`, ...), what was seen, since when. */
  hold_reason: string | null;
  hold_detail: string | null;
  held_at: string | null;
  /** Patient's Name of the first instance, decoded per its Specific Character Set. */
  patient_name: string | null;
  patient_birth_date: string | null;
  /** The state a hold interrupted (`receiving` or `stable`): where a release goes back to. */
  held_from_state: StudyState | null;
}

export interface SeriesTable {
  series_instance_uid: string;
  study_instance_uid: string;
  modality: string | null;
  body_part_examined: string | null;
  series_number: number | null;
  series_description: string | null;
  instance_count: Generated<number>;
}

export interface InstanceTable {
  sop_instance_uid: string;
  series_instance_uid: string;
  study_instance_uid: string;
  sop_class_uid: string;
  transfer_syntax_uid: string;
  instance_number: number | null;
  /** Relative to `storage.dir`, so the spool can move with its database. */
  file_path: string;
  size_bytes: number;
  sha256: string;
  calling_ae: string | null;
  late: Generated<number>;
  received_at: string;
  /** The instance_versions row that is this instance's current copy. */
  version: Generated<number>;
}

/** Every copy of a SOP instance that was received with other bytes, current or prior, and IOCM rejections. */
export interface InstanceVersionTable {
  sop_instance_uid: string;
  version: number;
  study_instance_uid: string;
  series_instance_uid: string;
  sop_class_uid: string;
  transfer_syntax_uid: string;
  instance_number: number | null;
  sha256: string;
  size_bytes: number;
  file_path: string;
  received_at: string;
  calling_ae: string | null;
  /** When a newer copy replaced this one; null for the current copy. */
  superseded_at: string | null;
  patient_id: string | null;
  issuer_of_patient_id: string | null;
  patient_name: string | null;
  patient_birth_date: string | null;
  accession_number: string | null;
  kind: Generated<VersionKind>;
  /** JSON array of identity attribute names that differ from the version before. */
  identity_changes: string | null;
  conflict_state: ConflictState | null;
  rejected_at: string | null;
  rejection_code: string | null;
}

export type VersionKind = 'instance' | 'iocm-rejection';
export type ConflictState = 'open' | 'released' | 'rejected';

export type StudyRow = Selectable<StudyTable>;
export type SeriesRow = Selectable<SeriesTable>;
export type InstanceRow = Selectable<InstanceTable>;
export type InstanceVersionRow = Selectable<InstanceVersionTable>;
