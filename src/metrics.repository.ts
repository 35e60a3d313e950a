import type { Db } from './db/database.js';
import type { CaseState, DeliveryState, MessageStatus, OutboundKind, OutboundState, StudyState } from './states.js';

/**
 * The counts /metrics reads at scrape time (metrics.ts), straight from the
 * tables so they survive restarts and agree across instances. Counts come back
 * as numbers on both engines.
 */

export async function studyCountsByState(db: Db): Promise<{ state: StudyState; n: number }[]> {
  const rows = await db
    .selectFrom('studies')
    .select(['state', (eb) => eb.fn.countAll<number>().as('n')])
    .groupBy('state')
    .execute();
  return rows.map((r) => ({ state: r.state, n: Number(r.n) }));
}

export async function instanceCount(db: Db): Promise<number> {
  const r = await db
    .selectFrom('instances')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .executeTakeFirst();
  return Number(r?.n ?? 0);
}

export async function hl7MessageCounts(db: Db): Promise<{ message_type: string; status: MessageStatus; n: number }[]> {
  const rows = await db
    .selectFrom('hl7_messages')
    .select(['message_type', 'status', (eb) => eb.fn.countAll<number>().as('n')])
    .groupBy(['message_type', 'status'])
    .execute();
  return rows.map((r) => ({ message_type: r.message_type, status: r.status, n: Number(r.n) }));
}

export async function caseCountsByState(db: Db): Promise<{ state: CaseState; n: number }[]> {
  const rows = await db
    .selectFrom('cases')
    .select(['state', (eb) => eb.fn.countAll<number>().as('n')])
    .groupBy('state')
    .execute();
  return rows.map((r) => ({ state: r.state, n: Number(r.n) }));
}

export async function deliveryCounts(db: Db): Promise<{ destination_id: string; state: DeliveryState; n: number }[]> {
  const rows = await db
    .selectFrom('deliveries')
    .select(['destination_id', 'state', (eb) => eb.fn.countAll<number>().as('n')])
    .groupBy(['destination_id', 'state'])
    .execute();
  return rows.map((r) => ({ destination_id: r.destination_id, state: r.state, n: Number(r.n) }));
}

/** Open cases past their SLA: on a reader desk (`openStates`) with a breach recorded. */
export async function slaBreachedCaseCount(db: Db, openStates: readonly CaseState[]): Promise<number> {
  const r = await db
    .selectFrom('cases')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('state', 'in', [...openStates])
    .where('sla_breached_at', 'is not', null)
    .executeTakeFirst();
  return Number(r?.n ?? 0);
}

export async function outboundCounts(db: Db): Promise<{ kind: OutboundKind; state: OutboundState; n: number }[]> {
  const rows = await db
    .selectFrom('outbound_messages')
    .select(['kind', 'state', (eb) => eb.fn.countAll<number>().as('n')])
    .groupBy(['kind', 'state'])
    .execute();
  return rows.map((r) => ({ kind: r.kind, state: r.state, n: Number(r.n) }));
}
