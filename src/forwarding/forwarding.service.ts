import { transitionCase } from '../cases/case-state.js';
import { dropUnsentInstances } from '../cases/case-end.repository.js';
import type { GatewayConfig } from '../config/schema.js';
import type { Db } from '../db/database.js';
import type { Spool } from '../dicom/spool.js';
import { ErrorCode, GatewayError, toGatewayError } from '../errors.js';
import { hashId, type Logger } from '../logger.js';
import { CaseState, DeliveryInstanceState, DeliveryState } from '../states.js';
import type { DeliveryRow } from './delivery.table.js';
import { recordAudit } from '../audit/audit.repository.js';
import { part10DatasetOffset, part10Stream, type DestinationSender, type Piece, type SendableInstance } from './destination.js';
import { excludeInstance, exclusionsOfInstance, hasOpenExclusions, releaseExclusion } from './exclusion.repository.js';
import { addHl7Identifiers, dedupeHl7Identifiers, emptyHl7Identifiers, type Hl7Identifiers } from './hl7-identifiers.js';
import { readSourceHeader, type SourceHeader } from './source-header.js';
import { rawHl7OfStudy } from './study-identifiers.repository.js';
import {
  addMissingInstances,
  caseStateOf,
  casesReadyToForward,
  claimFlaggedCase,
  deliveriesNeedingDelta,
  deliveriesOfCases,
  deliveriesWithoutJob,
  deliveryWithStop,
  deliveryStop,
  hasPendingInstances,
  insertDelivery,
  lockDelivery,
  instancesSentOf,
  isInstanceOfStudy,
  markInstances,
  parkDelivery,
  pendingInstances,
  resetFailedInstances,
  setCaseDestination,
  updateDelivery,
  waitForPlanTrigger,
  type PendingInstance,
  type PlanScope,
} from './outbox.repository.js';
import { StudyPseudonyms } from './pseudonym.service.js';
import { isPriorDelivery, setPriorState } from '../priors/prior.repository.js';
import { PriorState } from '../priors/prior.table.js';
import { deleteDeadJobs } from '../jobs/job.repository.js';
import { JobClaimLostError, JobPermanentError, type JobContext, type JobOutcome, type JobQueue } from '../jobs/job.types.js';

/** The job kind that sends one delivery (its key is the delivery id). */
export const DELIVER_JOB = 'forwarding.deliver';

export interface DeliverJobPayload {
  deliveryId: string;
}

/**
 * The job kind that plans deliveries: for one case (key `case:<id>`: it was
 * flagged, or retried back to flagged), or for one study (key `study:<uid>`: it
 * became stable, again with late instances or after a hold: new cases of it,
 * deltas, and deliveries that lost their job while it was held).
 */
export const PLAN_JOB = 'forwarding.plan';

export type PlanJobPayload = { caseId: string } | { studyUid: string };

/**
 * In the caller's transaction, after it changed the case or study row (see
 * runPlanJob): plan deliveries for this case, or for this study. De-duplicated
 * while one is waiting.
 */
export async function enqueueForwardingPlan(jobs: JobQueue, trx: Db, target: PlanJobPayload): Promise<void> {
  const key = 'caseId' in target ? `case:${target.caseId}` : `study:${target.studyUid}`;
  await jobs.enqueue(trx, PLAN_JOB, target, { key, maxAttempts: 100 });
}

/**
 * The job queue of a destination: its deliveries run one at a time, in the order
 * they were planned, on whichever instance claims them.
 */
export function destinationQueue(destinationId: string): string {
  return `destination:${destinationId}`;
}

/** What forwarding needs of the job engine: enqueue in the planning transaction, register the handler, and run what is due (tests, idle). */
export interface DeliveryJobs extends JobQueue {
  drain(kinds?: readonly string[]): Promise<void>;
}

/** What forwarding needs from the de-identification engine (wired in gateway.ts from src/forwarding/deid-port.ts). */
export interface DeidPort {
  /** Null when the instance may go out de-identified; otherwise why not (`burned-in-risk`, `encapsulated-document`, ...). */
  risk(header: SourceHeader): { reason: string; detail: string } | null;
  /**
   * The de-identified header as a Part 10 prefix, the byte range [start, end) of the stored file to send after it
   * (the Pixel Data element, unchanged) or null, and the verdict of the verifier on what will leave: searched for
   * the identifiers of the source and of the study's HL7 messages (`hl7`).
   */
  deidentify(
    absPath: string,
    pseudonyms: StudyPseudonyms,
    options: {
      retainLongitudinalModifiedDates: boolean;
      retainPatientCharacteristics: boolean;
      safePrivateTags: string[];
      releasedByReviewer: boolean;
      hl7: Hl7Identifiers;
    },
  ): Promise<{
    prefix: Buffer;
    pixel: { start: number; end: number } | null;
    verification: { clean: true } | { clean: false; hits: { path: string; kind: string }[] };
  }>;
}

interface DeidContext {
  pseudonyms: StudyPseudonyms;
  hl7: Hl7Identifiers;
}

export interface ForwardingMetrics {
  delivered(destinationId: string, instances: number, seconds: number): void;
  failed(destinationId: string, kind: 'transient' | 'permanent'): void;
  /** An instance kept back from a de-identified delivery, by reason. */
  excluded(destinationId: string, reason: string): void;
  /** The verifier found a known identifier in a de-identified instance (also counted in `excluded`). */
  phiDetected(destinationId: string): void;
}

