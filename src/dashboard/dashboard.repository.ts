import type { Db } from '../db/database.js';
import { CaseState, MessageStatus, OutboundKind, OutboundState } from '../states.js';

export interface DashboardSummary {
  generatedAt: string;
  /** Local midnight of the gateway host, as UTC ISO text: where "today" starts. */
  todayStartsAt: string;
  today: { studiesReceived: number; casesOpened: number; secondReports: number; writtenBack: number };
  casesByState: Record<string, number>;
  queues: { destinationId: string; pending: number; sending: number; dead: number; held: number; delivered: number }[];
  slaBreaches: { open: number; overdue: number };
  writeBack: { pending: number; failed: number };
  deadLetters: number;
  heldMessages: number;
}

/** States in which a case is waiting on a reader; past due_at there means an SLA breach. */
const READING: readonly CaseState[] = [CaseState.forwarding, CaseState.awaitingRead];

/** Counts for the console's dashboard: plain grouped counts, portable between SQLite and PostgreSQL. */
export async function dashboardSummary(db: Db, now: Date): Promise<DashboardSummary> {
  const midnight = new Date(now.getFullYear(), now.getMonth(), now.getDate()).toISOString();
  const nowIso = now.toISOString();
  const count = (n: unknown) => Number(n ?? 0);

  const studies = await db
    .selectFrom('studies')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('first_received_at', '>=', midnight)
    .executeTakeFirst();
  const opened = await db
    .selectFrom('cases')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('created_at', '>=', midnight)
    .executeTakeFirst();
  const reports = await db
    .selectFrom('second_reports')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('created_at', '>=', midnight)
    .executeTakeFirst();
  const written = await db
    .selectFrom('outbound_messages')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('kind', '=', OutboundKind.writeBack)
    .where('state', '=', OutboundState.accepted)
    .where('updated_at', '>=', midnight)
    .executeTakeFirst();

  const casesByState: Record<string, number> = Object.fromEntries(Object.values(CaseState).map((s) => [s, 0]));
  for (const r of await db
    .selectFrom('cases')
    .select(['state', (eb) => eb.fn.countAll<number>().as('n')])
    .groupBy('state')
    .execute())
    casesByState[r.state] = count(r.n);

  const queues = new Map<string, DashboardSummary['queues'][number]>();
  for (const r of await db
    .selectFrom('deliveries')
    .select(['destination_id', 'state', (eb) => eb.fn.countAll<number>().as('n')])
    .groupBy(['destination_id', 'state'])
    .execute()) {
    const q = queues.get(r.destination_id) ?? { destinationId: r.destination_id, pending: 0, sending: 0, dead: 0, held: 0, delivered: 0 };
    if (r.state in q) (q as unknown as Record<string, number>)[r.state] = count(r.n);
    queues.set(r.destination_id, q);
  }

  const breached = await db
    .selectFrom('cases')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('state', 'in', READING)
    .where('sla_breached_at', 'is not', null)
    .executeTakeFirst();
  // Past due but not yet seen by the SLA watch (it runs every sla.checkIntervalSeconds).
  const overdue = await db
    .selectFrom('cases')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('state', 'in', READING)
    .where('due_at', '<', nowIso)
    .executeTakeFirst();

  const writeBack = { pending: 0, failed: 0 };
  for (const r of await db
    .selectFrom('outbound_messages')
    .select(['state', (eb) => eb.fn.countAll<number>().as('n')])
    .where('kind', '=', OutboundKind.writeBack)
    .where('state', 'in', [OutboundState.pending, OutboundState.failed])
    .groupBy('state')
    .execute()) {
    if (r.state === OutboundState.pending) writeBack.pending = count(r.n);
    if (r.state === OutboundState.failed) writeBack.failed = count(r.n);
  }
  const held = await db
    .selectFrom('hl7_messages')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('status', '=', MessageStatus.held)
    .executeTakeFirst();
  const sortedQueues = [...queues.values()].sort((a, b) => a.destinationId.localeCompare(b.destinationId));

  return {
    generatedAt: nowIso,
    todayStartsAt: midnight,
    today: { studiesReceived: count(studies?.n), casesOpened: count(opened?.n), secondReports: count(reports?.n), writtenBack: count(written?.n) },
    casesByState,
    queues: sortedQueues,
    slaBreaches: { open: count(breached?.n), overdue: count(overdue?.n) },
    writeBack,
    deadLetters: sortedQueues.reduce((n, q) => n + q.dead, 0),
    heldMessages: count(held?.n),
  };
}
