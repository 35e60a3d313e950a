import { readFile } from 'node:fs/promises';
import { backoffMs } from '../backoff.js';
import { PollLoop } from '../poll-loop.js';
import { transitionCase } from '../cases/case-state.js';
import { dropUnsentInstances } from '../cases/case-end.repository.js';
import type { GatewayConfig } from '../config/schema.js';
import type { Db } from '../db/database.js';
import type { Spool } from '../dicom/spool.js';
import { ErrorCode, GatewayError, toGatewayError } from '../errors.js';
import { hashId, type Logger } from '../logger.js';
import { CaseState, DeliveryInstanceState, DeliveryState } from '../states.js';
import type { DeliveryRow } from './delivery.table.js';
import type { DestinationSender, LazyOutgoingInstance } from './destination.js';
import {
  addMissingInstances,
  casesReadyToForward,
  claimDue,
  deliveriesNeedingDelta,
  dueDestinations,
  deliveriesOfCases,
  deliveryStop,
  insertDelivery,
  markInstances,
  parkDelivery,
  pendingInstances,
  renewLease,
  updateDelivery,
  type PendingInstance,
} from './outbox.repository.js';
import { StudyPseudonyms } from './pseudonym.service.js';
import { acquireLease, releaseLease, renewLeaseOf } from '../instances/instance.repository.js';
import { forClaim } from '../db/dialect.js';

/** The work lease that gives one instance a destination's queue. */
export function destinationLease(destinationId: string): string {
  return `destination:${destinationId}`;
}

/** What the de-identifier needs and returns (src/forwarding/deidentify.ts). */
export interface DeidentifyPort {
  (
    file: Buffer,
    pseudonyms: StudyPseudonyms,
    options: { retainLongitudinalModifiedDates: boolean; retainPatientCharacteristics: boolean; safePrivateTags?: string[] },
  ): { bytes: Buffer; burnedInAnnotation: 'YES' | 'NO' | null };
}

export interface ForwardingMetrics {
  delivered(destinationId: string, instances: number, seconds: number): void;
  failed(destinationId: string, kind: 'transient' | 'permanent'): void;
}

export interface ForwardingServiceOptions {
  db: Db;
  logger: Logger;
  config: Pick<GatewayConfig, 'forwarding' | 'destinations' | 'instanceId'>;
  spool: Spool;
  senders: ReadonlyMap<string, DestinationSender>;
  deidentify: DeidentifyPort;
  /** HMAC key of the pseudonyms (kept in the database). */
  pseudonymSecret: () => string;
  newId: () => string;
  metrics?: ForwardingMetrics;
  /** Gateway assignment: picks the reader (in the planning transaction); may redirect to the reader's destination. */
  assignReader?: (
    trx: Db,
    c: { id: string; study_instance_uid: string; reader_group: string | null },
  ) => Promise<{ ok: true; destinationId?: string } | { ok: false; reason: string }>;
  clock?: () => Date;
  random?: () => number;
}

const ACTOR = 'forwarding';

/**
 * The durable outbox worker. Deliveries are rows; this loop plans them for
 * flagged cases of stable studies, claims due ones under a lease, sends what
 * each still misses in batches, and records every outcome before moving on.
 * A crash anywhere resumes from the rows: at worst an instance whose success
 * was not yet recorded is sent again, which a receiver takes as the same SOP
 * instance (pseudonymous UIDs are stable per study and destination).
 */
export class ForwardingService {
  private readonly db: Db;
  private readonly log: Logger;
  private readonly clock: () => Date;
  private readonly random: () => number;
  private readonly loop: PollLoop;
  private readonly busyDestinations = new Set<string>();
  private readonly inFlight = new Set<Promise<void>>();

  constructor(private readonly o: ForwardingServiceOptions) {
    this.db = o.db;
    this.log = o.logger.child({ component: 'forwarding' });
    this.clock = o.clock ?? (() => new Date());
    this.random = o.random ?? Math.random;
    this.loop = new PollLoop(
      () => this.tick(),
      o.config.forwarding.pollIntervalSeconds * 1000,
      (err) => this.log.error('forwarding pass failed', { error: (err as Error).message }),
    );
  }