export interface ForwardingServiceOptions {
  db: Db;
  logger: Logger;
  config: Pick<GatewayConfig, 'forwarding' | 'destinations' | 'instanceId'>;
  spool: Spool;
  senders: ReadonlyMap<string, DestinationSender>;
  deid: DeidPort;
  /** HMAC key of the pseudonyms (kept in the database). */
  pseudonymSecret: () => string;
  newId: () => string;
  jobs: DeliveryJobs;
  metrics?: ForwardingMetrics;
  /** Gateway assignment: picks the reader (in the planning transaction); may redirect to the reader's destination. */
  assignReader?: (
    trx: Db,
    c: { id: string; study_instance_uid: string; reader_group: string | null },
  ) => Promise<{ ok: true; destinationId?: string } | { ok: false; reason: string }>;
  /** In the transaction that plans a case's own delivery: what waited for it (its priors' forwarding) is enqueued there. */
  casePlanned?: (trx: Db, caseId: string) => Promise<void>;
  clock?: () => Date;
}

const ACTOR = 'forwarding';

/**
 * The durable outbox. Deliveries are rows; a `forwarding.plan` job, enqueued in
 * the transaction that flags a case or makes its study stable, plans them and
 * enqueues a `forwarding.deliver` job per delivery in the same transaction; the job engine runs it under a fenced claim, and the
 * handler sends what the delivery still misses in batches, recording every
 * outcome (fenced) before moving on.
 * A crash anywhere resumes from the rows: at worst an instance whose success
 * was not yet recorded is sent again, which a receiver takes as the same SOP
 * instance (pseudonymous UIDs are stable per study and destination).
 */
export class ForwardingService {
  private readonly db: Db;
  private readonly log: Logger;
  private readonly clock: () => Date;

  constructor(private readonly o: ForwardingServiceOptions) {
    this.db = o.db;
    this.log = o.logger.child({ component: 'forwarding' });
    this.clock = o.clock ?? (() => new Date());
  }

  /**
   * The delivery job's handler, registered with the engine. One destination's
   * deliveries share a queue, so they go out one after another in planning order
   * across every instance (a reader's worklist fills in the order cases were
   * decided); different destinations run side by side. Attempts, backoff and the
   * dead letter are the engine's, with the `forwarding` settings; one attempt more
   * than `forwarding.maxAttempts` is allowed so that a delivery whose runs kept
   * killing the process is failed here, on its row and its case, not only as a job.
   */
  register(): void {
    const f = this.o.config.forwarding;
    this.o.jobs.register<DeliverJobPayload>(DELIVER_JOB, (job) => this.runJob(job), {
      concurrency: Math.max(1, new Set(this.o.config.destinations.map((d) => d.id)).size),
      leaseSeconds: f.leaseSeconds,
      maxAttempts: f.maxAttempts + 1,
      backoffBaseSeconds: f.backoffBaseSeconds,
      backoffMaxSeconds: f.backoffMaxSeconds,
    });
    // Planning is cheap and idempotent (every step under a row claim): retried quickly until it succeeds.
    this.o.jobs.register<PlanJobPayload>(PLAN_JOB, (job) => this.runPlanJob(job), {
      concurrency: 2,
      maxAttempts: 100,
      backoffBaseSeconds: 1,
      backoffMaxSeconds: 60,
    });
  }

  private enqueuePlan(trx: Db, target: PlanJobPayload): Promise<void> {
    return enqueueForwardingPlan(this.o.jobs, trx, target);
  }

  /** In the caller's transaction: the delivery's job exists if and only if the change that calls for it commits. */
  async enqueueDelivery(trx: Db, deliveryId: string, destinationId: string): Promise<void> {
    await this.o.jobs.enqueue(trx, DELIVER_JOB, { deliveryId } satisfies DeliverJobPayload, {
      key: deliveryId,
      queue: destinationQueue(destinationId),
      maxAttempts: this.o.config.forwarding.maxAttempts + 1,
    });
  }

  /**
   * Work from before planning was a job (rows of an older version, a crash of
   * one): a planning job for every case ready to forward and every study whose
   * deliveries miss instances, and a delivery job for every pending delivery
   * without one. Idempotent; run once at start.
   */
  async start(): Promise<void> {
    const cases = await casesReadyToForward(this.db);
    const studies = new Set((await deliveriesNeedingDelta(this.db)).map((d) => d.study_instance_uid));
    const orphans = await deliveriesWithoutJob(this.db, DELIVER_JOB);
    if (cases.length + studies.size + orphans.length === 0) return;
    await this.db.transaction().execute(async (trx) => {
      for (const c of cases) await this.enqueuePlan(trx, { caseId: c.id });
      for (const uid of studies) await this.enqueuePlan(trx, { studyUid: uid });
      for (const d of orphans) await this.enqueueDelivery(trx, d.id, d.destination_id);
    });
    this.log.info('forwarding work found at start enqueued', { cases: cases.length, studies: studies.size, deliveries: orphans.length });
  }

  /** Runs the due planning and delivery jobs, and what they enqueue, until none is left (tests, tools). */
  async idle(): Promise<void> {
    await this.o.jobs.drain([PLAN_JOB, DELIVER_JOB]);
  }

