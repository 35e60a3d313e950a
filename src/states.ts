/**
 * Every persisted state value, in one place: the database stores these strings
 * and the API shows them, so a rename here is a migration and a README note.
 */
export const StudyState = {
  /** Instances are arriving; the quiet period has not elapsed since the last one. */
  receiving: 'receiving',
  /** No instance for `dicom.stableAfterSeconds`: complete enough to decide on. */
  stable: 'stable',
} as const;
export type StudyState = (typeof StudyState)[keyof typeof StudyState];
