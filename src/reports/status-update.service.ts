import { dequeueAuditEvents, disableAuditSink, enableAuditSink, queuedAuditEvents, type QueuedAuditEvent } from '../audit/audit.repository.js';
import type { GatewayConfig } from '../config/schema.js';
import type { Db } from '../db/database.js';
import type { JobContext, JobQueue } from '../jobs/job.types.js';
import type { Logger } from '../logger.js';
import { OutboundKind } from '../states.js';
import type { OutboundService } from './outbound.service.js';
import { buildStatusUpdateOrm, statusNote, statusOfAction } from './status-update-builder.js';
import { statusUpdateCase } from './status-update.repository.js';

export const STATUS_SINK = 'ris-status';
export const STATUS_JOB_KIND = 'ris.status-updates';
const BATCH = 100;

export interface StatusUpdateServiceOptions {
  db: Db;
  logger: Logger;
  config: Pick<GatewayConfig, 'writeBack' | 'hl7'>;
  jobs: JobQueue;
  outbound: Pick<OutboundService, 'enqueue' | 'kick'>;
  newControlId: () => string;
  clock?: () => Date;
}

/**
 * The RIS worklist knows (writeBack.statusUpdates): each case event that changes
 * what the RIS should show (opened, forwarded, assigned, reported, cancelled,
 * held, released) is queued by recordAudit in the transaction of the change
 * (the `ris-status` audit sink, case.* actions), and turned here, in order, into
 * an ORM^O01 ORC-1 SC on the outbound queue: the same reliable MLLP sender as
 * the ORU write-back (same MSH-10 on every retry, one case's messages in order).
 * The outbound message and the removal from the sink's queue commit together.
 */
export class StatusUpdateService {
  private readonly log: Logger;
  private readonly clock: () => Date;

  constructor(private readonly o: StatusUpdateServiceOptions) {
    this.log = o.logger.child({ component: 'ris-status' });
    this.clock = o.clock ?? (() => new Date());
    if (o.config.writeBack.statusUpdates) o.jobs.register<null>(STATUS_JOB_KIND, (job) => this.runJob(job), { concurrency: 1 });
  }

  get enabled(): boolean {
    return this.o.config.writeBack.statusUpdates;
  }

  async init(): Promise<void> {
    if (this.enabled) {
      await this.o.db.transaction().execute(async (trx) => {
        await enableAuditSink(trx, STATUS_SINK, 'case.', this.clock().toISOString());
        await this.o.jobs.enqueue(trx, STATUS_JOB_KIND, null, { key: STATUS_JOB_KIND });
      });
      return;
    }
    const left = await disableAuditSink(this.o.db, STATUS_SINK);
    if (left > 0) this.log.warn('writeBack.statusUpdates is off: case events queued for the RIS earlier are kept, not sent', { queued: left });
  }

  private async runJob(job: JobContext<null>): Promise<{ runAgainAt: Date }> {
    const n = await this.drain((fn) => job.fenced(fn));
    return { runAgainAt: new Date(Date.now() + (n === BATCH ? 0 : this.o.config.writeBack.pollIntervalSeconds * 1000)) };
  }

  /** Turns queued case events into outbound messages, oldest first; returns how many events were taken. */
  async drain(inTransaction: <T>(fn: (trx: Db) => Promise<T>) => Promise<T> = (fn) => this.o.db.transaction().execute(fn)): Promise<number> {
    const rows = await queuedAuditEvents(this.o.db, STATUS_SINK, BATCH);
    let queued = 0;
    for (const row of rows) {
      queued += await inTransaction(async (trx) => {
        const made = await this.enqueueFor(trx, row);
        await dequeueAuditEvents(trx, STATUS_SINK, [row.id]);
        return made ? 1 : 0;
      });
    }
    if (queued > 0) this.o.outbound.kick();
    return rows.length;
  }

  private async enqueueFor(trx: Db, row: QueuedAuditEvent): Promise<boolean> {
    if (row.entity_type !== 'case' || !row.entity_id) return false;
    const details = parse(row.details);
    // Back from a hold: the worklist shows it in progress again.
    const released = (row.action === 'case.flagged' || row.action === 'case.forwarding') && details['from'] === 'held';
    const status = released ? 'IP' : statusOfAction(row.action);
    if (!status) return false;
    const c = await statusUpdateCase(trx, row.entity_id);
    if (!c) return false;
    const accession = c.order?.accessionNumber ?? c.accessionNumber;
    if (!c.order && !accession) {
      // Nothing the RIS could match it to: said once, not guessed.
      this.log.warn('no RIS order or accession for this case: status update not sent', { caseId: row.entity_id, action: row.action });
      return false;
    }
    const rules = ruleIds(c.reasons);
    const heldReason = status === 'HD' && typeof details['reason'] === 'string' ? details['reason'] : undefined;
    const controlId = this.o.newControlId();
    const payload = buildStatusUpdateOrm({
      controlId,
      sendingApplication: this.o.config.hl7.sendingApplication,
      sendingFacility: this.o.config.hl7.sendingFacility,
      receivingApplication: this.o.config.writeBack.receivingApplication,
      receivingFacility: this.o.config.writeBack.receivingFacility,
      status,
      placerOrderNumber: c.order?.placerOrderNumber ?? null,
      fillerOrderNumber: c.order?.fillerOrderNumber ?? null,
      accessionNumber: accession,
      patientId: c.order?.patientId ?? null,
      patientIdAuthority: c.order?.patientIdAuthority ?? null,
      procedureCode: c.order?.procedureCode ?? null,
      procedureText: c.order?.procedureText ?? null,
      note: statusNote(this.o.config.writeBack.statusText, status, rules, heldReason),
      now: this.clock(),
    });
    await this.o.outbound.enqueue(trx, { kind: OutboundKind.statusUpdate, caseId: row.entity_id, controlId, payload });
    return true;
  }
}

function parse(s: string | null): Record<string, unknown> {
  if (!s) return {};
  try {
    const v = JSON.parse(s) as unknown;
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

function ruleIds(reasons: string): string[] {
  try {
    const v = JSON.parse(reasons) as unknown;
    if (!Array.isArray(v)) return [];
    return [
      ...new Set(
        v.flatMap((r) => (r && typeof r === 'object' && typeof (r as { ruleId?: unknown }).ruleId === 'string' ? [(r as { ruleId: string }).ruleId] : [])),
      ),
    ];
  } catch {
    return [];
  }
}