  /**
   * The `forwarding.plan` handler: one transaction, fenced by the claim, that
   * first locks the row its trigger changed (PostgreSQL: waits for a trigger
   * still committing), then plans its scope (new deliveries, deltas, a job for
   * each pending delivery that has none: a study released from a hold) and
   * completes the job. The job's row, and with it its key, goes at that commit:
   * a change committed after it enqueues a new job; one committed before it was
   * read here. A trigger that changes the row waits for this transaction.
   */
  async runPlanJob(job: JobContext<PlanJobPayload>): Promise<JobOutcome> {
    const scope: PlanScope = job.payload;
    const done = await job.fenced(async (trx) => {
      await waitForPlanTrigger(trx, scope);
      const planned = await this.planDeliveries(trx, scope);
      const deltas = scope.studyUid === undefined ? [] : await this.planDeltas(trx, scope.studyUid);
      if (scope.studyUid !== undefined) {
        for (const d of await deliveriesWithoutJob(trx, DELIVER_JOB, scope.studyUid)) await this.enqueueDelivery(trx, d.id, d.destination_id);
      }
      await job.completeIn(trx);
      return { planned, deltas };
    });
    for (const c of done.planned) this.log.info('delivery planned', { caseId: c.caseId, destinationId: c.destinationId, studyUid: hashId(c.studyUid) });
    for (const d of done.deltas)
      this.log.info('late instances queued as a delta', { deliveryId: d.deliveryId, instances: d.added, studyUid: hashId(d.studyUid) });
  }

  /** In the planning transaction: a delivery for each flagged case of the scope whose study is stable. */
  private async planDeliveries(trx: Db, scope: PlanScope): Promise<{ caseId: string; destinationId: string; studyUid: string }[]> {
    const planned: { caseId: string; destinationId: string; studyUid: string }[] = [];
    const now = this.clock().toISOString();
    for (const c of await casesReadyToForward(trx, scope)) {
      // Another instance may be planning the same case: whoever locks it first plans it, the other finds it planned.
      if (!(await claimFlaggedCase(trx, c.id))) continue;
      // A case that cannot go out waits, held with the reason, for a person.
      const hold = (reason: string) =>
        transitionCase(trx, { caseId: c.id, from: [CaseState.flagged], to: CaseState.held, actor: ACTOR, now, auditId: this.o.newId(), details: { reason } });
      let destinationId = c.destination_id;
      if (this.o.assignReader) {
        const assigned = await this.o.assignReader(trx, c);
        if (!assigned.ok) {
          await hold(`no reader: ${assigned.reason}`);
          continue;
        }
        destinationId = assigned.destinationId ?? destinationId;
        if (destinationId !== c.destination_id) await setCaseDestination(trx, c.id, destinationId);
      }
      const destination = this.o.config.destinations.find((d) => d.id === destinationId);
      if (!destination) {
        await hold(`destination "${destinationId ?? ''}" is not configured`);
        continue;
      }
      const deidentify = c.deidentify === null ? destination.deidentify : c.deidentify === 1;
      const deliveryId = this.o.newId();
      const instances = await insertDelivery(trx, {
        id: deliveryId,
        caseId: c.id,
        destinationId: destination.id,
        studyInstanceUid: c.study_instance_uid,
        deidentify,
        now,
      });
      await this.enqueueDelivery(trx, deliveryId, destination.id);
      await this.o.casePlanned?.(trx, c.id);
      await transitionCase(trx, {
        caseId: c.id,
        from: [CaseState.flagged],
        to: CaseState.forwarding,
        actor: ACTOR,
        now,
        auditId: this.o.newId(),
        details: { destinationId: destination.id, deidentify, instances },
      });
      planned.push({ caseId: c.id, destinationId: destination.id, studyUid: c.study_instance_uid });
    }
    return planned;
  }

  /** In the planning transaction: late instances of the study added to its deliveries (deltas). */
  private async planDeltas(trx: Db, studyUid: string): Promise<{ deliveryId: string; added: number; studyUid: string }[]> {
    const out: { deliveryId: string; added: number; studyUid: string }[] = [];
    const now = this.clock().toISOString();
    for (const d of await deliveriesNeedingDelta(trx, studyUid)) {
      // The state as committed by whoever held the delivery (its job closing it, or another instance adding this delta).
      const state = await lockDelivery(trx, d.id);
      if (state === undefined) continue;
      const n = await addMissingInstances(trx, d.id, d.study_instance_uid);
      if (n === 0) continue;
      if (state === DeliveryState.delivered) {
        await updateDelivery(trx, d.id, { state: DeliveryState.pending, attempts: 0, next_attempt_at: now, last_error: null, updated_at: now });
      }
      // A no-op while the delivery's job is unfinished: a running one sends the new instances before it closes (delivered()).
      await this.enqueueDelivery(trx, d.id, d.destination_id);
      out.push({ deliveryId: d.id, added: n, studyUid: d.study_instance_uid });
    }
    return out;
  }

