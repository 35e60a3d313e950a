/**
 * Every persisted state value, in one place: the database stores these strings
 * and the API shows them, so a rename here is a migration and a README note.
 */
export const StudyState = {
  /** Instances are arriving; the quiet period has not elapsed since the last one. */
  receiving: 'receiving',
  /** No instance for `dicom.stableAfterSeconds`: complete enough to decide on. */
  stable: 'stable',
  /** Held for a person (`hold_reason`): nothing of it is forwarded or written back until released. */
  held: 'held',
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
  /** A discrepant second read waits for a third reader's verdict (a rule's `arbitration`); written back after it. */
  arbitration: 'arbitration',
  writtenBack: 'written-back',
  held: 'held',
  failed: 'failed',
  cancelled: 'cancelled',
} as const;
export type CaseState = (typeof CaseState)[keyof typeof CaseState];

/** States in which a case still takes new reasons instead of a second case being opened. */
export const OPEN_CASE_STATES: readonly CaseState[] = [
  CaseState.flagged,
  CaseState.forwarding,
  CaseState.awaitingRead,
  CaseState.reported,
  CaseState.arbitration,
  CaseState.held,
];

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
  /** Its case was cancelled: nothing more is sent (what was sent stays counted in instances_sent). Terminal. */
  cancelled: 'cancelled',
} as const;
export type DeliveryState = (typeof DeliveryState)[keyof typeof DeliveryState];

export const DeliveryInstanceState = {
  pending: 'pending',
  sent: 'sent',
  failed: 'failed',
  /** Kept back from a de-identified delivery (delivery_exclusions says why); sent only once a person releases it. */
  excluded: 'excluded',
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
  /** ORM^O01 with ORC-1 CA to a destination's `hl7` channel: the pool is told that a case it received was cancelled. */
  poolCancel: 'pool-cancel',
  /** ORM^O01 with ORC-1 SC to `hl7.ris`: the order's second read is in progress, done, cancelled or on hold (writeBack.statusUpdates). */
  statusUpdate: 'status-update',
} as const;
export type OutboundKind = (typeof OutboundKind)[keyof typeof OutboundKind];

export const OutboundState = {
  pending: 'pending',
  /** A write-back whose ORU cannot be built yet (no final primary report linked): built and sent once it is. */
  waiting: 'waiting',
  /** AA (or HTTP 2xx): done. */
  accepted: 'accepted',
  /** AR, or too many attempts: visible, not retried by itself. */
  failed: 'failed',
  /** Its case was cancelled before it was sent: never sent. Terminal. */
  cancelled: 'cancelled',
} as const;
export type OutboundState = (typeof OutboundState)[keyof typeof OutboundState];

/** What became of one received message. */
export const MessageStatus = {
  /** Stored, not yet processed (reserved for deferred processing; the inbound path stores the final status at once). */
  received: 'received',
  /** Processed; everything it carries is stored (linked to a study, or waiting for one). */
  applied: 'applied',
  /** Stored but not linked: something it says contradicts what we hold (e.g. a different patient id). Needs review. */
  held: 'held',
  /** AR'd: malformed or unsupported. Kept so nothing is dropped silently. */
  rejected: 'rejected',
  /** Same MSH-3/MSH-4/MSH-10 as a message already applied or held: AA'd, changed nothing. */
  duplicate: 'duplicate',
  /** A held message a person reviewed and set aside (POST /api/messages/{id}/dismiss); its items stay unlinked. */
  dismissed: 'dismissed',
} as const;
export type MessageStatus = (typeof MessageStatus)[keyof typeof MessageStatus];

/** How an order, report version or AI result stands towards a study. */
export const LinkState = {
  /** No study with its accession / StudyInstanceUID yet; links when one arrives. */
  pending: 'pending',
  linked: 'linked',
  /** Would link, but the patient id (or accession) contradicts; never linked automatically. */
  held: 'held',
} as const;
export type LinkState = (typeof LinkState)[keyof typeof LinkState];

/** What asked for an evaluation; stored with each decision. */
export const EvaluationTrigger = {
  /** The quiet period ended. */
  stable: 'stable',
  /** An order, report version or AI result was linked to the study. */
  hl7: 'hl7',
  /** A person asked for a second read. */
  manual: 'manual',
} as const;
export type EvaluationTrigger = (typeof EvaluationTrigger)[keyof typeof EvaluationTrigger];
