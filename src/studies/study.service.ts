import type { Db } from '../db/database.js';
import type { InstanceSink, ReceivedInstance, ReceivedTransfer, StoreOutcome } from '../dicom/instance-record.js';
import type { Spool } from '../dicom/spool.js';
import { recordAudit } from '../audit/audit.repository.js';
import { createIdSource } from '../db/sortable-id.js';
import { ErrorCode, GatewayError, toGatewayError } from '../errors.js';
import { StudyState } from '../states.js';
import { decideConflict, openConflicts } from './instance-version.repository.js';
import type { StudyRow } from './study.table.js';
import { hashId, type Logger } from '../logger.js';
import { discardCopy, endHold, findInstance, findStudy, insertInstance, type InsertResult } from './study.repository.js';
import { lockForStability, markOneStable, receivingWithoutStabilityJob } from './stability.repository.js';
import type { JobContext, JobOutcome, JobQueue } from '../jobs/job.types.js';
import { isUniqueViolation } from '../db/dialect.js';
import { GroupCommitQueue } from '../db/group-commit.js';
import { decideCompleteness, Verdict } from './completeness.js';
import { completeNow, completenessInputs, hasCompletedMpps, holdIncomplete } from './mpps.repository.js';

/** The job kind that makes one study stable once it has gone quiet (its key is the study UID). */
export const STABILITY_JOB = 'studies.stability';

export interface StabilityJobPayload {
  studyUid: string;
}

/** What stability needs of the job engine: enqueue with the instance that starts an episode, and run what is due (tests). */
export interface StabilityJobs extends JobQueue {
  drain(kinds?: readonly string[]): Promise<void>;
}

export interface StudyEvents {
  /** A study (new, or re-opened by a late instance) has gone quiet for the stability period. */
  onStable?(studyInstanceUid: string): void | Promise<void>;
  /** The first instance of a study was committed: pending orders and reports may now link to it. */
  onStudyCreated?(studyInstanceUid: string): void | Promise<void>;
}

/**
 * Work that must follow a change durably, run inside the transaction that makes
 * the change (the composition root enqueues jobs here): it exists if and only if
 * the change commits. The events above are only notices for observers.
 */
export interface StudyTransactionHooks {
  /** The first instance of a study is being committed. */
  studyCreated?(trx: Db, studyInstanceUid: string): Promise<void>;
  /** The study is being marked stable (quiet period over, or a hold ended on a stable study). */
  stable?(trx: Db, studyInstanceUid: string): Promise<void>;
}

/** One instance waiting for (or in) its group commit. */
interface PendingStore {
  inst: ReceivedInstance;
  firstCopyPath: string;
  /** When it arrived: its received_at. */
  now: string;
  /** Its data was synced before it joined the group. */
  dataSynced: boolean;
  /** Where its file was moved in the group (relative): removed again when the instance is not committed. */
  movedTo?: string;
}

type StoreResult = { ok: true; result: InsertResult } | { ok: false; error: unknown };

const compareStores = (a: PendingStore, b: PendingStore): number =>
  cmp(a.inst.studyInstanceUid, b.inst.studyInstanceUid) ||
  cmp(a.inst.seriesInstanceUid, b.inst.seriesInstanceUid) ||
  cmp(a.inst.sopInstanceUid, b.inst.sopInstanceUid);
const cmp = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

export interface StudyServiceOptions {
  db: Db;
  spool: Spool;
  logger: Logger;
  stableAfterSeconds: number;
  clock?: () => Date;
  hooks?: StudyTransactionHooks;
  /** The engine stability runs on; without it (peers in tests, tools) studies stay `receiving`. */
  jobs?: StabilityJobs;
}

/**
 * Ingest and stability. Stability is a job per study episode (`studies.stability`,
 * key = study UID), enqueued in the transaction that creates or re-opens the
 * study, never per instance: its handler compares the last arrival with the
 * database's clock and either marks the study stable or runs again when the
 * quiet period can have passed. No timer: the rows are the truth across restarts.
 */