  /** The `forwarding.deliver` handler: one attempt at one delivery. */
  async runJob(job: JobContext<DeliverJobPayload>): Promise<JobOutcome> {
    const found = await deliveryWithStop(this.db, job.payload.deliveryId);
    const d = found?.delivery;
    // Cancelled while its job waited (a retry's backoff, a dead worker's lease): what it had not sent is dropped here,
    // since the cancel leaves a delivery it saw `sending` to its worker.
    if (d?.state === DeliveryState.cancelled) return void (await job.fenced((trx) => dropUnsentInstances(trx, [d.id])));
    // Delivered, dead or held meanwhile (or gone): nothing to send; a retry, a release or a delta enqueues again.
    if (!d || (d.state !== DeliveryState.pending && d.state !== DeliveryState.sending)) return;
    const log = this.log.child({ jobId: d.id, destinationId: d.destination_id, studyUid: hashId(d.study_instance_uid) });
    if (job.attempt > this.o.config.forwarding.maxAttempts) {
      // The engine allows one run more than forwarding.maxAttempts: earlier runs ended without an outcome (the process died).
      throw await this.fail(job, d, 'every attempt ended without finishing (the worker stopped or the process died)', false, log);
    }
    if (await this.stopped(job, d, [], log, { stop: found!.stop })) return;
    await job.fenced((trx) => updateDelivery(trx, d.id, { state: DeliveryState.sending, updated_at: this.clock().toISOString() }));
    let failure: { message: string; transient: boolean };
    try {
      const r = await this.process(job, d, log);
      if (!('failed' in r)) return r.outcome;
      failure = r.failed;
    } catch (err) {
      if (err instanceof JobClaimLostError || job.signal.aborted) throw err;
      const ge = toGatewayError(err);
      log.error('delivery attempt failed', { code: ge.code, error: (err as Error).message });
      // Our own fault (file unreadable, de-identification refused): retrying the same bytes will not help.
      const transient = ge.code === 'transient' || ge.code === 'out-of-resources' || ge.code === 'internal';
      failure = { message: ge.message === 'internal error' ? (err as Error).message : ge.message, transient };
    }
    throw await this.fail(job, d, failure.message, failure.transient, log);
  }

  private async process(
    job: JobContext<DeliverJobPayload>,
    d: DeliveryRow,
    log: Logger,
  ): Promise<{ outcome: JobOutcome } | { failed: { message: string; transient: boolean } }> {
    const started = Date.now();
    const sender = this.o.senders.get(d.destination_id);
    if (!sender) return { failed: { message: `destination "${d.destination_id}" is not configured`, transient: false } };
    const pending = await pendingInstances(this.db, d.id);
    const destination = this.o.config.destinations.find((x) => x.id === d.destination_id)!;
    let deid: DeidContext | undefined;
    if (d.deidentify === 1) {
      const policy = this.o.config.forwarding.deidentification.exclusionPolicy;
      if (policy === 'hold-case') {
        // Newly found ones, and ones listed by an earlier attempt and not released yet (a retry does not send around them).
        const risky = await this.riskyInstances(job, d, pending);
        if (risky > 0 || (await hasOpenExclusions(this.db, d.id))) {
          await this.hold(
            job,
            d,
            'instances may carry identifiers that de-identification cannot remove: the case waits until each is released (see excludedInstances)',
            log,
          );
          return { outcome: undefined };
        }
      }
      deid = {
        pseudonyms: await StudyPseudonyms.load(this.db, this.o.pseudonymSecret(), d.destination_id, d.study_instance_uid),
        hl7: await this.hl7IdentifiersOf(d.study_instance_uid),
      };
    }
    let sent = 0;
    for (let i = 0; i < pending.length; i += destination.batchSize) {
      // Progress renews the claim; a worker that lost it (its lease ran out and another took the job) stops here.
      // The first batch follows the claim and the fenced `sending` write: the lease is fresh (the timer renews it too).
      // No stop check here: runJob made one before the first batch and each batch ends with one, and every
      // instance is checked again just before it goes on the wire (fenceInstances).
      if (i > 0) await job.renew();
      const batch = pending.slice(i, i + destination.batchSize);
      const outgoing = await this.prepare(job, d, batch, deid, log);
      this.fenceInstances(
        job,
        d,
        outgoing.instances.map((x) => x.instance),
      );
      const results = await sender.send(outgoing.instances.map((x) => x.instance));
      if (
        await this.stopped(
          job,
          d,
          outgoing.instances.filter((_, j) => results[j]?.ok).map((x) => x.original),
          log,
        )
      )
        return { outcome: undefined };
      const now = this.clock();
      const ok: string[] = [];
      let permanent: string | undefined;
      let transient: string | undefined;
      results.forEach((r, j) => {
        const original = outgoing.instances[j]!.original;
        if (r.ok) ok.push(original);
        else if (r.failure?.transient) transient ??= r.failure.message;
        else permanent ??= r.failure?.message ?? 'refused';
      });
      if (results.length !== outgoing.instances.length) transient ??= `destination answered ${results.length} of ${outgoing.instances.length} instances`;
      sent += ok.length;
      if (i + destination.batchSize >= pending.length && !outgoing.stopped && !permanent && !transient) {
        // The last batch, all through: recorded in the transaction that closes the delivery.
        const outcome = await this.delivered(job, d, log, { sentUids: ok, at: now.toISOString() });
        this.o.metrics?.delivered(d.destination_id, sent, (Date.now() - started) / 1000);
        return { outcome };
      }
      // One transaction, fenced: the rows and the delivery's counter commit together, and only while the claim is ours.
      await job.fenced((trx) => markInstances(trx, d.id, ok, DeliveryInstanceState.sent, now.toISOString(), null));
      // An instance that could not be prepared stopped the batch there (nothing after it was sent): what went
      // through is recorded above; the delivery fails as an unreadable file always did.
      if (outgoing.stopped) throw outgoing.stopped;
      if (permanent) {
        const failedUids = outgoing.instances.map((x) => x.original).filter((u) => !ok.includes(u));
        await job.fenced((trx) => markInstances(trx, d.id, failedUids, DeliveryInstanceState.failed, now.toISOString(), permanent ?? null));
        return { failed: { message: permanent, transient: false } };
      }
      if (transient) return { failed: { message: transient, transient: true } };
    }
    const outcome = await this.delivered(job, d, log);
    this.o.metrics?.delivered(d.destination_id, sent, (Date.now() - started) / 1000);
    return { outcome };
  }

