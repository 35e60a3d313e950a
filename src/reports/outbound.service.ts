import { backoffMs } from '../backoff.js';
import { transitionCase } from '../cases/case-state.js';
import type { GatewayConfig } from '../config/schema.js';
import type { Db } from '../db/database.js';
import { ErrorCode, GatewayError } from '../errors.js';
import { escapeHl7 } from '../hl7/hl7-message.js';
import type { MllpSender, SendOutcome } from '../hl7/mllp-sender.js';
import type { Logger } from '../logger.js';
import { buildPoolCancelOrm } from '../cases/pool-cancel.js';
import { PseudonymKind } from '../forwarding/pseudonym.service.js';
import { CaseState, OutboundKind, OutboundState } from '../states.js';
import { writeBackDefect } from './oru-builder.js';
import type { OutboundMessageRow } from './report.table.js';
import {
  caseForNotice,
  failedWriteBacksOf,
  findOutbound,
  hasPoolCancel,
  insertOutbound,
  lockCancelledCase,
  lockWaiting,
  outboundStop,
  poolCancelsDue,
  reopenFailedWriteBacks,
  sentPseudonyms,
  setWriteBackPayload,
  settleOutbound,
  waitingWriteBacksReady,
} from './outbound.repository.js';
import { hasUnfinishedDueJobs, runPendingNow } from '../jobs/job.repository.js';
import { JobClaimLostError, type JobContext, type JobOutcome, type JobQueue } from '../jobs/job.types.js';

/** The job kind that sends one outbound message (its row id in the payload). */
export const OUTBOUND_SEND_JOB = 'outbound.send';

/** How often a waiting write-back's job looks again by itself (building it wakes the job at once). */
const WAITING_RECHECK_SECONDS = 10;
/** How often a message of a held study looks again whether the hold has ended. */
const HELD_RECHECK_SECONDS = 5;

export interface OutboundJobPayload {
  messageId: string;
}

/**
 * The job engine as this service uses it: enqueue; a recurring job for the planner and a way to bring its next
 * run forward; and (tests, a manual pass) run this kind's due jobs now.
 */
export type OutboundJobs = JobQueue & {
  drain(kinds?: readonly string[]): Promise<void>;
  recurring(kind: string, everySeconds: number, task: () => Promise<unknown>): void;
  runNow(kind: string): Promise<void>;
};

/** The planner (waiting write-backs built, pool-cancels queued): one recurring job, on whichever instance claims it. */
export const OUTBOUND_PLAN_JOB = 'outbound.plan';

/**
 * Builds a waiting write-back's ORU once its primary report is linked
 * (SecondReportService registers it): the payload, or why it cannot be built.
 */
export type WriteBackBuilder = (trx: Db, m: OutboundMessageRow) => Promise<{ payload: string } | { problem: string } | { waiting: true }>;

export interface OutboundServiceOptions {
  db: Db;
  logger: Logger;
  config: Pick<GatewayConfig, 'writeBack' | 'escalation' | 'hl7' | 'forwarding' | 'instanceId'> & { destinations?: GatewayConfig['destinations'] };
  /** The RIS connection (hl7.ris) and, when configured, the QA channel (escalation.hl7). */
  ris: MllpSender;
  qa?: MllpSender;
  /** Each destination's own HL7 channel (`destinations[].hl7`), by destination id: where a pool-cancel goes. */
  pools?: ReadonlyMap<string, MllpSender>;
  newId: () => string;
  newControlId: () => string;
  jobs: OutboundJobs;
  clock?: () => Date;
  random?: () => number;
  fetchTimeoutMs?: number;
}

type Attempt = { kind: 'accepted'; response: string } | { kind: 'rejected'; response: string; text: string } | { kind: 'retry'; text: string };

/**
 * What the gateway sends besides images: the second report to the RIS, QA
 * notifications, webhooks, pool-cancels. Each row holds the exact bytes, built
 * once, so a retry resends the same MSH-10; each row is sent by a job enqueued
 * with it, in the queue of its case and channel, so a case's messages leave in
 * order, one at a time, on any instance. The row keeps the domain state the
 * console shows (pending, accepted, failed); the job only carries the sending.
 */
