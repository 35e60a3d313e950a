import type { Db } from '../db/database.js';
import { expireJobClaimsOf } from '../jobs/job.repository.js';
import { DeliveryState, OutboundState } from '../states.js';
import type { GatewayInstanceRow, WorkLeaseRow } from './instance.table.js';

/** The job kind that sends an outbound message (reports/outbound.service.ts OUTBOUND_SEND_JOB). */
const OUTBOUND_SEND_JOB_KIND = 'outbound.send';
/** The job kind that sends a delivery (forwarding/forwarding.service.ts DELIVER_JOB). */
const DELIVER_JOB_KIND = 'forwarding.deliver';

export async function upsertInstance(db: Db, row: GatewayInstanceRow): Promise<void> {
  await db
    .insertInto('gateway_instances')
    .values(row)
    .onConflict((oc) =>
      oc
        .column('instance_id')
        .doUpdateSet({ host: row.host, pid: row.pid, version: row.version, started_at: row.started_at, heartbeat_at: row.heartbeat_at, stopped_at: null }),
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
  const [b, c] = await db
    .transaction()
    .execute(async (trx) => [
      await trx
        .updateTable('outbound_messages')
        .set({ lease_expires_at: now })
        .where('lease_owner', '=', instanceId)
        .where('lease_expires_at', '>', now)
        .executeTakeFirst(),
      await trx.updateTable('work_leases').set({ expires_at: now }).where('owner', '=', instanceId).where('expires_at', '>', now).executeTakeFirst(),
    ]);
  const jobs = await expireJobClaimsOf(db, instanceId);
  return [b, c].reduce((n, r) => n + Number(r.numUpdatedRows), jobs);
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

export interface InstanceClaims {
  leases: Pick<WorkLeaseRow, 'name' | 'owner' | 'acquired_at' | 'expires_at'>[];
  deliveries: {
    id: string;
    case_id: string;
    destination_id: string;
    lease_owner: string | null;
    lease_expires_at: string | null;
    instances_sent: number;
    instances_total: number;
  }[];
  outbound: { id: string; case_id: string; kind: string; lease_owner: string | null; lease_expires_at: string | null; attempts: number }[];
}

/** Everything currently claimed by anyone (held leases, deliveries being sent, outbound messages being sent). */
export async function currentClaims(db: Db): Promise<InstanceClaims> {
  const leases = await db
    .selectFrom('work_leases')
    .select(['name', 'owner', 'acquired_at', 'expires_at'])
    .where('owner', 'is not', null)
    .orderBy('name')
    .execute();
  // Deliveries are sent by jobs too (key: the delivery id).
  const deliveries = await db
    .selectFrom('deliveries as d')
    .innerJoin('jobs as j', (join) => join.onRef('j.key', '=', 'd.id').on('j.kind', '=', DELIVER_JOB_KIND).on('j.state', '=', 'running'))
    .select([
      'd.id',
      'd.case_id',
      'd.destination_id',
      'j.locked_by as lease_owner',
      'j.locked_until as lease_expires_at',
      'd.instances_sent',
      'd.instances_total',
    ])
    .where('d.state', '=', DeliveryState.sending)
    .orderBy('d.id')
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
