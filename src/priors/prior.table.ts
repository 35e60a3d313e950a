import type { Selectable } from 'kysely';

export const PriorState = { found: 'found', retrieving: 'retrieving', retrieved: 'retrieved', failed: 'failed' } as const;
export type PriorState = (typeof PriorState)[keyof typeof PriorState];

export type PriorOrigin = 'pacs' | 'gateway';

/** A prior study of the case's patient found at the hospital PACS: read-only context for the reader. */
export interface CasePriorTable {
  case_id: string;
  study_instance_uid: string;
  study_date: string | null;
  /** JSON array of modality codes. */
  modalities: string;
  study_description: string | null;
  accession_number: string | null;
  state: PriorState;
  /** Why it failed, or what was retrieved (never PHI). */
  detail: string | null;
  instances_expected: number | null;
  /** `pacs`: fetched for the case (read-only context); `gateway`: already here when found. */
  origin: PriorOrigin;
  created_at: string;
  updated_at: string;
}

export type CasePriorRow = Selectable<CasePriorTable>;