export class StudyService implements InstanceSink {
  private readonly db: Db;
  private readonly spool: Spool;
  private readonly log: Logger;
  private readonly stableAfterMs: number;
  private readonly clock: () => Date;
  private readonly listeners: StudyEvents[] = [];
  private readonly newId = createIdSource();
  private readonly hooks: StudyTransactionHooks;
  /** Instances from every association and STOW-RS request share durable commits (see storeInstance). */
  private readonly ingest = new GroupCommitQueue<PendingStore, StoreResult>((batch) => this.commitStores(batch), 64, 0);
  private readonly jobs: StabilityJobs | undefined;
  /** Transfer audits being written: stop() waits for them. */
  private readonly auditing = new Set<Promise<void>>();

  constructor(o: StudyServiceOptions) {
    this.hooks = o.hooks ?? {};
    this.jobs = o.jobs;
    this.db = o.db;
    this.spool = o.spool;
    this.log = o.logger.child({ component: 'studies' });
    this.stableAfterMs = o.stableAfterSeconds * 1000;
    this.clock = o.clock ?? (() => new Date());
  }

  subscribe(listener: StudyEvents): void {
    this.listeners.push(listener);
  }

  /** Group-commit figures for ingest: how many instances shared each durable commit. */
  get ingestStats(): Readonly<{ batches: number; items: number; largestBatch: number; depth: number }> {
    return { ...this.ingest.stats, depth: this.ingest.depth };
  }

  /**
   * Stores one received instance: resolves only once its file's data and folder
   * entry are synced and its row committed. Instances arriving on several
   * associations (or STOW-RS requests) at once share one transaction and one
   * commit (group commit, db/group-commit.ts); each keeps its own savepoint, so
   * one that fails fails alone, and a group whose commit fails fails every
   * instance in it (none is acknowledged).
   */
  async storeInstance(inst: ReceivedInstance): Promise<StoreOutcome> {
    const item: PendingStore = {
      inst,
      firstCopyPath: this.spool.relativePathFor(inst.studyInstanceUid, inst.seriesInstanceUid, inst.sopInstanceUid),
      now: this.clock().toISOString(),
      dataSynced: false,
    };
    let result: InsertResult;
    try {
      // Others are committing: this file's data is synced now, in the thread pool, while their group commits, so
      // the group it joins waits for no data sync. Alone, the sync runs after the rename, beside the folder's.
      if (!this.ingest.idle) {
        await this.spool.syncData(inst.tmpPath, inst.fd);
        item.dataSynced = true;
      }
      const r = await this.ingest.submit(item);
      if (!r.ok) throw r.error;
      result = r.result;
    } catch (err) {
      // The same instance committed meanwhile by another instance sharing the spool and database (PostgreSQL):
      // the file in place is that committed copy (the same bytes), so it stays, and the answer is a duplicate.
      const sameInstanceCommitted = isUniqueViolation(err) && (await findInstance(this.db, inst.sopInstanceUid).catch(() => undefined))?.sha256 === inst.sha256;
      if (sameInstanceCommitted) {
        this.spool.discard(inst.tmpPath);
        return 'duplicate';
      }
      // Not committed: the copy moved into place for it goes again (the group waited for its syncs to end).
      if (item.movedTo) this.spool.remove(item.movedTo);
      this.spool.discard(inst.tmpPath);
      const ge = toGatewayError(err);
      this.log.error('instance not stored', { studyUid: hashId(inst.studyInstanceUid), code: ge.code, error: (err as Error).message });
      throw ge;
    }
    if (result.outcome === 'duplicate') {
      this.spool.discard(inst.tmpPath);
      this.log.debug('duplicate instance ignored', { studyUid: hashId(inst.studyInstanceUid), sopUid: hashId(inst.sopInstanceUid) });
      return 'duplicate';
    }
    if (result.studyCreated) {
      this.log.info('study receiving', { studyUid: hashId(inst.studyInstanceUid), callingAe: inst.callingAe });
      this.emit('onStudyCreated', inst.studyInstanceUid);
    } else if (result.reopened) {
      this.log.info('study re-opened by a late instance', { studyUid: hashId(inst.studyInstanceUid), callingAe: inst.callingAe });
    }
    if (result.version > 1) {
      this.log.info('instance re-sent with other content: new current version', {
        studyUid: hashId(inst.studyInstanceUid),
        sopUid: hashId(inst.sopInstanceUid),
        version: result.version,
      });
    }
    for (const h of result.held) {
      // attribute names only: their values are PHI
      this.log.warn('study held', { studyUid: hashId(h.studyInstanceUid), reason: h.reason, attributes: h.attributes.join(',') });
    }
    for (const x of result.rejected) {
      this.log.info('instances rejected by an IOCM note', { studyUid: hashId(x.studyInstanceUid), code: x.code, instances: x.sopInstanceUids.length });
    }
    this.checkCompletenessSoon(inst.studyInstanceUid);
    return 'stored';
  }

