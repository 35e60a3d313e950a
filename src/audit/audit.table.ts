import type { Selectable } from 'kysely';

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