  /**
   * Makes a batch ready to send, one instance after another. Plain: the
   * stored file by path, opened by the sender (one it cannot read fails that
   * instance permanently, so the delivery fails after the others went out).
   * De-identified: the instance's risk is judged from
   * its header (a risky one not released by a person is excluded from the
   * delivery with the reason); the header is de-identified (the pixel data is
   * later streamed from the stored file unchanged); the pseudonyms are stored
   * before anything is sent under them (an answer must always link back); and
   * what will leave is verified for the study's known identifiers: a hit
   * excludes the instance as `phi-detected`, never sends it. A de-identified
   * instance that cannot be prepared at all (file gone, unsupported encoding)
   * stops the batch there: what came before it is sent, then the delivery fails.
   */
  private async prepare(
    job: JobContext<DeliverJobPayload>,
    d: DeliveryRow,
    batch: PendingInstance[],
    deid: DeidContext | undefined,
    log: Logger,
  ): Promise<{ instances: { original: string; instance: SendableInstance }[]; stopped?: unknown }> {
    const out: { instances: { original: string; instance: SendableInstance }[]; stopped?: unknown } = { instances: [] };
    const options = this.o.config.forwarding.deidentification;
    if (deid) {
      deid.pseudonyms.uid(d.study_instance_uid);
      for (const b of batch) deid.pseudonyms.uid(b.sop_instance_uid);
      await deid.pseudonyms.persist(this.db, this.clock().toISOString());
    }
    if (!deid) {
      // Plain: the stored files as they are, opened by the sender when it gets to each (none is read here, so the
      // first instance leaves at once); a file that cannot be read fails its own instance there.
      for (const b of batch) {
        out.instances.push({
          original: b.sop_instance_uid,
          instance: {
            sopClassUid: b.sop_class_uid,
            sopInstanceUid: b.sop_instance_uid,
            transferSyntaxUid: b.transfer_syntax_uid,
            file: this.o.spool.absolute(b.file_path),
          },
        });
      }
      return out;
    }
    for (const b of batch) {
      try {
        const abs = this.o.spool.absolute(b.file_path);
        const header = await readSourceHeader(abs);
        const released = b.released === 1;
        if (!released) {
          const risk = this.risk(header);
          if (risk) {
            await this.exclude(job, d, b, header, risk.reason, risk.detail, log);
            continue;
          }
        }
        const r = await this.o.deid.deidentify(abs, deid.pseudonyms, {
          retainLongitudinalModifiedDates: options.retainLongitudinalModifiedDates,
          retainPatientCharacteristics: options.retainPatientCharacteristics,
          safePrivateTags: options.safePrivateTags,
          releasedByReviewer: released,
          hl7: deid.hl7,
        });
        await deid.pseudonyms.persist(this.db, this.clock().toISOString());
        const verdict = r.verification;
        if (!verdict.clean) {
          const paths = [...new Set(verdict.hits.map((h) => `${h.path} (${h.kind})`))];
          await this.exclude(job, d, b, header, 'phi-detected', `identifier found after de-identification at ${paths.join(', ')}`, log, paths);
          this.o.metrics?.phiDetected(d.destination_id);
          continue;
        }
        const pieces: Piece[] = [r.prefix];
        if (r.pixel) pieces.push({ path: abs, start: r.pixel.start, end: r.pixel.end });
        out.instances.push({
          original: b.sop_instance_uid,
          instance: {
            sopClassUid: b.sop_class_uid,
            sopInstanceUid: deid.pseudonyms.uid(b.sop_instance_uid),
            transferSyntaxUid: b.transfer_syntax_uid,
            stream: part10Stream(pieces, part10DatasetOffset(r.prefix)),
          },
        });
      } catch (err) {
        out.stopped = unreadable(err);
        break;
      }
    }
    return out;
  }

  /**
   * The stop check between instances: a sender calls `beforeSend` just before
   * it puts an instance on the wire, so once the case is cancelled (or the
   * study held) only the instance already in flight still arrives.
   */
  private fenceInstances(job: JobContext<DeliverJobPayload>, d: DeliveryRow, instances: SendableInstance[]): void {
    for (const x of instances) {
      x.beforeSend = async () => {
        if (job.signal.aborted) throw new Error('the delivery job lost its claim');
        const why = await deliveryStop(this.db, d.id);
        if (why) throw new Error(why === 'cancelled' ? 'the case was cancelled' : 'the study is held');
      };
    }
  }

