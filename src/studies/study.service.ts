import type { Db } from '../db/database.js';
import type { InstanceSink, ReceivedInstance, StoreOutcome } from '../dicom/instance-record.js';
import type { Spool } from '../dicom/spool.js';
import { toGatewayError } from '../errors.js';
import { hashId, type Logger } from '../logger.js';
import { findInstance, insertInstance, markStable, oldestReceiving } from './study.repository.js';
import { isUniqueViolation } from '../db/dialect.js';

export interface StudyEvents {
  /** A study (new, or re-opened by a late instance) has gone quiet for the stability period. */
  onStable?(studyInstanceUid: string): void | Promise<void>;
  /** The first instance of a study was committed: pending orders and reports may now link to it. */
  onStudyCreated?(studyInstanceUid: string): void | Promise<void>;
}

export interface StudyServiceOptions {
  db: Db;
  spool: Spool;
  logger: Logger;
  stableAfterSeconds: number;
  clock?: () => Date;
}

/**
 * Ingest and stability. Stability is derived from the database (the last
 * arrival per study), so the one timer here is only a wake-up call: after a
 * restart the first sweep finds whatever went quiet while we were down.
 */
export class StudyService implements InstanceSink {
  private readonly db: Db;
  private readonly spool: Spool;
  private readonly log: Logger;
  private readonly stableAfterMs: number;
  private readonly clock: () => Date;
  private readonly listeners: StudyEvents[] = [];
  private timer: NodeJS.Timeout | undefined;
  private timerDue = Infinity;
  private sweeping: Promise<void> | undefined;
  private running = false;

  constructor(o: StudyServiceOptions) {
    this.db = o.db;
    this.spool = o.spool;
    this.log = o.logger.child({ component: 'studies' });
    this.stableAfterMs = o.stableAfterSeconds * 1000;
    this.clock = o.clock ?? (() => new Date());
  }

  subscribe(listener: StudyEvents): void {
    this.listeners.push(listener);
  }

  async storeInstance(inst: ReceivedInstance): Promise<StoreOutcome> {
    const relativePath = this.spool.relativePathFor(inst.studyInstanceUid, inst.seriesInstanceUid, inst.sopInstanceUid);
    const now = this.clock().toISOString();
    // Set once the file is being moved into place: from then on a failure must take it away again.
    let placing: Promise<void> | undefined;
    let result;
    try {
      result = await this.db.transaction().execute(async (trx) => {
        const r = await insertInstance(trx, { ...inst, filePath: relativePath }, now, () => {
          // Inside the transaction, once the instance is known to be new (a duplicate never overwrites
          // the stored copy). The rename happens now; the data and folder syncs overlap the inserts
          // and are awaited before COMMIT, so a committed row always has its file on disk.
          placing = this.spool.place(inst.tmpPath, relativePath, inst.fd);
          placing.catch(() => undefined); // awaited below or in the catch; never unhandled
        });
        if (placing) await placing;
        return r;
      });
    } catch (err) {
      // The same instance committed meanwhile by another instance sharing the spool and database (PostgreSQL):
      // the file in place is that committed copy (the same bytes), so it stays, and the answer is a duplicate.
      const sameInstanceCommitted = isUniqueViolation(err) && (await findInstance(this.db, inst.sopInstanceUid).catch(() => undefined)) !== undefined;
      if (sameInstanceCommitted) {
        if (placing) await (placing as Promise<void>).catch(() => undefined);
        this.spool.discard(inst.tmpPath);
        return 'duplicate';
      }
      // Let a sync still in flight end before the descriptor is closed and the file removed.
      if (placing) {
        await (placing as Promise<void>).catch(() => undefined);
        this.spool.remove(relativePath);
      }
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
    this.armTimer(Date.parse(now) + this.stableAfterMs);
    return 'stored';
  }

  start(): void {
    this.running = true;
    // Whatever went quiet while we were stopped becomes stable now; the sweep re-arms the timer.
    this.armTimer(0);
  }

  async stop(): Promise<void> {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.timerDue = Infinity;
    await this.sweeping;
  }

  /** Runs one stability sweep now; tests and the timer both come through here. */
  async sweep(): Promise<string[]> {
    const now = this.clock();
    const cutoff = new Date(now.getTime() - this.stableAfterMs).toISOString();
    const changed = await markStable(this.db, cutoff, now.toISOString());
    for (const s of changed) {
      this.log.info('study stable', { studyUid: hashId(s.study_instance_uid), instances: s.instance_count });
      this.emit('onStable', s.study_instance_uid);
    }
    const oldest = await oldestReceiving(this.db);
    if (oldest) this.armTimer(Date.parse(oldest) + this.stableAfterMs);
    return changed.map((s) => s.study_instance_uid);
  }

  private armTimer(dueMs: number): void {
    if (!this.running || dueMs >= this.timerDue) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerDue = dueMs;
    // A little slack so the sweep's cutoff is past the last arrival, not on it.
    const delay = Math.max(0, dueMs - this.clock().getTime() + 5);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.timerDue = Infinity;
      this.sweeping = this.sweep()
        .then(() => undefined)
        .catch((err: unknown) => {
          this.log.error('stability sweep failed; retrying', { error: (err as Error).message });
          this.armTimer(this.clock().getTime() + 1000);
        });
    }, delay);
    this.timer.unref?.();
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