  start(): void {
    this.loop.start();
  }

  async stop(): Promise<void> {
    await this.loop.stop();
    await Promise.allSettled([...this.inFlight]);
  }

  /** Something changed (a case flagged, a study stable): look now rather than at the next poll. */
  kick(): void {
    this.loop.kick();
  }

  /** Waits until no delivery is being worked on and no pass is under way (tests, shutdown). */
  async idle(): Promise<void> {
    for (;;) {
      await this.loop.current;
      await Promise.allSettled([...this.inFlight]);
      if (!this.loop.current && this.inFlight.size === 0) return;
    }
  }

  /** One pass: plan new deliveries and deltas, claim what is due, start sending per destination. */
  async tick(): Promise<void> {
    await this.planDeliveries();
    await this.planDeltas();
    const now = this.clock();
    const nowIso = now.toISOString();
    const until = this.leaseUntil(now);
    // A destination is worked by one instance at a time (its lease), one delivery after another: that keeps
    // each destination's deliveries in order across instances, while different destinations run side by
    // side (here and on other instances), so a dead one never holds up another.
    const held: string[] = [];
    for (const destinationId of await dueDestinations(this.db, nowIso)) {
      if (this.busyDestinations.has(destinationId)) continue;
      if (await acquireLease(this.db, destinationLease(destinationId), this.owner, nowIso, until)) held.push(destinationId);
    }
    const claimed = await claimDue(this.db, this.owner, nowIso, until, 50, held);
    const byDestination = new Map<string, DeliveryRow[]>();
    for (const d of claimed) byDestination.set(d.destination_id, [...(byDestination.get(d.destination_id) ?? []), d]);
    for (const destinationId of held) {
      const deliveries = byDestination.get(destinationId);
      if (!deliveries) {
        await releaseLease(this.db, destinationLease(destinationId), this.owner);
        continue;
      }
      this.busyDestinations.add(destinationId);
      const work = (async () => {
        try {
          for (const d of deliveries) await this.process(d);
        } finally {
          this.busyDestinations.delete(destinationId);
          await releaseLease(this.db, destinationLease(destinationId), this.owner).catch((err: unknown) =>
            this.log.warn('could not release a destination lease (it expires by itself)', { destinationId, error: (err as Error).message }),
          );
        }
      })();
      this.inFlight.add(work);
      void work.finally(() => this.inFlight.delete(work));
    }
  }

  private get owner(): string {
    return this.o.config.instanceId;
  }

  private leaseUntil(now: Date): string {
    return new Date(now.getTime() + this.o.config.forwarding.leaseSeconds * 1000).toISOString();
  }

  private async planDeliveries(): Promise<void> {
    const ready = await casesReadyToForward(this.db, 100);
    for (const c of ready) {
      const now = this.clock().toISOString();
      const planned = await this.db.transaction().execute(async (trx) => {
        // Another instance may be planning the same case: whoever locks it first plans it, the other skips it.
        const mine = await forClaim(trx, trx.selectFrom('cases').select('id').where('id', '=', c.id).where('state', '=', CaseState.flagged)).executeTakeFirst();
        if (!mine) return false;
        let destinationId = c.destination_id;
        if (this.o.assignReader) {
          const assigned = await this.o.assignReader(trx, c);
          if (!assigned.ok) {
            await transitionCase(trx, { caseId: c.id, from: [CaseState.flagged], to: CaseState.held, actor: ACTOR, now, auditId: this.o.newId(), details: { reason: `no reader: ${assigned.reason}` } });
            return false;
          }
          destinationId = assigned.destinationId ?? destinationId;
          if (destinationId !== c.destination_id) await trx.updateTable('cases').set({ destination_id: destinationId }).where('id', '=', c.id).execute();
        }
        const destination = this.o.config.destinations.find((d) => d.id === destinationId);
        if (!destination) {
          await transitionCase(trx, {
            caseId: c.id,
            from: [CaseState.flagged],
            to: CaseState.held,
            actor: ACTOR,
            now,
            auditId: this.o.newId(),
            details: { reason: `destination "${destinationId ?? ''}" is not configured` },
          });
          return false;
        }
        const deidentify = c.deidentify === null ? destination.deidentify : c.deidentify === 1;
        const instances = await insertDelivery(trx, { id: this.o.newId(), caseId: c.id, destinationId: destination.id, studyInstanceUid: c.study_instance_uid, deidentify, now });
        await transitionCase(trx, {
          caseId: c.id,
          from: [CaseState.flagged],
          to: CaseState.forwarding,
          actor: ACTOR,
          now,
          auditId: this.o.newId(),
          details: { destinationId: destination.id, deidentify, instances },
        });
        return true;
      });
      if (!planned) continue;
      this.log.info('delivery planned', { caseId: c.id, destinationId: c.destination_id, studyUid: hashId(c.study_instance_uid) });
    }
  }

