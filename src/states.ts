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

/**
 * A case is one second read of one study (DESIGN.md section 1). The API shows
 * these values; a discrepant result is the `discrepant` flag, not a state.
 */
export const CaseState = {
  flagged: 'flagged',
  forwarding: 'forwarding',
  awaitingRead: 'awaiting-read',
  reported: 'reported',
  writtenBack: 'written-back',
  held: 'held',
  failed: 'failed',
  cancelled: 'cancelled',
} as const;
export type CaseState = (typeof CaseState)[keyof typeof CaseState];

/** States in which a case still takes new reasons instead of a second case being opened. */
export const OPEN_CASE_STATES: readonly CaseState[] = [CaseState.flagged, CaseState.forwarding, CaseState.awaitingRead, CaseState.reported, CaseState.held];

/** One delivery job: a case's study to one destination. */
export const DeliveryState = {
  /** Waiting for its next attempt (new, retrying with backoff, or a delta of late instances). */
  pending: 'pending',
  /** Claimed by a worker under a lease. */
  sending: 'sending',
  delivered: 'delivered',
  /** Permanent failure or too many attempts: needs a person (POST /api/cases/{id}/retry). */
  dead: 'dead',
  /** Not sent on purpose (e.g. burned-in annotation with de-identification): needs review. */
  held: 'held',
} as const;
export type DeliveryState = (typeof DeliveryState)[keyof typeof DeliveryState];

export const DeliveryInstanceState = {
  pending: 'pending',
  sent: 'sent',
  failed: 'failed',
} as const;
export type DeliveryInstanceState = (typeof DeliveryInstanceState)[keyof typeof DeliveryInstanceState];

/** Messages the gateway sends besides images. */
export const OutboundKind = {
  /** The second report as ORU^R01 to `hl7.ris`. */
  writeBack: 'write-back',
  /** A discrepant second read, POSTed as JSON to `escalation.webhook.url`. */
  webhook: 'webhook',
  /** A discrepant second read, as ORU^R01 to `escalation.hl7`. */
  qaHl7: 'qa-hl7',
} as const;
export type OutboundKind = (typeof OutboundKind)[keyof typeof OutboundKind];

export const OutboundState = {
  pending: 'pending',
  /** AA (or HTTP 2xx): done. */
  accepted: 'accepted',
  /** AR, or too many attempts: visible, not retried by itself. */
  failed: 'failed',
} as const;
export type OutboundState = (typeof OutboundState)[keyof typeof OutboundState];