  /**
   * After a batch (or before the next): the case cancelled or the study held
   * stops the delivery here. What went through is recorded; a held study's
   * delivery waits as pending for its release, a cancelled one stays cancelled.
   */
  private async stopped(
    job: JobContext<DeliverJobPayload>,
    d: DeliveryRow,
    sentUids: string[],
    log: Logger,
    // What the caller's own read of the delivery just found, instead of reading again.
    known?: { stop: 'cancelled' | 'held' | undefined },
  ): Promise<boolean> {
    const why = known ? known.stop : await deliveryStop(this.db, d.id);
    if (!why) return false;
    const now = this.clock().toISOString();
    await job.fenced(async (trx) => {
      await markInstances(trx, d.id, sentUids, DeliveryInstanceState.sent, now, null);
      // The job ends; the planning pass enqueues the parked delivery again once its study is released.
      if (why === 'held') await parkDelivery(trx, d.id, now);
      else await dropUnsentInstances(trx, [d.id]);
    });
    log.info(why === 'cancelled' ? 'delivery stopped: its case was cancelled' : 'delivery paused: its study is held', {
      caseId: d.case_id,
      sentThisBatch: sentUids.length,
    });
    return true;
  }

  /** The exclusion decision: the de-identifier's risk rules, plus the modalities configured as risky. */
  private risk(header: SourceHeader): { reason: string; detail: string } | null {
    const r = this.o.deid.risk(header);
    if (r) return r;
    const modality = String(header.dict['00080060']?.Value?.[0] ?? '')
      .trim()
      .toUpperCase();
    const extra = new Set(this.o.config.forwarding.holdBurnedInModalities.map((m) => m.toUpperCase()));
    if (modality && extra.has(modality)) return { reason: 'burned-in-risk', detail: `modality ${modality} is listed in forwarding.holdBurnedInModalities` };
    return null;
  }

  /** hold-case policy: every risky instance not released is recorded (listed on the case); the count decides the hold. */
  private async riskyInstances(job: JobContext<DeliverJobPayload>, d: DeliveryRow, pending: PendingInstance[]): Promise<number> {
    let n = 0;
    for (const b of pending) {
      if (b.released === 1) continue;
      const header = await readSourceHeader(this.o.spool.absolute(b.file_path));
      const risk = this.risk(header);
      if (!risk) continue;
      n++;
      const now = this.clock().toISOString();
      await job.fenced((trx) =>
        excludeInstance(trx, {
          deliveryId: d.id,
          caseId: d.case_id,
          sopInstanceUid: b.sop_instance_uid,
          sopClassUid: header.sopClassUid || b.sop_class_uid,
          seriesDescription: header.seriesDescription,
          reason: risk.reason,
          detail: risk.detail,
          now,
        }),
      );
      this.o.metrics?.excluded(d.destination_id, risk.reason);
    }
    return n;
  }

  private async exclude(
    job: JobContext<DeliverJobPayload>,
    d: DeliveryRow,
    b: PendingInstance,
    header: SourceHeader,
    reason: string,
    detail: string,
    log: Logger,
    paths?: string[],
  ): Promise<void> {
    const now = this.clock().toISOString();
    await job.fenced(async (trx) => {
      await excludeInstance(trx, {
        deliveryId: d.id,
        caseId: d.case_id,
        sopInstanceUid: b.sop_instance_uid,
        sopClassUid: header.sopClassUid || b.sop_class_uid,
        seriesDescription: header.seriesDescription,
        reason,
        detail,
        now,
      });
      await recordAudit(trx, this.o.newId(), now, {
        actor: ACTOR,
        action: 'case.instance-excluded',
        entityType: 'case',
        entityId: d.case_id,
        // Paths and the rule, never a value: the audit is read by people who must not see the identifier either.
        details: { deliveryId: d.id, destinationId: d.destination_id, sopInstanceUid: b.sop_instance_uid, reason, detail, ...(paths ? { paths } : {}) },
      });
    });
    this.o.metrics?.excluded(d.destination_id, reason);
    const fields = { caseId: d.case_id, sop: hashId(b.sop_instance_uid), reason, ...(paths ? { paths } : {}) };
    if (reason === 'phi-detected') log.warn('identifier found in a de-identified instance: not sent', fields);
    else log.info('instance excluded from the de-identified delivery', fields);
  }

  /** The study's orders and reports, read once per delivery attempt. */
  private async hl7IdentifiersOf(studyUid: string): Promise<Hl7Identifiers> {
    const ids = emptyHl7Identifiers();
    for (const raw of await rawHl7OfStudy(this.db, studyUid)) addHl7Identifiers(raw, ids);
    return dedupeHl7Identifiers(ids);
  }