export class OutboundService {
  private readonly db: Db;
  private readonly log: Logger;
  private readonly clock: () => Date;
  private readonly random: () => number;
  private buildWriteBack: WriteBackBuilder | undefined;

  constructor(private readonly o: OutboundServiceOptions) {
    this.db = o.db;
    this.log = o.logger.child({ component: 'outbound' });
    this.clock = o.clock ?? (() => new Date());
    this.random = o.random ?? Math.random;
  }

  /** How a waiting write-back gets its ORU (the second-report service, built after this one). */
  useWriteBackBuilder(build: WriteBackBuilder): void {
    this.buildWriteBack = build;
  }

  /**
   * Queues a message in the caller's transaction: it exists exactly when the change that caused it committed.
   * `waiting`: a write-back whose ORU is built later (no primary report yet); its payload is empty until then.
   */
  async enqueue(
    trx: Db,
    m: {
      kind: OutboundMessageRow['kind'];
      caseId: string;
      reportId?: string | null;
      controlId?: string | null;
      payload: string;
      waiting?: boolean;
      destinationId?: string;
    },
  ): Promise<string> {
    const now = this.clock().toISOString();
    const id = this.o.newId();
    await insertOutbound(trx, {
      id,
      kind: m.kind,
      case_id: m.caseId,
      report_id: m.reportId ?? null,
      control_id: m.controlId ?? null,
      payload: m.payload,
      state: m.waiting ? OutboundState.waiting : OutboundState.pending,
      destination_id: m.destinationId ?? null,
      attempts: 0,
      next_attempt_at: now,
      last_error: null,
      response: null,
      created_at: now,
      updated_at: now,
    });
    // A waiting write-back takes its place in the queue now, so the case's later messages stay behind it.
    await this.enqueueSend(trx, id, m.kind, m.caseId);
    return id;
  }

  private async enqueueSend(trx: Db, messageId: string, kind: string, caseId: string): Promise<void> {
    const payload: OutboundJobPayload = { messageId };
    await this.o.jobs.enqueue(trx, OUTBOUND_SEND_JOB, payload, { key: messageId, queue: `outbound:${kind}:${caseId}` });
  }

  /** Announces an event on every configured escalation channel (durably, retried). */
  readonly notify = async (trx: Db, caseId: string, event: string, details: Record<string, unknown>): Promise<void> => {
    const c = await caseForNotice(trx, caseId);
    const esc = this.o.config.escalation;
    if (esc.webhook) {
      // No patient identifiers: the QA channel gets the case id and what happened; the console shows the rest to whoever may see it.
      const body = {
        event,
        caseId,
        accessionNumber: c?.accession_number ?? null,
        priority: c?.priority ?? null,
        readerId: c?.reader_id ?? null,
        at: this.clock().toISOString(),
        ...details,
      };
      await this.enqueue(trx, { kind: OutboundKind.webhook, caseId, payload: JSON.stringify(body) });
    }
    if (esc.hl7) {
      const controlId = this.o.newControlId();
      const ts = hl7Time(this.clock());
      const detail = Object.entries(details)
        .map(([k, v]) => `${k}=${String(v)}`)
        .join('; ');
      const text =
        [
          `MSH|^~\\&|${this.o.config.hl7.sendingApplication}|${this.o.config.hl7.sendingFacility}|QA|QA|${ts}||ORU^R01^ORU_R01|${controlId}|P|2.5.1`,
          `OBR|1||${escapeHl7(c?.accession_number ?? '')}|SECONDREAD^Second read^L|||${ts}`,
          `OBX|1|ST|ESCALATION^Second read escalation^L||${escapeHl7(`${event}: case ${caseId}${detail ? `; ${detail}` : ''}`)}||||||F`,
        ].join('\r') + '\r';
      await this.enqueue(trx, { kind: OutboundKind.qaHl7, caseId, controlId, payload: text });
    }
  };

  /**
   * The planner as a recurring job (`writeBack.pollIntervalSeconds`): its triggers (a primary report linked, a case
   * cancelled, an instance delivered after a cancel) live in many places, so they bring its next run forward
   * (`kick`) rather than each enqueuing work of its own; the recurring run is the backstop.
   */
  register(): void {
    this.o.jobs.recurring(OUTBOUND_PLAN_JOB, this.o.config.writeBack.pollIntervalSeconds, () => this.plan());
  }