  /**
   * One group: one transaction, a savepoint per instance (in study, series, SOP
   * order, so that on PostgreSQL two instances' groups take their locks in the
   * same order), each file moved into place as its row is decided, then the
   * data syncs still owed and one fsync per folder touched, then COMMIT.
   * An instance that fails rolls back to its savepoint and fails alone; a
   * failure outside the savepoints (a sync, COMMIT) fails the whole group.
   */
  private async commitStores(batch: PendingStore[]): Promise<StoreResult[]> {
    const order = batch.map((_, i) => i).sort((a, b) => compareStores(batch[a]!, batch[b]!));
    const results: StoreResult[] = [];
    const syncs: Promise<void>[] = [];
    const folders: string[] = [];
    const trx = await this.db.startTransaction().execute();
    try {
      for (const i of order) {
        const item = batch[i]!;
        const onNew = (filePath: string): void => {
          // Once the copy is known to be kept (the same bytes again never overwrite the stored copy; other bytes
          // go to a new file, the older copy stays).
          const dirs = this.spool.moveIntoPlace(item.inst.tmpPath, filePath);
          item.movedTo = filePath;
          const started: Promise<void>[] = [];
          if (!item.dataSynced) started.push(this.spool.syncData(this.spool.absolute(filePath), item.inst.fd));
          // Alone, the folder's sync starts now, beside the data's (one journal commit for both), and overlaps the
          // inserts; in a group, after every rename, once per folder.
          if (batch.length === 1) started.push(this.spool.syncFolders(dirs));
          else folders.push(...dirs);
          for (const s of started) {
            s.catch(() => undefined); // awaited below; never unhandled
            syncs.push(s);
          }
        };
        if (batch.length === 1) {
          results[i] = { ok: true, result: await this.applyStore(trx, item, onNew) };
          continue;
        }
        const sp = await trx.savepoint('instance').execute();
        try {
          results[i] = { ok: true, result: await this.applyStore(sp, item, onNew) };
          await sp.releaseSavepoint('instance').execute();
        } catch (err) {
          await sp.rollbackToSavepoint('instance').execute();
          await sp.releaseSavepoint('instance').execute();
          results[i] = { ok: false, error: err };
        }
      }
      // A committed row always has its file's data and folder entry on disk.
      await Promise.all([...syncs, this.spool.syncFolders(folders)]);
      await trx.commit().execute();
    } catch (err) {
      await trx
        .rollback()
        .execute()
        .catch(() => undefined);
      // The callers close the descriptors and remove the files once this settles: let every sync end first.
      await Promise.allSettled(syncs);
      throw err;
    }
    return results;
  }

