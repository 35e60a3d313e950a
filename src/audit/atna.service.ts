import { hostname } from 'node:os';
import { backoffMs } from '../backoff.js';
import type { GatewayConfig } from '../config/schema.js';
import type { Db } from '../db/database.js';
import type { Logger } from '../logger.js';
import type { JobContext, JobQueue } from '../jobs/job.types.js';
import { clientTlsOptions } from '../tls.js';
import { atnaContext } from './atna-context.repository.js';
import { auditMessageFor, buildAuditXml, type AtnaNode } from './atna-message.js';
import { auditBacklog, dequeueAuditEvents, disableAuditSink, enableAuditSink, noteAuditSinkFailure, queuedAuditEvents } from './audit.repository.js';
import { ATNA_MSGID, ATNA_PRI, formatRfc5424, SyslogClient } from './syslog-client.js';

export const SYSLOG_SINK = 'syslog';
/** The one long-lived job (a poll) that drains the queue: the job engine keeps it to one worker across instances. */
export const ATNA_JOB_KIND = 'atna.syslog';

const DRAIN_BATCH = 100;

export type SyslogConfig = NonNullable<GatewayConfig['audit']['syslog']>;

export interface AtnaServiceOptions {
  db: Db;
  logger: Logger;
  config: Pick<GatewayConfig, 'audit' | 'instanceId'> & { dicom: Pick<GatewayConfig['dicom'], 'aeTitle'> };
  jobs: JobQueue;
  clock?: () => Date;
  random?: () => number;
}

/**
 * IHE ATNA: sends every audit event (queued for the `syslog` sink in the
 * event's own transaction by recordAudit) to the audit record repository, in
 * the order they were recorded. An event leaves the queue only once the
 * repository's connection took it; a failure keeps it (and the ones after it)
 * queued and retries with backoff, so a repository that is down loses nothing.
 * The audit table stays the source; this is a copy for the security officer.
 */
export class AtnaService {
  private readonly log: Logger;
  private readonly clock: () => Date;
  private readonly random: () => number;
  private readonly client: SyslogClient | undefined;
  private readonly node: AtnaNode;
  private failures = 0;
  private notBefore = 0;

  constructor(private readonly o: AtnaServiceOptions) {
    this.log = o.logger.child({ component: 'atna' });
    this.clock = o.clock ?? (() => new Date());
    this.random = o.random ?? Math.random;
    const s = o.config.audit.syslog;
    this.node = {
      sourceId: o.config.audit.sourceId ?? o.config.instanceId,
      ...(o.config.audit.enterpriseSiteId ? { enterpriseSiteId: o.config.audit.enterpriseSiteId } : {}),
      aeTitle: o.config.dicom.aeTitle,
      hostname: hostname(),
      processId: String(process.pid),
    };
    if (s) {
      this.client = new SyslogClient({
        host: s.host,
        port: s.port,
        protocol: s.protocol,
        timeoutMs: s.timeoutSeconds * 1000,
        ...(s.protocol === 'tls' ? { tls: clientTlsOptions(s, s.host, s.port) } : {}),
      });
      o.jobs.register<null>(ATNA_JOB_KIND, (job) => this.runJob(job), { concurrency: 1, leaseSeconds: Math.max(60, s.timeoutSeconds * 10) });
    }
  }

  get enabled(): boolean {
    return this.client !== undefined;
  }

  /** Queues from now on when configured (and makes sure the drain job exists); otherwise stops queuing (what is still queued stays, and is reported). */
  async init(): Promise<void> {
    if (this.enabled) {
      await this.o.db.transaction().execute(async (trx) => {
        await enableAuditSink(trx, SYSLOG_SINK, '', this.clock().toISOString());
        await this.o.jobs.enqueue(trx, ATNA_JOB_KIND, null, { key: ATNA_JOB_KIND });
      });
      return;
    }
    const left = await disableAuditSink(this.o.db, SYSLOG_SINK);
    if (left > 0) log(this.log, left);
  }

  /** One last pass (after the job engine stopped), so the gateway's stop reaches the repository now; what does not go stays queued for the next start. */
  async stop(): Promise<void> {
    if (this.client) await this.drain().catch((err: unknown) => this.log.warn('last ATNA pass failed', { error: (err as Error).message }));
    await this.client?.close();
  }

  /** Events still waiting for the repository. */
  backlog(): Promise<number> {
    return auditBacklog(this.o.db, SYSLOG_SINK);
  }

  /** A drain, then the next poll; a repository that refused waits out the backoff (the job is not failed: it must never be dead-lettered). */
  private async runJob(job: JobContext<null>): Promise<{ runAgainAt: Date }> {
    const s = this.o.config.audit.syslog!;
    let n = 0;
    const sent = await this.drain(async (ids) => {
      await job.fenced((trx) => dequeueAuditEvents(trx, SYSLOG_SINK, ids));
      // A slow repository must not outlast the lease mid-batch (another worker would send the same events).
      if (++n % 10 === 0) await job.renew();
    });
    const now = Date.now();
    const next = this.notBefore > now ? this.notBefore : sent === DRAIN_BATCH ? now : now + s.pollIntervalSeconds * 1000;
    return { runAgainAt: new Date(next) };
  }

  /**
   * Sends queued events oldest first until the queue is empty or one fails
   * (later ones wait: the repository sees them in order). Returns how many went.
   * `dequeue` removes sent events (the job engine passes its fenced transaction).
   */
  async drain(
    dequeue: (ids: readonly string[]) => Promise<void> = (ids) => dequeueAuditEvents(this.o.db, SYSLOG_SINK, ids),
    limit = DRAIN_BATCH,
  ): Promise<number> {
    const client = this.client;
    const s = this.o.config.audit.syslog;
    if (!client || !s) return 0;
    const rows = await queuedAuditEvents(this.o.db, SYSLOG_SINK, limit);
    let sent = 0;
    for (const row of rows) {
      let details: Record<string, unknown> = {};
      try {
        const v = row.details === null ? null : (JSON.parse(row.details) as unknown);
        if (v && typeof v === 'object' && !Array.isArray(v)) details = v as Record<string, unknown>;
      } catch {
        // A detail that is not JSON: the message goes without what it would have named.
      }
      const ctx = await atnaContext(this.o.db, row, details);
      const xml = buildAuditXml(auditMessageFor(row, ctx, this.node));
      const msg = formatRfc5424(
        { pri: ATNA_PRI, timestamp: this.clock(), hostname: this.node.hostname, appName: s.appName, procId: this.node.processId, msgId: ATNA_MSGID },
        xml,
      );
      try {
        await client.send(msg);
      } catch (err) {
        this.failures++;
        this.notBefore = Date.now() + backoffMs(this.failures, 1, 60, this.random);
        await noteAuditSinkFailure(this.o.db, SYSLOG_SINK, row.id, (err as Error).message);
        // No identifiers: the audit id and action say which event waits.
        this.log.warn('audit repository did not take an event; kept queued, retried', {
          auditId: row.id,
          action: row.action,
          attempts: row.attempts + 1,
          error: (err as Error).message,
        });
        break;
      }
      await dequeue([row.id]);
      sent++;
    }
    if (sent > 0) this.failures = 0;
    return sent;
  }
}

function log(l: Logger, left: number): void {
  l.warn('audit.syslog is not configured: audit events queued for it earlier are kept, not sent', { queued: left });
}