  async stop(): Promise<void> {
    await this.o.ris.close();
    await this.o.qa?.close();
    for (const p of this.o.pools?.values() ?? []) await p.close();
  }

  /** Something the planner acts on has committed: its next run now rather than at the next interval. */
  kick(): void {
    this.o.jobs.runNow(OUTBOUND_PLAN_JOB).catch((err: unknown) => this.log.warn('outbound planner not brought forward', { error: (err as Error).message }));
  }

  /** A person sends a failed write-back again (same bytes, same MSH-10) after the RIS side is fixed. */
  async retryWriteBack(caseId: string, actor: string): Promise<{ messages: number }> {
    const now = this.clock().toISOString();
    const n = await this.db.transaction().execute(async (trx) => {
      const failed = await failedWriteBacksOf(trx, caseId);
      if (failed.length === 0) throw new GatewayError(ErrorCode.conflict, 'no failed write-back for this case');
      // The case first: a cancelled case's failed write-back must not become pending again.
      const moved = await transitionCase(trx, {
        caseId,
        from: [CaseState.failed],
        to: CaseState.reported,
        actor,
        now,
        auditId: this.o.newId(),
        details: { retriedWriteBacks: failed.length },
      });
      if (!moved) throw new GatewayError(ErrorCode.conflict, 'the case is not failed: nothing to retry');
      const ids = await reopenFailedWriteBacks(trx, caseId, now);
      for (const id of ids) await this.enqueueSend(trx, id, OutboundKind.writeBack, caseId);
      return ids.length;
    });
    return { messages: n };
  }

  /** Waits for the planning pass under way and for the sends due now, on any instance (tests). */
  async idle(timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    await this.o.jobs.drain([OUTBOUND_PLAN_JOB]);
    while (Date.now() < deadline && (await hasUnfinishedDueJobs(this.db, OUTBOUND_SEND_JOB))) await new Promise((r) => setTimeout(r, 20));
  }

  /**
   * One planning pass (write-backs whose primary report has linked get their
   * ORU; cancelled cases get their pool-cancel), then the sends due now. The
   * sends run as jobs on their own; running them here too is for a manual
   * pass and tests.
   */
  async tick(): Promise<void> {
    await this.buildWaiting();
    await this.queuePoolCancels();
    await this.o.jobs.drain([OUTBOUND_SEND_JOB]);
  }

  /** A pass of the planner only (its recurring job). */
  async plan(): Promise<void> {
    await this.buildWaiting();
    await this.queuePoolCancels();
  }

  /**
   * Waiting write-backs whose primary report has now been linked get their
   * ORU (PID and OBR of that primary) and become pending, oldest first, so a
   * case's report and addenda still leave in order.
   */
  private async buildWaiting(): Promise<void> {
    const build = this.buildWriteBack;
    if (!build) return;
    for (const m of await waitingWriteBacksReady(this.db, 100)) {
      const nowIso = this.clock().toISOString();
      const outcome = await this.db.transaction().execute(async (trx) => {
        if (!(await lockWaiting(trx, m.id))) return undefined;
        const built = await build(trx, m);
        if ('waiting' in built) return undefined;
        if ('payload' in built) {
          await setWriteBackPayload(trx, m.id, { payload: built.payload, state: OutboundState.pending, lastError: null, now: nowIso });
          await runPendingNow(trx, OUTBOUND_SEND_JOB, m.id);
          return 'built';
        }
        // Visible, as when it fails at report time: the report is kept, the write-back says why it cannot go.
        await setWriteBackPayload(trx, m.id, { payload: '', state: OutboundState.failed, lastError: built.problem, now: nowIso });
        await transitionCase(trx, {
          caseId: m.case_id,
          from: [CaseState.reported],
          to: CaseState.failed,
          actor: 'write-back',
          now: nowIso,
          auditId: this.o.newId(),
          details: { error: built.problem },
        });
        return 'failed';
      });
      if (outcome)
        this.log.info(outcome === 'built' ? 'primary report linked: waiting write-back built' : 'waiting write-back cannot be built', {
          jobId: m.id,
          caseId: m.case_id,
        });
    }
  }

