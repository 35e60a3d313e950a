import type { Db } from '../db/database.js';
import type { AuditEventRow } from './audit.table.js';

export interface AuditEntry {
  actor: string;
  action: string;
  entityType: string;
  entityId?: string | null;
  details?: unknown;
}

/** Appends one audit event; call it inside the transaction of the change it records. */
export async function recordAudit(db: Db, id: string, at: string, e: AuditEntry): Promise<void> {
  await db
    .insertInto('audit_events')
    .values({
      id,
      at,
      actor: e.actor,
      action: e.action,
      entity_type: e.entityType,
      entity_id: e.entityId ?? null,
      details: e.details === undefined ? null : JSON.stringify(e.details),
    })
    .execute();
}

export interface AuditFilter {
  entityType?: string;
  entityId?: string;
  actor?: string;
  action?: string;
  from?: string;
  to?: string;
  limit: number;
}

export async function listAudit(db: Db, f: AuditFilter): Promise<AuditEventRow[]> {
  let q = db.selectFrom('audit_events').selectAll();
  if (f.entityType) q = q.where('entity_type', '=', f.entityType);
  if (f.entityId) q = q.where('entity_id', '=', f.entityId);
  if (f.actor) q = q.where('actor', '=', f.actor);
  if (f.action) q = q.where('action', '=', f.action);
  if (f.from) q = q.where('at', '>=', f.from);
  if (f.to) q = q.where('at', '<', f.to);
  return q.orderBy('id', 'desc').limit(f.limit).execute();
}

export function presentAudit(r: AuditEventRow): Record<string, unknown> {
  return {
    id: r.id,
    at: r.at,
    actor: r.actor,
    action: r.action,
    entityType: r.entity_type,
    entityId: r.entity_id,
    details: r.details === null ? null : (JSON.parse(r.details) as unknown),
  };
}