  /** Closes the delivery (fenced), recording `lastBatch` first when the caller has one to record. */
  private async delivered(
    job: JobContext<DeliverJobPayload>,
    d: DeliveryRow,
    log: Logger,
    lastBatch?: { sentUids: string[]; at: string },
  ): Promise<JobOutcome> {
    const now = this.clock().toISOString();
    const requeued = await job.fenced(async (trx) => {
      if (lastBatch) await markInstances(trx, d.id, lastBatch.sentUids, DeliveryInstanceState.sent, lastBatch.at, null);
      // Late instances that planDeltas added while this attempt was sending (a planning job runs beside a
      // delivery in flight) are not in the list this attempt read. Closing the delivery left them pending for
      // good: deliveriesNeedingDelta counts them as planned. Found by scripts/chaos.ts.
      if (await hasPendingInstances(trx, d.id)) {
        await updateDelivery(trx, d.id, { state: DeliveryState.pending, next_attempt_at: now, updated_at: now });
        return true;
      }
      if (d.deidentify === 1) {
        // Everything kept back: a reader would get an empty study. Held for a person instead (release or cancel).
        if ((await instancesSentOf(trx, d.id)) === 0 && (await hasOpenExclusions(trx, d.id))) return 'hold' as const;
      }
      await updateDelivery(trx, d.id, { state: DeliveryState.delivered, delivered_at: now, last_error: null, updated_at: now });
      // A prior's delivery (priors.service.ts) is context: the case is awaiting its read once its own study is there.
      const all = (await deliveriesOfCases(trx, [d.case_id])).filter((x) => x.study_instance_uid === d.study_instance_uid);
      if (!(await isPriorDelivery(trx, d)) && all.every((x) => x.id === d.id || x.state === DeliveryState.delivered)) {
        await transitionCase(trx, {
          caseId: d.case_id,
          from: [CaseState.forwarding],
          to: CaseState.awaitingRead,
          actor: ACTOR,
          now,
          auditId: this.o.newId(),
          details: { deliveryId: d.id },
        });
      }
      // The job ends with the delivery's outcome, in the same commit.
      await job.completeIn(trx);
      return false;
    });
    if (requeued === 'hold') return await this.hold(job, d, 'every instance was excluded from the de-identified delivery (see excludedInstances)', log);
    if (requeued) {
      log.info('late instances arrived while sending; sending them next', { caseId: d.case_id });
      // The same job again, at once and keeping its place in the destination's queue (not counted as a failure).
      return { runAgainAt: new Date() };
    }
    log.info('delivered', { caseId: d.case_id, attempts: d.attempts + 1 });
    return undefined;
  }

  /**
   * Records a failed attempt on the delivery (fenced) and returns what the job
   * throws: a plain error, retried by the engine after its backoff, or a
   * `JobPermanentError` once the delivery is dead (refused, or out of attempts),
   * which dead-letters the job too.
   */
  private async fail(job: JobContext<DeliverJobPayload>, d: DeliveryRow, message: string, transient: boolean, log: Logger): Promise<Error> {
    const attempts = d.attempts + 1;
    const dead = !transient || job.attempt >= this.o.config.forwarding.maxAttempts;
    const now = this.clock().toISOString();
    this.o.metrics?.failed(d.destination_id, transient ? 'transient' : 'permanent');
    await job.fenced(async (trx) => {
      if (dead) {
        await updateDelivery(trx, d.id, { state: DeliveryState.dead, attempts, last_error: message, updated_at: now });
        // A prior that could not be sent is shown on the case (and retried with it), never a reason to fail the case.
        if (await isPriorDelivery(trx, d)) {
          await setPriorState(trx, d.case_id, d.study_instance_uid, PriorState.failed, `not delivered: ${message}`, now);
          return;
        }
        await transitionCase(trx, {
          caseId: d.case_id,
          from: [CaseState.forwarding, CaseState.awaitingRead],
          to: CaseState.failed,
          actor: ACTOR,
          now,
          auditId: this.o.newId(),
          details: { deliveryId: d.id, error: message, attempts },
        });
      } else {
        await updateDelivery(trx, d.id, { state: DeliveryState.pending, attempts, last_error: message, updated_at: now });
      }
    });
    if (dead) log.warn('delivery dead-lettered', { caseId: d.case_id, attempts, permanent: !transient, error: message });
    else log.info('delivery will be retried', { caseId: d.case_id, attempts, error: message });
    return dead ? new JobPermanentError(message) : new Error(message);
  }

  private async hold(job: JobContext<DeliverJobPayload>, d: DeliveryRow, reason: string, log: Logger): Promise<void> {
    const now = this.clock().toISOString();
    await job.fenced(async (trx) => {
      await updateDelivery(trx, d.id, { state: DeliveryState.held, last_error: reason, updated_at: now });
      if (await isPriorDelivery(trx, d)) {
        await setPriorState(trx, d.case_id, d.study_instance_uid, PriorState.failed, `held: ${reason}`, now);
        return;
      }
      await transitionCase(trx, {
        caseId: d.case_id,
        from: [CaseState.forwarding, CaseState.awaitingRead],
        to: CaseState.held,
        actor: ACTOR,
        now,
        auditId: this.o.newId(),
        details: { deliveryId: d.id, reason },
      });
    });
    log.warn('delivery held for review', { caseId: d.case_id, reason });
  }