  /**
   * A cancelled case whose study reached a pool with an HL7 channel: queue one
   * ORM^O01 ORC-1 CA per (case, destination), with the identifiers that pool
   * was sent (its pseudonyms when de-identified). Built once and stored, so a
   * resend carries the same MSH-10.
   */
  private async queuePoolCancels(): Promise<void> {
    const withChannel = (this.o.config.destinations ?? []).filter((d) => d.hl7 && this.o.pools?.has(d.id)).map((d) => d.id);
    for (const due of await poolCancelsDue(this.db, withChannel, 100)) {
      const now = this.clock();
      const queued = await this.db.transaction().execute(async (trx) => {
        if (!(await lockCancelledCase(trx, due.caseId))) return false;
        if (await hasPoolCancel(trx, due.caseId, due.destinationId)) return false;
        const real = due.deidentify !== 1;
        const seen = real ? undefined : await sentPseudonyms(trx, due.destinationId, due.studyInstanceUid);
        const sent = (kind: string, original: string | null) => (original === null ? null : real ? original : (seen!.get(`${kind}|${original}`) ?? null));
        const controlId = this.o.newControlId();
        const payload = buildPoolCancelOrm({
          controlId,
          sendingApplication: this.o.config.hl7.sendingApplication,
          sendingFacility: this.o.config.hl7.sendingFacility,
          receivingApplication: due.destinationId,
          placerOrder: due.caseId,
          accession: sent(PseudonymKind.accession, due.accessionNumber),
          patientId: sent(PseudonymKind.patientId, due.patientId),
          patientIdAuthority: real ? due.issuerOfPatientId : null,
          studyInstanceUid: sent(PseudonymKind.uid, due.studyInstanceUid),
          now,
        });
        await this.enqueue(trx, { kind: OutboundKind.poolCancel, caseId: due.caseId, controlId, payload, destinationId: due.destinationId });
        return true;
      });
      if (queued) this.log.info('pool will be told the case is cancelled', { caseId: due.caseId, destinationId: due.destinationId });
    }
  }

  /**
   * The handler of OUTBOUND_SEND_JOB: sends the message once and records the
   * outcome on its row, fenced by the job's claim (a worker that lost the job
   * writes nothing, and sends nothing once it knows). A transient failure runs
   * the job again after the backoff (not counted as a crash); a refusal, or too
   * many attempts, fails the message (and a write-back's case) for a person.
   */
  async runJob(job: JobContext<OutboundJobPayload>): Promise<JobOutcome> {
    const m = await findOutbound(this.db, job.payload.messageId);
    if (!m) return;
    const log = this.log.child({ jobId: m.id, kind: m.kind, caseId: m.case_id, controlId: m.control_id ?? undefined });
    const later = (seconds: number) => ({
      runAgainAt: new Date(this.clock().getTime() + Math.max(seconds, this.o.config.writeBack.pollIntervalSeconds) * 1000),
    });
    // A write-back waiting for its primary report keeps its place (and the case's later messages behind it); the
    // planner that builds it makes the job due at once, so this look is only a backstop.
    if (m.state === OutboundState.waiting) return later(WAITING_RECHECK_SECONDS);
    // Read again just before sending: a cancel (or a hold) that committed since it was queued wins.
    const stop = await outboundStop(this.db, m.id);
    if (stop === 'held') return later(HELD_RECHECK_SECONDS);
    if (stop) {
      log.info('not sent', { because: stop });
      return;
    }
    if (job.signal.aborted) throw new JobClaimLostError(job.id);
    let result: Attempt;
    try {
      result = await this.send(m);
    } catch (err) {
      result = { kind: 'retry', text: (err as Error).message };
    }
    const now = this.clock();
    const nowIso = now.toISOString();
    const attempts = m.attempts + 1;
    if (result.kind === 'accepted') {
      await job.fenced(async (trx) => {
        if (!(await settleOutbound(trx, m.id, { state: OutboundState.accepted, attempts, response: result.response, lastError: null, now: nowIso }))) return;
        if (m.kind === OutboundKind.writeBack) {
          await transitionCase(trx, {
            caseId: m.case_id,
            from: [CaseState.reported],
            to: CaseState.writtenBack,
            actor: 'write-back',
            now: nowIso,
            auditId: this.o.newId(),
            details: { controlId: m.control_id },
          });
        }
      });
      log.info('sent and acknowledged', { attempts });
      return;
    }
    const give = result.kind === 'rejected' || attempts >= this.o.config.writeBack.maxAttempts;
    if (give) {
      await job.fenced(async (trx) => {
        if (
          !(await settleOutbound(trx, m.id, {
            state: OutboundState.failed,
            attempts,
            lastError: result.text,
            response: result.kind === 'rejected' ? result.response : null,
            now: nowIso,
          }))
        )
          return;
        if (m.kind === OutboundKind.writeBack) {
          await transitionCase(trx, {
            caseId: m.case_id,
            from: [CaseState.reported],
            to: CaseState.failed,
            actor: 'write-back',
            now: nowIso,
            auditId: this.o.newId(),
            details: { controlId: m.control_id, error: result.text, attempts },
          });
        }
      });
      log.warn(result.kind === 'rejected' ? 'refused by the receiver; not retried' : 'gave up after too many attempts', { attempts, error: result.text });
      return;
    }
    const next = new Date(
      now.getTime() + backoffMs(attempts, this.o.config.writeBack.backoffBaseSeconds, this.o.config.writeBack.backoffMaxSeconds, this.random),
    );
    await job.fenced((trx) => settleOutbound(trx, m.id, { attempts, lastError: result.text, nextAttemptAt: next.toISOString(), now: nowIso }));
    log.info('will be retried', { attempts, error: result.text });
    return { runAgainAt: next };
  }