  /** One instance inside its group's transaction: rows, audit and follow-up work. */
  private async applyStore(trx: Db, item: PendingStore, onNew: (filePath: string) => void): Promise<InsertResult> {
    const { inst, now } = item;
    const r = await insertInstance(trx, { ...inst, filePath: item.firstCopyPath }, now, onNew);
    for (const h of r.held) {
      await recordAudit(trx, this.newId(), now, {
        actor: `dicom:${inst.callingAe}`,
        action: 'study.held',
        entityType: 'study',
        entityId: h.studyInstanceUid,
        details: { reason: h.reason, attributes: h.attributes, sopInstanceUid: inst.sopInstanceUid, version: r.version },
      });
    }
    for (const x of r.rejected) {
      // Instances withdrawn by an IOCM note re-open their study (held ones stay held): a new stability episode.
      await this.enqueueStability(trx, x.studyInstanceUid, Date.parse(now) + this.stableAfterMs);
      await recordAudit(trx, this.newId(), now, {
        actor: `dicom:${inst.callingAe}`,
        action: 'study.instances-rejected',
        entityType: 'study',
        entityId: x.studyInstanceUid,
        details: { code: x.code, sopInstanceUids: x.sopInstanceUids, rejectionNote: inst.sopInstanceUid },
      });
    }
    if (r.studyCreated) await this.hooks.studyCreated?.(trx, inst.studyInstanceUid);
    // Once per episode (a new study, or a late instance re-opening a stable one), never per instance.
    if (r.studyCreated || r.reopened) await this.enqueueStability(trx, inst.studyInstanceUid, Date.parse(now) + this.stableAfterMs);
    return r;
  }

  /**
   * `study.received` (ATNA DICOM Instances Transferred): one audit event per
   * study per association or STOW-RS request, all in one transaction once the
   * transfer ended, so ingest pays nothing per instance for it. A crash between
   * the last acknowledgement and this write loses that event (the instances
   * themselves are committed and their study's events follow).
   */
  transferEnded(t: ReceivedTransfer): Promise<void> {
    const now = this.clock().toISOString();
    const actor = t.protocol === 'dimse' ? `dicom:${t.sender}` : t.sender;
    const p = this.db
      .transaction()
      .execute(async (trx) => {
        for (const [uid, n] of t.studies) {
          await recordAudit(trx, this.newId(), now, {
            actor,
            action: 'study.received',
            entityType: 'study',
            entityId: uid,
            details: { protocol: t.protocol, sender: t.sender, remoteAddress: t.remoteAddress, stored: n.stored, duplicates: n.duplicates },
          });
        }
      })
      .finally(() => this.auditing.delete(p));
    this.auditing.add(p);
    return p;
  }

  /**
   * MPPS completeness (completeness.ts): a study whose COMPLETED step's instances are all here becomes stable
   * now instead of after the quiet period, and one held `incomplete` is released by its last missing
   * instance. Called after each stored instance and when a step ends; costs one indexed read without MPPS.
   */
  async checkCompleteness(studyInstanceUid: string): Promise<boolean> {
    if (!(await hasCompletedMpps(this.db, studyInstanceUid))) return false;
    const now = this.clock().toISOString();
    const changed = await this.db.transaction().execute(async (trx) => {
      const { steps, arrived } = await completenessInputs(trx, studyInstanceUid);
      const c = decideCompleteness(steps, arrived, false);
      if (c.verdict !== Verdict.complete) return undefined;
      // A hold for something else besides (an identity conflict recorded under the same hold) is QA's to end.
      if ((await openConflicts(trx, studyInstanceUid)).length > 0) return undefined;
      const from = await completeNow(trx, studyInstanceUid, now);
      if (from) {
        // Marked stable and its evaluation job committed together, as the quiet-period sweep does.
        await this.hooks.stable?.(trx, studyInstanceUid);
        await recordAudit(trx, this.newId(), now, {
          actor: 'mpps',
          action: 'study.complete',
          entityType: 'study',
          entityId: studyInstanceUid,
          details: { from, referenced: c.referenced, arrived: c.arrived },
        });
      }
      return from;
    });
    if (!changed) return false;
    this.log.info('study complete (MPPS)', { studyUid: hashId(studyInstanceUid), from: changed });
    this.emit('onStable', studyInstanceUid);
    return true;
  }

  private checkCompletenessSoon(studyInstanceUid: string): void {
    this.checkCompleteness(studyInstanceUid).catch((err: unknown) =>
      this.log.error('completeness check failed', { studyUid: hashId(studyInstanceUid), error: (err as Error).message }),
    );
  }

  /**
   * QA checked a held study and lets it go on: open identity conflicts are accepted as they are (the newest
   * copies stay current), the study returns to the state the hold interrupted and the rules run again
   * (at once when it was stable, after the quiet period when it was receiving). Audited.
   */
  async release(studyInstanceUid: string, actor: string, reason: string): Promise<StudyRow> {
    return this.decide(studyInstanceUid, actor, reason, 'released');
  }