  private async planDeltas(): Promise<void> {
    for (const d of await deliveriesNeedingDelta(this.db, 100)) {
      const now = this.clock().toISOString();
      const added = await this.db.transaction().execute(async (trx) => {
        // Two instances may see the same delta: the one that locks the delivery adds it, the other skips.
        const mine = await forClaim(trx, trx.selectFrom('deliveries').select('id').where('id', '=', d.id)).executeTakeFirst();
        if (!mine) return 0;
        const n = await addMissingInstances(trx, d.id, d.study_instance_uid);
        if (n > 0 && d.state === DeliveryState.delivered) {
          await updateDelivery(trx, d.id, { state: DeliveryState.pending, attempts: 0, next_attempt_at: now, last_error: null, updated_at: now });
        }
        return n;
      });
      if (added > 0) this.log.info('late instances queued as a delta', { deliveryId: d.id, instances: added, studyUid: hashId(d.study_instance_uid) });
    }
  }

  private async process(d: DeliveryRow): Promise<void> {
    const log = this.log.child({ jobId: d.id, destinationId: d.destination_id, studyUid: hashId(d.study_instance_uid) });
    const started = Date.now();
    const sender = this.o.senders.get(d.destination_id);
    try {
      if (!sender) return await this.fail(d, `destination "${d.destination_id}" is not configured`, false, log);
      const pending = await pendingInstances(this.db, d.id);
      const destination = this.o.config.destinations.find((x) => x.id === d.destination_id)!;
      let pseudonyms: StudyPseudonyms | undefined;
      if (d.deidentify === 1) {
        const hold = await this.burnedInModality(d.study_instance_uid);
        if (hold) return await this.hold(d, `modality ${hold} may carry burned-in identifiers`, log);
        pseudonyms = await StudyPseudonyms.load(this.db, this.o.pseudonymSecret(), d.destination_id, d.study_instance_uid);
      }
      let sent = 0;
      for (let i = 0; i < pending.length; i += destination.batchSize) {
        if (await this.stopped(d, [], log)) return;
        const batch = pending.slice(i, i + destination.batchSize);
        const outgoing = await this.prepare(batch, pseudonyms, d.study_instance_uid);
        this.fenceInstances(d, outgoing.instances);
        const results = await sender.send(outgoing.instances);
        if (await this.stopped(d, batch.filter((b, j) => results[j]?.ok).map((b) => b.sop_instance_uid), log)) return;
        // A loader that failed stopped the batch there (nothing after it was sent): record what went through,
        // then hold or fail the delivery as the eager read used to.
        if (outgoing.stopped) {
          const ok = batch.filter((b, j) => results[j]?.ok).map((b) => b.sop_instance_uid);
          await this.db.transaction().execute((trx) => markInstances(trx, d.id, ok, DeliveryInstanceState.sent, this.clock().toISOString(), null));
          if ('hold' in outgoing.stopped) return await this.hold(d, outgoing.stopped.hold, log);
          throw outgoing.stopped.error;
        }
        const now = this.clock();
        const ok: string[] = [];
        let permanent: string | undefined;
        let transient: string | undefined;
        results.forEach((r, j) => {
          const original = batch[j]!.sop_instance_uid;
          if (r.ok) ok.push(original);
          else if (r.failure?.transient) transient ??= r.failure.message;
          else permanent ??= r.failure?.message ?? 'refused';
        });
        if (results.length !== batch.length) transient ??= `destination answered ${results.length} of ${batch.length} instances`;
        // One transaction: the rows and the delivery's counter commit together (a crash between them left instances_sent stale).
        await this.db.transaction().execute((trx) => markInstances(trx, d.id, ok, DeliveryInstanceState.sent, now.toISOString(), null));
        sent += ok.length;
        await renewLease(this.db, d.id, this.owner, this.leaseUntil(now));
        await renewLeaseOf(this.db, destinationLease(d.destination_id), this.owner, this.leaseUntil(now));
        if (permanent) {
          const failedUids = batch.map((b) => b.sop_instance_uid).filter((u) => !ok.includes(u));
          await this.db.transaction().execute((trx) => markInstances(trx, d.id, failedUids, DeliveryInstanceState.failed, now.toISOString(), permanent ?? null));
          return await this.fail(d, permanent, false, log);
        }
        if (transient) return await this.fail(d, transient, true, log);
      }
      await this.delivered(d, log);
      this.o.metrics?.delivered(d.destination_id, sent, (Date.now() - started) / 1000);
    } catch (err) {
      const ge = toGatewayError(err);
      log.error('delivery attempt failed', { code: ge.code, error: (err as Error).message });
      // Our own fault (file unreadable, de-identification refused): retrying the same bytes will not help.
      const transient = ge.code === 'transient' || ge.code === 'out-of-resources' || ge.code === 'internal';
      await this.fail(d, ge.message === 'internal error' ? (err as Error).message : ge.message, transient, log).catch((e: unknown) =>
        log.error('could not record the failure', { error: (e as Error).message }),
      );
    }
  }