  /**
   * A person (admin, QA) looked at an instance kept back from a de-identified
   * delivery and lets it go: it is queued in its delivery again (a delta of a
   * delivered one; a held hold-case delivery goes back to pending once no
   * instance of it is still kept back) and de-identified with the reviewer's
   * release (the risk rules are skipped; an encapsulated document is copied).
   * The verifier still runs: a `phi-detected` exclusion cannot be released,
   * since the same bytes would be stopped again (409 says so).
   */
  async releaseExcluded(caseId: string, sopInstanceUid: string, actor: string, reason: string | null): Promise<{ deliveries: string[] }> {
    const now = this.clock().toISOString();
    const released = await this.db.transaction().execute(async (trx) => {
      const c = await caseStateOf(trx, caseId);
      if (!c) throw new GatewayError(ErrorCode.notFound, 'no such case');
      const rows = await exclusionsOfInstance(trx, caseId, sopInstanceUid);
      if (rows.length === 0) {
        if (!(await isInstanceOfStudy(trx, sopInstanceUid, c.study_instance_uid)))
          throw new GatewayError(ErrorCode.notFound, "no such instance in this case's study");
        throw new GatewayError(ErrorCode.conflict, 'this instance is not excluded from any delivery of the case');
      }
      const open = rows.filter((r) => r.released_at === null);
      if (open.length === 0) throw new GatewayError(ErrorCode.conflict, 'this instance was already released');
      if (open.some((r) => r.reason === 'phi-detected')) {
        throw new GatewayError(
          ErrorCode.conflict,
          'an identifier of the study was found in the de-identified copy of this instance (see the audit for where): it cannot be released, the verifier would stop it again',
        );
      }
      if (c.state === CaseState.cancelled) throw new GatewayError(ErrorCode.conflict, 'the case is cancelled');
      const deliveries = await deliveriesOfCases(trx, [caseId]);
      const done: string[] = [];
      for (const r of open) {
        if (!(await releaseExclusion(trx, { deliveryId: r.delivery_id, sopInstanceUid, actor, reason, now }))) continue;
        done.push(r.delivery_id);
        const d = deliveries.find((x) => x.id === r.delivery_id);
        if (!d) continue;
        if (d.state === DeliveryState.delivered) {
          await updateDelivery(trx, d.id, { state: DeliveryState.pending, attempts: 0, next_attempt_at: now, last_error: null, updated_at: now });
          await this.enqueueDelivery(trx, d.id, d.destination_id);
        } else if (
          d.state === DeliveryState.held &&
          // hold-case waits until every kept-back instance is released; a delivery held because all its instances were
          // excluded (exclude-instance) sends what a person released.
          (this.o.config.forwarding.deidentification.exclusionPolicy === 'exclude-instance' || !(await hasOpenExclusions(trx, d.id)))
        ) {
          await updateDelivery(trx, d.id, { state: DeliveryState.pending, attempts: 0, next_attempt_at: now, last_error: null, updated_at: now });
          await this.enqueueDelivery(trx, d.id, d.destination_id);
          await transitionCase(trx, {
            caseId,
            from: [CaseState.held],
            to: CaseState.forwarding,
            actor,
            now,
            auditId: this.o.newId(),
            details: { deliveryId: d.id, released: sopInstanceUid },
          });
        }
      }
      await recordAudit(trx, this.o.newId(), now, {
        actor,
        action: 'case.excluded-instance-released',
        entityType: 'case',
        entityId: caseId,
        details: { sopInstanceUid, deliveries: done, excludedFor: [...new Set(open.map((r) => r.reason))], reason },
      });
      return done;
    });
    this.log.info('excluded instance released', { caseId, actor, sop: hashId(sopInstanceUid), deliveries: released.length });
    return { deliveries: released };
  }

  /**
   * A person's retry: dead-lettered or held deliveries of the case start
   * again from what is still missing, with a fresh attempt count.
   */
  async retryCase(caseId: string, actor: string): Promise<{ deliveries: number }> {
    const now = this.clock().toISOString();
    const n = await this.db.transaction().execute(async (trx) => {
      const c = await caseStateOf(trx, caseId);
      if (!c) throw new GatewayError(ErrorCode.notFound, 'no such case');
      const retryable = (await deliveriesOfCases(trx, [caseId])).filter((x) => x.state === DeliveryState.dead || x.state === DeliveryState.held);
      if (retryable.length === 0 && c.state !== CaseState.held) {
        throw new GatewayError(ErrorCode.conflict, `nothing to retry: the case is ${c.state} and no delivery is dead or held`);
      }
      for (const x of retryable) {
        await resetFailedInstances(trx, x.id);
        await updateDelivery(trx, x.id, { state: DeliveryState.pending, attempts: 0, next_attempt_at: now, last_error: null, updated_at: now });
        // The dead job gives way to a fresh one with a fresh attempt count, at the back of its destination's queue.
        await deleteDeadJobs(trx, DELIVER_JOB, x.id);
        await this.enqueueDelivery(trx, x.id, x.destination_id);
      }
      // A case held before any delivery existed (e.g. unknown destination) goes back to be planned again.
      const to = retryable.length > 0 ? CaseState.forwarding : CaseState.flagged;
      // Only a held case may go back to flagged (failed -> flagged is not a transition: a failed case had deliveries).
      const from = to === CaseState.flagged ? [CaseState.held] : [CaseState.failed, CaseState.held];
      await transitionCase(trx, { caseId, from, to, actor, now, auditId: this.o.newId(), details: { retried: retryable.map((x) => x.id) } });
      // Flagged again: planned by its own job, enqueued with the change (after the case row, see runPlanJob).
      if (to === CaseState.flagged) await this.enqueuePlan(trx, { caseId });
      return retryable.length;
    });
    this.log.info('case retried', { caseId, actor, deliveries: n });
    return { deliveries: n };
  }
}

/** A stored file that is gone will not come back by retrying: the job is dead-lettered for a person to look at. */
function unreadable(err: unknown): unknown {
  const e = err as NodeJS.ErrnoException;
  return e?.code === 'ENOENT' ? new GatewayError(ErrorCode.unreadableData, `stored file of an instance is missing (${e.code})`) : err;
}
