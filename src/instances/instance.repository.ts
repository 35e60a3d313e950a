import type { Db } from '../db/database.js';
import { DeliveryState, OutboundState } from '../states.js';
import type { GatewayInstanceRow } from './instance.table.js';

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
 * What an instance holds is a running job's claim (jobs.locked_by, until
 * jobs.locked_until): deliveries and outbound messages are shown with their
 * rows; `jobs` lists every other kind (key, or the job id when it has none).
 */
export interface InstanceClaims {
  jobs: { kind: string; key: string; owner: string | null; expires_at: string | null }[];
  deliveries: {
    id: string;
    case_id: string;
    destination_id: string;
    owner: string | null;
    expires_at: string | null;
    instances_sent: number;
    instances_total: number;
  }[];
  outbound: { id: string; case_id: string; kind: string; owner: string | null; expires_at: string | null; attempts: number }[];
}

/** Everything currently claimed by anyone (running jobs: deliveries being sent, outbound messages being sent, the rest). */
export async function currentClaims(db: Db): Promise<InstanceClaims> {
  const jobs = await db
    .selectFrom('jobs')
    .select(['kind', (eb) => eb.fn.coalesce('key', 'id').as('key'), 'locked_by as owner', 'locked_until as expires_at'])
    .where('state', '=', 'running')
    .where('kind', 'not in', [DELIVER_JOB_KIND, OUTBOUND_SEND_JOB_KIND])
    .orderBy('kind')
    .orderBy('id')
    .limit(1000)
    .execute();
  // Deliveries are sent by jobs (key: the delivery id).
  const deliveries = await db
    .selectFrom('deliveries as d')
    .innerJoin('jobs as j', (join) => join.onRef('j.key', '=', 'd.id').on('j.kind', '=', DELIVER_JOB_KIND).on('j.state', '=', 'running'))
    .select(['d.id', 'd.case_id', 'd.destination_id', 'j.locked_by as owner', 'j.locked_until as expires_at', 'd.instances_sent', 'd.instances_total'])
    .where('d.state', '=', DeliveryState.sending)
    .orderBy('d.id')
    .limit(1000)
    .execute();
  // Outbound messages are sent by jobs (key: the message id): the claim is the running job's.
  const outbound = await db
    .selectFrom('outbound_messages as m')
    .innerJoin('jobs as j', (join) => join.onRef('j.key', '=', 'm.id').on('j.kind', '=', OUTBOUND_SEND_JOB_KIND).on('j.state', '=', 'running'))
    .select(['m.id', 'm.case_id', 'm.kind', 'j.locked_by as owner', 'j.locked_until as expires_at', 'm.attempts'])
    .where('m.state', '=', OutboundState.pending)
    .orderBy('m.id')
    .limit(1000)
    .execute();
  return { jobs, deliveries, outbound };
}
