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
}

export type StudyRow = Selectable<StudyTable>;
export type SeriesRow = Selectable<SeriesTable>;
export type InstanceRow = Selectable<InstanceTable>;