  /**
   * QA refuses what caused the hold: every open conflicting copy is discarded (kept on disk and in the
   * versions, no longer current), the copy before it becomes current again, or a first arrival leaves the
   * study; then the study goes on as before the conflict. Audited.
   */
  async reject(studyInstanceUid: string, actor: string, reason: string): Promise<StudyRow> {
    return this.decide(studyInstanceUid, actor, reason, 'rejected');
  }

  private async decide(studyInstanceUid: string, actor: string, reason: string, decision: 'released' | 'rejected'): Promise<StudyRow> {
    const now = this.clock().toISOString();
    const out = await this.db.transaction().execute(async (trx) => {
      const s = await findStudy(trx, studyInstanceUid);
      if (!s) throw new GatewayError(ErrorCode.notFound, 'no such study');
      if (s.state !== StudyState.held) throw new GatewayError(ErrorCode.conflict, `the study is ${s.state}, not held`);
      const conflicts = await openConflicts(trx, studyInstanceUid);
      const others = new Set<string>();
      for (const v of conflicts) {
        if (decision === 'rejected') await discardCopy(trx, v, now);
        else await decideConflict(trx, v.sop_instance_uid, v.version, 'released');
        if (v.study_instance_uid !== studyInstanceUid) others.add(v.study_instance_uid);
      }
      const to = await endHold(trx, studyInstanceUid, now);
      if (to === StudyState.stable) await this.hooks.stable?.(trx, studyInstanceUid);
      // Back to receiving: a new episode, its quiet period counted from the last arrival.
      else if (to === StudyState.receiving) await this.enqueueStability(trx, studyInstanceUid, Date.parse(now));
      await recordAudit(trx, this.newId(), now, {
        actor,
        action: decision === 'released' ? 'study.released' : 'study.rejected',
        entityType: 'study',
        entityId: studyInstanceUid,
        details: {
          reason,
          holdReason: s.hold_reason,
          holdDetail: s.hold_detail,
          versions: conflicts.map((v) => ({ sopInstanceUid: v.sop_instance_uid, version: v.version })),
          to,
        },
      });
      // The other side of a move (an instance that went to or came from another study) is decided with it.
      const alsoEnded: string[] = [];
      for (const other of others) {
        const otherTo = (await openConflicts(trx, other)).length === 0 ? await endHold(trx, other, now) : undefined;
        if (otherTo) {
          if (otherTo === StudyState.stable) await this.hooks.stable?.(trx, other);
          else if (otherTo === StudyState.receiving) await this.enqueueStability(trx, other, Date.parse(now));
          alsoEnded.push(other);
          await recordAudit(trx, this.newId(), now, {
            actor,
            action: decision === 'released' ? 'study.released' : 'study.rejected',
            entityType: 'study',
            entityId: other,
            details: { reason, with: studyInstanceUid },
          });
        }
      }
      return { to, alsoEnded, row: (await findStudy(trx, studyInstanceUid))! };
    });
    this.log.info(`study ${decision}`, { studyUid: hashId(studyInstanceUid), to: out.to });
    for (const uid of [studyInstanceUid, ...out.alsoEnded]) {
      const row = uid === studyInstanceUid ? out.row : await findStudy(this.db, uid);
      // Stable again: the rules run now (enqueued with the change above); observers hear it as a study going quiet.
      if (row?.state === StudyState.stable) this.emit('onStable', uid);
    }
    return out.row;
  }

  /** Registers the stability handler with the engine. */
  register(): void {
    this.jobs?.register<StabilityJobPayload>(STABILITY_JOB, (job) => this.stabilityStep(job), {
      concurrency: 2,
      maxAttempts: 100,
      backoffBaseSeconds: 1,
      backoffMaxSeconds: 60,
    });
  }

  /**
   * Studies still receiving without a stability job (written before stability
   * was a job, or by a process without one) get one: one query, at start.
   */
  async start(): Promise<void> {
    if (!this.jobs) return;
    const rows = await receivingWithoutStabilityJob(this.db, STABILITY_JOB);
    if (rows.length === 0) return;
    await this.db.transaction().execute(async (trx) => {
      for (const r of rows) await this.enqueueStability(trx, r.study_instance_uid, Date.parse(r.last_received_at) + this.stableAfterMs);
    });
    this.log.info('stability jobs enqueued for studies received before', { studies: rows.length });
  }

