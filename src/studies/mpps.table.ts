import type { Selectable } from 'kysely';

export const MppsStatus = { inProgress: 'IN PROGRESS', completed: 'COMPLETED', discontinued: 'DISCONTINUED' } as const;
export type MppsStatus = (typeof MppsStatus)[keyof typeof MppsStatus];

/** One Modality Performed Procedure Step, as created and last set by the modality. */
export interface MppsTable {
  sop_instance_uid: string;
  status: MppsStatus;
  /** From the Scheduled Step Attributes Sequence: the study the step produced. */
  study_instance_uid: string | null;
  accession_number: string | null;
  patient_id: string | null;
  issuer_of_patient_id: string | null;
  modality: string | null;
  calling_ae: string | null;
  dataset: string;
  created_at: string;
  updated_at: string;
  /** When it became COMPLETED or DISCONTINUED. */
  ended_at: string | null;
}

/** An instance a step's Performed Series Sequence says was produced. */
export interface MppsInstanceTable {
  mpps_uid: string;
  sop_instance_uid: string;
  sop_class_uid: string | null;
  series_instance_uid: string | null;
  study_instance_uid: string | null;
}

export type MppsRow = Selectable<MppsTable>;
