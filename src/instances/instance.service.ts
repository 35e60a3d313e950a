import { hostname } from 'node:os';
import type { Db } from '../db/database.js';
import type { Logger } from '../logger.js';
import { expireJobClaimsOf } from '../jobs/job.repository.js';
import { PollLoop } from '../poll-loop.js';
import { currentClaims, heartbeat, listInstances, markStopped, upsertInstance } from './instance.repository.js';

export interface InstanceServiceOptions {
  db: Db;
  logger: Logger;
  instanceId: string;
  /** Claims expire after this long; an instance whose heartbeat is older is shown as not alive. */
  leaseSeconds: number;
  version?: string;
  clock?: () => Date;
}

/** One entry of GET /api/instances. */
export interface InstanceView {
  instanceId: string;
  host: string;
  pid: number;
  version: string | null;
  startedAt: string;
  heartbeatAt: string;
  stoppedAt: string | null;
  /** Heartbeat within the lease period and not stopped. */
  alive: boolean;
  /** The instance that answered this request. */
  self: boolean;
  claims: {
    /** Every other job it holds (name: `kind:key`); acquiredAt is not kept (null). */
    leases: { name: string; acquiredAt: string | null; expiresAt: string | null; expired: boolean }[];
    deliveries: {
      id: string;
      caseId: string;
      destinationId: string;
      leaseExpiresAt: string | null;
      expired: boolean;
      instancesSent: number;
      instancesTotal: number;
    }[];
    outbound: { id: string; caseId: string; kind: string; leaseExpiresAt: string | null; expired: boolean; attempts: number }[];
  };
}

/**
 * This process in the `gateway_instances` table: registered at start, a
 * heartbeat while running, marked stopped at a clean stop. A killed instance
 * just stops beating; its claims run out with their leases and others take them.
 */
export class InstanceService {
  private readonly log: Logger;
  private readonly clock: () => Date;
  private readonly loop: PollLoop;

  constructor(private readonly o: InstanceServiceOptions) {
    this.log = o.logger.child({ component: 'instances' });
    this.clock = o.clock ?? (() => new Date());
    // Several beats per lease period, so one slow beat never makes a live instance look dead.
    const everyMs = Math.max(200, Math.min(10_000, (o.leaseSeconds * 1000) / 4));
    this.loop = new PollLoop(
      () => heartbeat(o.db, o.instanceId, this.clock().toISOString()),
      everyMs,
      (err) => this.log.warn('heartbeat failed', { error: (err as Error).message }),
    );
  }

  get id(): string {
    return this.o.instanceId;
  }

  async start(): Promise<void> {
    const now = this.clock().toISOString();
    // Jobs still claimed under this id were claimed by an earlier process under the same id, which is gone (ids are
    // unique per running instance, README: Several instances). Their leases end now, so the work resumes at once
    // instead of after its lease; a SIGKILLed single gateway would otherwise sit on its deliveries for minutes.
    const released = await expireJobClaimsOf(this.o.db, this.o.instanceId);
    if (released > 0) this.log.info('took back the claims an earlier run of this instance left', { instanceId: this.o.instanceId, claims: released });
    await upsertInstance(this.o.db, {
      instance_id: this.o.instanceId,
      host: hostname(),
      pid: process.pid,
      version: this.o.version ?? null,
      started_at: now,
      heartbeat_at: now,
      stopped_at: null,
    });
    this.loop.start();
  }

  async stop(): Promise<void> {
    await this.loop.stop();
    await markStopped(this.o.db, this.o.instanceId, this.clock().toISOString());
  }

  /** Every instance known to the database, newest first, with what each holds right now. */
  async list(): Promise<InstanceView[]> {
    const now = this.clock();
    const nowIso = now.toISOString();
    const [rows, claims] = await Promise.all([listInstances(this.o.db), currentClaims(this.o.db)]);
    const aliveAfter = new Date(now.getTime() - this.o.leaseSeconds * 1000).toISOString();
    const expired = (at: string | null): boolean => at === null || at < nowIso;
    return rows.map((r) => ({
      instanceId: r.instance_id,
      host: r.host,
      pid: r.pid,
      version: r.version,
      startedAt: r.started_at,
      heartbeatAt: r.heartbeat_at,
      stoppedAt: r.stopped_at,
      alive: r.stopped_at === null && r.heartbeat_at >= aliveAfter,
      self: r.instance_id === this.o.instanceId,
      claims: {
        leases: claims.jobs
          .filter((j) => j.owner === r.instance_id)
          .map((j) => ({ name: `${j.kind}:${j.key}`, acquiredAt: null, expiresAt: j.expires_at, expired: expired(j.expires_at) })),
        deliveries: claims.deliveries
          .filter((d) => d.owner === r.instance_id)
          .map((d) => ({
            id: d.id,
            caseId: d.case_id,
            destinationId: d.destination_id,
            leaseExpiresAt: d.expires_at,
            expired: expired(d.expires_at),
            instancesSent: d.instances_sent,
            instancesTotal: d.instances_total,
          })),
        outbound: claims.outbound
          .filter((m) => m.owner === r.instance_id)
          .map((m) => ({
            id: m.id,
            caseId: m.case_id,
            kind: m.kind,
            leaseExpiresAt: m.expires_at,
            expired: expired(m.expires_at),
            attempts: m.attempts,
          })),
      },
    }));
  }
}
