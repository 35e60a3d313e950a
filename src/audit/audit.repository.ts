import type { Db } from '../db/database.js';
import type { AuditEventRow } from './audit.table.js';

export interface AuditEntry {
  actor: string;
  action: string;
  entityType: string;
  entityId?: string | null;
  details?: unknown;
}

/**
 * Appends one audit event; call it inside the transaction of the change it records. The database queues it for
 * every configured sink (ATNA syslog, RIS status) in the same insert (trigger of migration 020), so it goes out
 * exactly when the event commits.
 */
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

/** Starts queuing the events whose action starts with `actionPrefix` for `sink` (from now on; earlier events are not queued). */
export async function enableAuditSink(db: Db, sink: string, actionPrefix: string, now: string): Promise<void> {
  await db
    .insertInto('audit_sinks')
    .values({ sink, action_prefix: actionPrefix, enabled_at: now })
    .onConflict((oc) => oc.column('sink').doUpdateSet({ action_prefix: actionPrefix }))
    .execute();
}

/** Stops queuing for `sink`; returns how many queued events were still unsent (they stay queued, and go if it is enabled again). */
export async function disableAuditSink(db: Db, sink: string): Promise<number> {
  await db.deleteFrom('audit_sinks').where('sink', '=', sink).execute();
  const r = await db
    .selectFrom('audit_outbox')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('sink', '=', sink)
    .executeTakeFirstOrThrow();
  return Number(r.n);
}

export interface QueuedAuditEvent extends AuditEventRow {
  attempts: number;
}

/** The oldest events still queued for `sink`, in the order they were recorded. */
export async function queuedAuditEvents(db: Db, sink: string, limit: number): Promise<QueuedAuditEvent[]> {
  return db
    .selectFrom('audit_outbox as o')
    .innerJoin('audit_events as a', 'a.id', 'o.audit_id')
    .selectAll('a')
    .select('o.attempts')
    .where('o.sink', '=', sink)
    .orderBy('o.audit_id')
    .limit(limit)
    .execute();
}

/** Handed over: no longer queued for `sink`. */
export async function dequeueAuditEvents(db: Db, sink: string, auditIds: readonly string[]): Promise<void> {
  if (auditIds.length === 0) return;
  await db.deleteFrom('audit_outbox').where('sink', '=', sink).where('audit_id', 'in', auditIds).execute();
}

/** A failed hand-over, kept queued: counted and shown (the event is retried, never dropped). */
export async function noteAuditSinkFailure(db: Db, sink: string, auditId: string, error: string): Promise<void> {
  await db
    .updateTable('audit_outbox')
    .set((eb) => ({ attempts: eb('attempts', '+', 1), last_error: error.slice(0, 500) }))
    .where('sink', '=', sink)
    .where('audit_id', '=', auditId)
    .execute();
}

/** How many events wait for `sink` (health, tests). */
export async function auditBacklog(db: Db, sink: string): Promise<number> {
  const r = await db
    .selectFrom('audit_outbox')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('sink', '=', sink)
    .executeTakeFirstOrThrow();
  return Number(r.n);
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