  private async send(m: OutboundMessageRow): Promise<Attempt> {
    if (m.kind === OutboundKind.webhook) return this.post(m.payload);
    if (m.kind === OutboundKind.writeBack) {
      // Never an empty or anonymous ORU at the RIS: refused here, visibly, whatever queued it.
      const defect = writeBackDefect(m.payload);
      if (defect) return { kind: 'rejected', response: '', text: `not sent: ${defect}` };
    }
    if (m.kind === OutboundKind.poolCancel) {
      const pool = m.destination_id ? this.o.pools?.get(m.destination_id) : undefined;
      if (!pool) return { kind: 'rejected', response: '', text: `no destinations[].hl7 configured for "${m.destination_id ?? ''}"` };
      return fromMllp(await pool.send(m.payload));
    }
    const sender = m.kind === OutboundKind.writeBack || m.kind === OutboundKind.statusUpdate ? this.o.ris : this.o.qa;
    if (!sender) return { kind: 'rejected', response: '', text: 'no escalation.hl7 configured' };
    return fromMllp(await sender.send(m.payload));
  }

  private async post(body: string): Promise<Attempt> {
    const hook = this.o.config.escalation.webhook;
    if (!hook) return { kind: 'rejected', response: '', text: 'no escalation.webhook configured' };
    try {
      const res = await fetch(hook.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...hook.headers },
        body,
        signal: AbortSignal.timeout(this.o.fetchTimeoutMs ?? 15_000),
      });
      const response = `HTTP ${res.status}`;
      await res.body?.cancel();
      if (res.ok) return { kind: 'accepted', response };
      if (res.status === 408 || res.status === 429 || res.status >= 500) return { kind: 'retry', text: response };
      return { kind: 'rejected', response, text: response };
    } catch (err) {
      return { kind: 'retry', text: (err as Error).message };
    }
  }
}

function fromMllp(o: SendOutcome): Attempt {
  if (o.kind === 'accepted') return { kind: 'accepted', response: o.ack };
  if (o.kind === 'rejected') return { kind: 'rejected', response: o.ack, text: `${o.code}: ${o.text}` };
  return { kind: 'retry', text: `${o.reason}: ${o.text}` };
}

function hl7Time(d: Date): string {
  return d.toISOString().replace(/[-:T]/g, '').slice(0, 14);
}