  /**
   * One loader per instance: the file is read (and de-identified) only when
   * the sender gets to it, so memory does not grow with the batch or study.
   * Pseudonyms are stored before anything is sent under them (the answer must
   * always link back): the batch's SOP and study UIDs are derived and stored
   * up front, and a loader that derived any other new pseudonym (series UID,
   * patient id, accession, a referenced UID) stores it before handing its
   * bytes over. A loader that fails (file gone, de-identification refused,
   * BurnedInAnnotation YES) makes every later loader of the batch refuse too,
   * so nothing past it is sent; `stopped` tells the caller why.
   */
  private async prepare(
    batch: PendingInstance[],
    pseudonyms: StudyPseudonyms | undefined,
    studyUid: string,
  ): Promise<{ instances: LazyOutgoingInstance[]; stopped?: { hold: string } | { error: unknown } }> {
    const options = this.o.config.forwarding.deidentification;
    const result: { instances: LazyOutgoingInstance[]; stopped?: { hold: string } | { error: unknown } } = { instances: [] };
    if (pseudonyms) {
      pseudonyms.uid(studyUid);
      for (const b of batch) pseudonyms.uid(b.sop_instance_uid);
      await pseudonyms.persist(this.db, this.clock().toISOString());
    }
    const read = (b: PendingInstance): Promise<Buffer> =>
      readFile(this.o.spool.absolute(b.file_path)).catch((err: NodeJS.ErrnoException) => {
        // A stored file that is gone will not come back by retrying: dead-letter the job for a person to look at.
        if (err.code === 'ENOENT') throw new GatewayError(ErrorCode.unreadableData, `stored file of an instance is missing (${err.code})`);
        throw err;
      });
    for (const b of batch) {
      const load = async (): Promise<Buffer> => {
        if (result.stopped) throw new Error('not sent: an earlier instance of the batch stopped the delivery');
        try {
          const bytes = await read(b);
          if (!pseudonyms) return bytes;
          const r = this.o.deidentify(bytes, pseudonyms, options);
          if (r.burnedInAnnotation === 'YES') {
            result.stopped = { hold: 'an instance has BurnedInAnnotation YES' };
            throw new Error(result.stopped.hold);
          }
          await pseudonyms.persist(this.db, this.clock().toISOString());
          return r.bytes;
        } catch (err) {
          result.stopped ??= { error: err };
          throw err;
        }
      };
      result.instances.push({ sopClassUid: b.sop_class_uid, sopInstanceUid: pseudonyms ? pseudonyms.uid(b.sop_instance_uid) : b.sop_instance_uid, transferSyntaxUid: b.transfer_syntax_uid, bytes: load });
    }
    return result;
  }