  async stop(): Promise<void> {
    await Promise.allSettled([...this.auditing]);
  }

  /** Runs the stability jobs that are due now, on this process (tests, tools): what has gone quiet becomes stable. */
  async settle(): Promise<void> {
    await this.jobs?.drain([STABILITY_JOB]);
  }

  private async enqueueStability(trx: Db, studyInstanceUid: string, dueMs: number): Promise<void> {
    await this.jobs?.enqueue(trx, STABILITY_JOB, { studyUid: studyInstanceUid } satisfies StabilityJobPayload, {
      key: studyInstanceUid,
      runAt: new Date(dueMs),
      maxAttempts: 100,
    });
  }

  /**
   * The `studies.stability` handler, under the study's row lock, against the
   * database's clock: not quiet yet, it runs again when the last arrival is
   * `stableAfterSeconds` old; quiet, a study a COMPLETED MPPS step lists missing
   * instances for is held `incomplete`, any other is marked stable with its
   * follow-up work (hooks.stable: the rules, forwarding's planning) in the same
   * transaction. The job completes in that transaction (its row, and with it its
   * key, go), so a late instance committed right after it starts a new episode
   * with a new job.
   */
  async stabilityStep(job: JobContext<StabilityJobPayload>): Promise<JobOutcome> {
    const uid = job.payload.studyUid;
    const now = this.clock().toISOString();
    const r = await job.fenced(async (trx): Promise<{ again?: Date; done?: 'not-receiving' | 'held' | 'stable'; instances?: number }> => {
      const s = await lockForStability(trx, uid);
      if (!s || s.state !== StudyState.receiving) {
        await job.completeIn(trx);
        return { done: 'not-receiving' };
      }
      const dueMs = Date.parse(s.last_received_at) + this.stableAfterMs;
      if (dueMs > Date.parse(s.db_now)) return { again: new Date(dueMs) };
      if (await hasCompletedMpps(trx, uid)) {
        const { steps, arrived } = await completenessInputs(trx, uid);
        const c = decideCompleteness(steps, arrived, true);
        if (c.verdict === Verdict.incomplete) {
          const detail = `${c.missing.length} of ${c.referenced} instances listed by the modality's MPPS (COMPLETED) have not arrived`;
          const held = await holdIncomplete(trx, uid, detail, now);
          if (held) {
            await recordAudit(trx, this.newId(), now, {
              actor: 'studies',
              action: 'study.held',
              entityType: 'study',
              entityId: uid,
              details: { reason: 'incomplete', referenced: c.referenced, arrived: c.arrived },
            });
          }
          await job.completeIn(trx);
          return { done: held ? 'held' : 'not-receiving' };
        }
      }
      // Marked stable and its follow-up work committed together: a crash cannot separate them.
      const marked = await markOneStable(trx, uid, now);
      if (marked) await this.hooks.stable?.(trx, uid);
      await job.completeIn(trx);
      return { done: marked ? 'stable' : 'not-receiving', instances: s.instance_count };
    });
    if (r.again) return { runAgainAt: r.again };
    if (r.done === 'held') this.log.warn('study held', { studyUid: hashId(uid), reason: 'incomplete' });
    if (r.done === 'stable') {
      this.log.info('study stable', { studyUid: hashId(uid), instances: r.instances });
      this.emit('onStable', uid);
    }
    return undefined;
  }

  private emit(event: keyof StudyEvents, studyInstanceUid: string): void {
    for (const l of this.listeners) {
      const fn = l[event];
      if (!fn) continue;
      // A listener's failure is its own: it never undoes or delays the ingest that was acknowledged.
      Promise.resolve()
        .then(() => fn.call(l, studyInstanceUid))
        .catch((err: unknown) => this.log.error(`${event} listener failed`, { studyUid: hashId(studyInstanceUid), error: (err as Error).message }));
    }
  }
}
