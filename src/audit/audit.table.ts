import type { Generated, Selectable } from 'kysely';

/** Who did what, when: rule changes, manual actions, case transitions, PHI views. */
export interface AuditEventTable {
  id: string;
  at: string;
  /** A token's name, `system`, `config-file`, or a component. */
  actor: string;
  action: string;
  entity_type: string;
  entity_id: string | null;
  /** JSON */
  details: string | null;
}
export type AuditEventRow = Selectable<AuditEventTable>;

/** A configured consumer of the audit trail besides the table (`syslog`, `ris-status`); absent: nothing is queued for it. */
export interface AuditSinkTable {
  sink: string;
  /** Only events whose action starts with this ('' for every event). */
  action_prefix: string;
  enabled_at: string;
}

/** An audit event not yet handed to a sink, queued in the event's own transaction. */
export interface AuditOutboxTable {
  sink: string;
  audit_id: string;
  attempts: Generated<number>;
  last_error: string | null;
}