  /**
   * The stop check between instances: a sender calls `beforeSend` just before
   * it puts an instance on the wire, so once the case is cancelled (or the
   * study held) only the instance already in flight still arrives.
   */
  private fenceInstances(d: DeliveryRow, instances: LazyOutgoingInstance[]): void {
    for (const x of instances) {
      x.beforeSend = async () => {
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
  private async stopped(d: DeliveryRow, sentUids: string[], log: Logger): Promise<boolean> {
    const why = await deliveryStop(this.db, d.id);
    if (!why) return false;
    const now = this.clock().toISOString();
    await this.db.transaction().execute(async (trx) => {
      await markInstances(trx, d.id, sentUids, DeliveryInstanceState.sent, now, null);
      if (why === 'held') await parkDelivery(trx, d.id, this.owner, now);
      else await dropUnsentInstances(trx, [d.id]);
    });
    log.info(why === 'cancelled' ? 'delivery stopped: its case was cancelled' : 'delivery paused: its study is held', { caseId: d.case_id, sentThisBatch: sentUids.length });
    return true;
  }

  private async burnedInModality(studyUid: string): Promise<string | undefined> {
    const held = new Set(this.o.config.forwarding.holdBurnedInModalities.map((m) => m.toUpperCase()));
    const series = await this.db.selectFrom('series').select('modality').where('study_instance_uid', '=', studyUid).execute();
    return series.map((s) => (s.modality ?? '').toUpperCase()).find((m) => held.has(m));
  }

  private async delivered(d: DeliveryRow, log: Logger): Promise<void> {
    const now = this.clock().toISOString();
    const requeued = await this.db.transaction().execute(async (trx) => {
      // Late instances that planDeltas added while this attempt was sending (it runs on every pass, beside a
      // delivery in flight) are not in the list this attempt read. Closing the delivery left them pending for
      // good: deliveriesNeedingDelta counts them as planned. Found by scripts/chaos.ts.
      const left = await trx
        .selectFrom('delivery_instances')
        .select('sop_instance_uid')
        .where('delivery_id', '=', d.id)
        .where('state', '=', DeliveryInstanceState.pending)
        .executeTakeFirst();
      if (left) {
        await updateDelivery(trx, d.id, { state: DeliveryState.pending, next_attempt_at: now, lease_owner: null, lease_expires_at: null, updated_at: now });
        return true;
      }
      await updateDelivery(trx, d.id, { state: DeliveryState.delivered, delivered_at: now, lease_owner: null, lease_expires_at: null, last_error: null, updated_at: now });
      const all = await deliveriesOfCases(trx, [d.case_id]);
      if (all.every((x) => x.id === d.id || x.state === DeliveryState.delivered)) {
        await transitionCase(trx, { caseId: d.case_id, from: [CaseState.forwarding], to: CaseState.awaitingRead, actor: ACTOR, now, auditId: this.o.newId(), details: { deliveryId: d.id } });
      }
      return false;
    });
    if (requeued) {
      log.info('late instances arrived while sending; sending them next', { caseId: d.case_id });
      this.kick();
      return;
    }
    log.info('delivered', { caseId: d.case_id, attempts: d.attempts + 1 });
  }

  private async fail(d: DeliveryRow, message: string, transient: boolean, log: Logger): Promise<void> {
    const attempts = d.attempts + 1;
    const max = this.o.config.forwarding.maxAttempts;
    const now = this.clock();
    const dead = !transient || attempts >= max;
    this.o.metrics?.failed(d.destination_id, transient ? 'transient' : 'permanent');
    await this.db.transaction().execute(async (trx) => {
      if (dead) {
        await updateDelivery(trx, d.id, { state: DeliveryState.dead, attempts, last_error: message, lease_owner: null, lease_expires_at: null, updated_at: now.toISOString() });
        await transitionCase(trx, {
          caseId: d.case_id,
          from: [CaseState.forwarding, CaseState.awaitingRead],
          to: CaseState.failed,
          actor: ACTOR,
          now: now.toISOString(),
          auditId: this.o.newId(),
          details: { deliveryId: d.id, error: message, attempts },
        });
      } else {
        const next = new Date(now.getTime() + backoffMs(attempts, this.o.config.forwarding.backoffBaseSeconds, this.o.config.forwarding.backoffMaxSeconds, this.random)).toISOString();
        await updateDelivery(trx, d.id, { state: DeliveryState.pending, attempts, last_error: message, next_attempt_at: next, lease_owner: null, lease_expires_at: null, updated_at: now.toISOString() });
      }
    });
    if (dead) log.warn('delivery dead-lettered', { caseId: d.case_id, attempts, permanent: !transient, error: message });
    else log.info('delivery will be retried', { caseId: d.case_id, attempts, error: message });
  }

  private async hold(d: DeliveryRow, reason: string, log: Logger): Promise<void> {
    const now = this.clock().toISOString();
    await this.db.transaction().execute(async (trx) => {
      await updateDelivery(trx, d.id, { state: DeliveryState.held, last_error: reason, lease_owner: null, lease_expires_at: null, updated_at: now });
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
   * A person's retry: dead-lettered or held deliveries of the case start
   * again from what is still missing, with a fresh attempt count.
   */
  async retryCase(caseId: string, actor: string): Promise<{ deliveries: number }> {
    const now = this.clock().toISOString();
    const n = await this.db.transaction().execute(async (trx) => {
      const c = await trx.selectFrom('cases').select(['state']).where('id', '=', caseId).executeTakeFirst();
      if (!c) throw new GatewayError(ErrorCode.notFound, 'no such case');
      const retryable = (await deliveriesOfCases(trx, [caseId])).filter((x) => x.state === DeliveryState.dead || x.state === DeliveryState.held);
      if (retryable.length === 0 && c.state !== CaseState.held) {
        throw new GatewayError(ErrorCode.conflict, `nothing to retry: the case is ${c.state} and no delivery is dead or held`);
      }
      for (const x of retryable) {
        await trx
          .updateTable('delivery_instances')
          .set({ state: DeliveryInstanceState.pending, error: null })
          .where('delivery_id', '=', x.id)
          .where('state', '=', DeliveryInstanceState.failed)
          .execute();
        await updateDelivery(trx, x.id, { state: DeliveryState.pending, attempts: 0, next_attempt_at: now, lease_owner: null, lease_expires_at: null, updated_at: now });
      }
      // A case held before any delivery existed (e.g. unknown destination) goes back to be planned again.
      const to = retryable.length > 0 ? CaseState.forwarding : CaseState.flagged;
      // Only a held case may go back to flagged (failed -> flagged is not a transition: a failed case had deliveries).
      const from = to === CaseState.flagged ? [CaseState.held] : [CaseState.failed, CaseState.held];
      await transitionCase(trx, { caseId, from, to, actor, now, auditId: this.o.newId(), details: { retried: retryable.map((x) => x.id) } });
      return retryable.length;
    });
    this.log.info('case retried', { caseId, actor, deliveries: n });
    this.kick();
    return { deliveries: n };
  }

}
