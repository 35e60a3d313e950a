import type { Db } from '../db/database.js';
import { expireJobClaimsOf } from '../jobs/job.repository.js';
import { DeliveryState, OutboundState } from '../states.js';
import type { GatewayInstanceRow, WorkLeaseRow } from './instance.table.js';

/** The job kind that sends an outbound message (reports/outbound.service.ts OUTBOUND_SEND_JOB). */
const OUTBOUND_SEND_JOB_KIND = 'outbound.send';

export async function upsertInstance(db: Db, row: GatewayInstanceRow): Promise<void> {
  await db
    .insertInto('gateway_instances')
    .values(row)
    .onConflict((oc) =>
      oc.column('instance_id').doUpdateSet({ host: row.host, pid: row.pid, version: row.version, started_at: row.started_at, heartbeat_at: row.heartbeat_at, stopped_at: null }),
    )
    .execute();
}

/**
 * At start: whatever this instance id still holds was claimed by an earlier
 * process under the same id, which is gone (ids are unique per running
 * instance, README: Several instances). Expiring those leases lets the work
 * resume at once instead of after `forwarding.leaseSeconds`; a SIGKILLed
 * single gateway would otherwise sit on its deliveries for five minutes.
 */
export async function expireClaimsOfEarlierRun(db: Db, instanceId: string, now: string): Promise<number> {
  const [a, b, c] = await db.transaction().execute(async (trx) => [
    await trx.updateTable('deliveries').set({ lease_expires_at: now }).where('lease_owner', '=', instanceId).where('lease_expires_at', '>', now).executeTakeFirst(),
    await trx.updateTable('outbound_messages').set({ lease_expires_at: now }).where('lease_owner', '=', instanceId).where('lease_expires_at', '>', now).executeTakeFirst(),
    await trx.updateTable('work_leases').set({ expires_at: now }).where('owner', '=', instanceId).where('expires_at', '>', now).executeTakeFirst(),
  ]);
  const jobs = await expireJobClaimsOf(db, instanceId);
  return [a, b, c].reduce((n, r) => n + Number(r.numUpdatedRows), jobs);
}

export async function heartbeat(db: Db, instanceId: string, now: string): Promise<void> {
  await db.updateTable('gateway_instances').set({ heartbeat_at: now }).where('instance_id', '=', instanceId).execute();
}

export async function markStopped(db: Db, instanceId: string, now: string): Promise<void> {
  await db.updateTable('gateway_instances').set({ heartbeat_at: now, stopped_at: now }).where('instance_id', '=', instanceId).execute();
}

export async function listInstances(db: Db): Promise<GatewayInstanceRow[]> {
  return db.selectFrom('gateway_instances').selectAll().orderBy('started_at', 'desc').orderBy('instance_id').execute();
}

/**
 * Takes (or renews) the named lease for `owner` unless another owner holds it
 * and it has not expired. One conditional UPDATE: on SQLite the only writer,
 * on PostgreSQL the row lock makes a concurrent taker re-check the condition
 * after the first commits, so exactly one of them gets it.
 */
export async function acquireLease(db: Db, name: string, owner: string, now: string, until: string): Promise<boolean> {
  await db
    .insertInto('work_leases')
    .values({ name, owner: null, acquired_at: null, expires_at: null })
    .onConflict((oc) => oc.column('name').doNothing())
    .execute();
  const r = await db
    .updateTable('work_leases')
    .set((eb) => ({
      owner,
      expires_at: until,
      acquired_at: eb.case().when('owner', '=', owner).then(eb.ref('acquired_at')).else(now).end(),
    }))
    .where('name', '=', name)
    .where((eb) => eb.or([eb('owner', 'is', null), eb('owner', '=', owner), eb('expires_at', '<', now)]))
    .executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

/** Gives the lease back (only if still ours). */
export async function releaseLease(db: Db, name: string, owner: string): Promise<void> {
  await db.updateTable('work_leases').set({ owner: null, expires_at: null, acquired_at: null }).where('name', '=', name).where('owner', '=', owner).execute();
}

export async function renewLeaseOf(db: Db, name: string, owner: string, until: string): Promise<boolean> {
  const r = await db.updateTable('work_leases').set({ expires_at: until }).where('name', '=', name).where('owner', '=', owner).executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

export interface InstanceClaims {
  leases: Pick<WorkLeaseRow, 'name' | 'owner' | 'acquired_at' | 'expires_at'>[];
  deliveries: { id: string; case_id: string; destination_id: string; lease_owner: string | null; lease_expires_at: string | null; instances_sent: number; instances_total: number }[];
  outbound: { id: string; case_id: string; kind: string; lease_owner: string | null; lease_expires_at: string | null; attempts: number }[];
}

/** Everything currently claimed by anyone (held leases, deliveries being sent, outbound messages being sent). */
export async function currentClaims(db: Db): Promise<InstanceClaims> {
  const leases = await db.selectFrom('work_leases').select(['name', 'owner', 'acquired_at', 'expires_at']).where('owner', 'is not', null).orderBy('name').execute();
  const deliveries = await db
    .selectFrom('deliveries')
    .select(['id', 'case_id', 'destination_id', 'lease_owner', 'lease_expires_at', 'instances_sent', 'instances_total'])
    .where('state', '=', DeliveryState.sending)
    .orderBy('id')
    .limit(1000)
    .execute();
  // Outbound messages are sent by jobs (key: the message id): the claim is the running job's.
  const outbound = await db
    .selectFrom('outbound_messages as m')
    .innerJoin('jobs as j', (join) => join.onRef('j.key', '=', 'm.id').on('j.kind', '=', OUTBOUND_SEND_JOB_KIND).on('j.state', '=', 'running'))
    .select(['m.id', 'm.case_id', 'm.kind', 'j.locked_by as lease_owner', 'j.locked_until as lease_expires_at', 'm.attempts'])
    .where('m.state', '=', OutboundState.pending)
    .orderBy('m.id')
    .limit(1000)
    .execute();
  return { leases, deliveries, outbound };
}
