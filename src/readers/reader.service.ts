import { recordAudit } from '../audit/audit.repository.js';
import { transitionCase } from '../cases/case-state.js';
import type { CaseRow } from '../cases/case.table.js';
import type { GatewayConfig } from '../config/schema.js';
import type { Db } from '../db/database.js';
import { ErrorCode, GatewayError } from '../errors.js';
import type { Logger } from '../logger.js';
import { lockKey } from '../db/dialect.js';
import { findCase, updateCase } from '../cases/case.repository.js';
import { CaseState } from '../states.js';
import { chooseReader, type AssignmentResult, type ReaderLoad } from './assignment.js';
import {
  casesPastDue,
  caseCountsByReader,
  claimBreachedCase,
  endOpenAssignments,
  insertAssignment,
  latestFinalReportRadiologist,
  openArbitrationsByArbitrator,
  readersOfCase,
  seriesModalities,
  setEscalation,
} from './reader.repository.js';

export interface ReaderServiceOptions {
  db: Db;
  logger: Logger;
  config: Pick<GatewayConfig, 'readers' | 'assignment' | 'sla'>;
  newId: () => string;
  /** Announces an unresolved SLA breach (the escalation channels). */
  notify: (db: Db, caseId: string, event: string, details: Record<string, unknown>) => Promise<void>;
  clock?: () => Date;
}

/** The recurring job kind of the SLA watch. */
export const SLA_CHECK_JOB = 'readers.sla-check';

/** States in which a case is on a reader's desk (counts against capacity, can breach its SLA). */
const READING: readonly CaseState[] = [CaseState.forwarding, CaseState.awaitingRead];

/**
 * Reader assignment (strategy `gateway`), declines and reassignment, and the
 * SLA watch. With strategy `pool` the external pool assigns; the gateway
 * then only watches the SLA and escalates.
 */
export class ReaderService {
  private readonly db: Db;
  private readonly log: Logger;
  private readonly clock: () => Date;

  constructor(private readonly o: ReaderServiceOptions) {
    this.db = o.db;
    this.log = o.logger.child({ component: 'readers' });
    this.clock = o.clock ?? (() => new Date());
  }

  get assigns(): boolean {
    return this.o.config.assignment.strategy === 'gateway';
  }

  /** Chooses a reader for the case (inside the caller's transaction) and records the assignment. */
  async assign(trx: Db, c: Pick<CaseRow, 'id' | 'study_instance_uid' | 'reader_group'>, actor: string, reason: string): Promise<AssignmentResult> {
    // Readers' open-case counts are read and then added to: one assignment at a time across instances.
    await lockKey(trx, 'reader-assignment');
    const previous = await readersOfCase(trx, c.id);
    const modalities = (await seriesModalities(trx, c.study_instance_uid)).filter((m): m is string => !!m);
    const firstReaderId = await latestFinalReportRadiologist(trx, c.study_instance_uid);
    const result = chooseReader(await this.loads(trx), {
      modalities,
      subspecialty: c.reader_group,
      firstReaderId,
      avoidSameGroup: this.o.config.assignment.avoidSameGroup,
      exclude: previous,
    });
    if (!result.ok) return result;
    const now = this.clock().toISOString();
    await endOpenAssignments(trx, c.id, now, 'reassigned');
    await insertAssignment(trx, { id: this.o.newId(), caseId: c.id, readerId: result.readerId, assignedBy: actor, reason, assignedAt: now });
    await updateCase(trx, c.id, { reader_id: result.readerId, updated_at: now });
    await recordAudit(trx, this.o.newId(), now, {
      actor,
      action: 'case.assigned',
      entityType: 'case',
      entityId: c.id,
      details: { readerId: result.readerId, reason, why: result.why },
    });
    return result;
  }

  /**
   * Chooses the third reader of an arbitration (inside the caller's transaction; the caller records it):
   * never the first or second reader, nor (assignment.avoidSameGroup) one of their groups; of
   * `readerGroup` when given; reading from the destination the study already went to (the images are
   * not sent again); open arbitrations count against capacity like open cases.
   */
  async chooseArbitrator(
    trx: Db,
    c: Pick<CaseRow, 'study_instance_uid' | 'destination_id'>,
    o: { firstReaderId: string | null; secondReaderId: string; readerGroup: string | null },
  ): Promise<AssignmentResult> {
    await lockKey(trx, 'reader-assignment');
    const modalities = (await seriesModalities(trx, c.study_instance_uid)).filter((m): m is string => !!m && !['SR', 'PR', 'KO'].includes(m));
    const arbitrating = await openArbitrationsByArbitrator(trx);
    const loads = (await this.loads(trx))
      .filter((r) => !r.destination || !c.destination_id || r.destination === c.destination_id)
      .map((r) => ({ ...r, openCases: r.openCases + (arbitrating.get(r.id) ?? 0) }));
    if (loads.length === 0) return { ok: false, reason: `no reader reads from ${c.destination_id}, where the study was sent` };
    return chooseReader(loads, {
      modalities,
      subspecialty: o.readerGroup,
      firstReaderId: o.firstReaderId,
      secondReaderId: o.secondReaderId,
      avoidSameGroup: this.o.config.assignment.avoidSameGroup,
      exclude: [],
    });
  }

  /** The reader's destination, if the reader config names one (the case is then forwarded there). */
  destinationOf(readerId: string): string | undefined {
    return this.o.config.readers.find((r) => r.id === readerId)?.destination;
  }

  /** A reader gives a case back: it goes to someone else, or is held when nobody else fits. */
  async decline(caseId: string, readerId: string, actor: string, why: string): Promise<{ readerId: string | null; held: boolean }> {
    const now = this.clock().toISOString();
    return this.db.transaction().execute(async (trx) => {
      const c = await findCase(trx, caseId);
      if (!c) throw new GatewayError(ErrorCode.notFound, 'no such case');
      if (c.reader_id !== readerId) throw new GatewayError(ErrorCode.forbidden, 'this case is not assigned to you');
      if (!READING.includes(c.state)) throw new GatewayError(ErrorCode.conflict, `a ${c.state} case cannot be declined`);
      await endOpenAssignments(trx, caseId, now, 'declined');
      await recordAudit(trx, this.o.newId(), now, { actor, action: 'case.declined', entityType: 'case', entityId: caseId, details: { readerId, why } });
      const next = await this.assign(trx, c, 'readers', `reassigned after ${readerId} declined`);
      if (next.ok) return { readerId: next.readerId, held: false };
      await updateCase(trx, caseId, { reader_id: null });
      await transitionCase(trx, {
        caseId,
        from: READING,
        to: CaseState.held,
        actor: 'readers',
        now,
        auditId: this.o.newId(),
        details: { reason: `no other reader: ${next.reason}` },
      });
      return { readerId: null, held: true };
    });
  }

  /**
   * A person moves a case to another reader: the one named, or the one the
   * assignment rules choose among the others. The named reader must be
   * configured, not the first reader, and read from the destination the study
   * went to (the images are not sent again).
   */
  async reassign(caseId: string, actor: string, o: { readerId?: string; reason: string }): Promise<{ readerId: string; previousReaderId: string | null }> {
    const now = this.clock().toISOString();
    return this.db.transaction().execute(async (trx) => {
      const c = await findCase(trx, caseId);
      if (!c) throw new GatewayError(ErrorCode.notFound, 'no such case');
      if (!READING.includes(c.state)) throw new GatewayError(ErrorCode.conflict, `a ${c.state} case cannot be reassigned`);
      let readerId: string;
      if (o.readerId) {
        const reader = this.o.config.readers.find((r) => r.id === o.readerId);
        if (!reader) throw new GatewayError(ErrorCode.invalidInput, `unknown reader "${o.readerId}"`);
        if (reader.id === c.reader_id) throw new GatewayError(ErrorCode.conflict, `the case is already assigned to ${reader.id}`);
        const firstReaderId = await latestFinalReportRadiologist(trx, c.study_instance_uid);
        if (firstReaderId === reader.id) throw new GatewayError(ErrorCode.conflict, 'the second reader cannot be the first reader');
        if (reader.destination && c.destination_id && reader.destination !== c.destination_id) {
          throw new GatewayError(ErrorCode.conflict, `${reader.id} reads from ${reader.destination}; the study was sent to ${c.destination_id}`);
        }
        await endOpenAssignments(trx, caseId, now, 'reassigned');
        await insertAssignment(trx, { id: this.o.newId(), caseId, readerId: reader.id, assignedBy: actor, reason: o.reason, assignedAt: now });
        await updateCase(trx, caseId, { reader_id: reader.id, updated_at: now });
        readerId = reader.id;
      } else {
        const next = await this.assign(trx, c, actor, o.reason);
        if (!next.ok) throw new GatewayError(ErrorCode.conflict, `no other reader fits: ${next.reason}`);
        readerId = next.readerId;
      }
      await recordAudit(trx, this.o.newId(), now, {
        actor,
        action: 'case.reassigned',
        entityType: 'case',
        entityId: caseId,
        details: { from: c.reader_id, to: readerId, reason: o.reason },
      });
      return { readerId, previousReaderId: c.reader_id };
    });
  }

  /**
   * Open cases past their due time. First breach: with gateway assignment and
   * another reader available, reassign and give the new reader a full SLA;
   * otherwise (or on a second breach) announce it on the escalation channels.
   * Driven by the rows, so a restart misses nothing; run as a recurring job
   * (SLA_CHECK_JOB, every `sla.checkIntervalSeconds`) by one instance at a time.
   */
  async checkSla(): Promise<{ reassigned: number; notified: number }> {
    const now = this.clock();
    const nowIso = now.toISOString();
    const due = await casesPastDue(this.db, READING, nowIso);
    let reassigned = 0;
    let notified = 0;
    for (const c of due) {
      await this.db.transaction().execute(async (trx) => {
        // The claim: still breached at the level we read, and not being escalated by another instance right now
        // (its row lock; it is skipped, not waited for). A crashed claimer's transaction rolls back, freeing the row.
        if (!(await claimBreachedCase(trx, c.id, READING, nowIso, c.escalation_level))) return;
        const breachedAt = c.sla_breached_at ?? nowIso;
        if (c.escalation_level === 0) {
          await recordAudit(trx, this.o.newId(), nowIso, {
            actor: 'sla',
            action: 'case.sla-breached',
            entityType: 'case',
            entityId: c.id,
            details: { dueAt: c.due_at, readerId: c.reader_id },
          });
        }
        if (c.escalation_level === 0 && this.assigns && c.reader_id) {
          await endOpenAssignments(trx, c.id, nowIso, 'sla-breach');
          const next = await this.assign(trx, c, 'sla', `SLA breached by ${c.reader_id}`);
          if (next.ok) {
            const dueAt = new Date(now.getTime() + c.sla_hours * 3_600_000).toISOString();
            await setEscalation(trx, c.id, { escalationLevel: 1, slaBreachedAt: breachedAt, dueAt, now: nowIso });
            reassigned++;
            return;
          }
        }
        await setEscalation(trx, c.id, { escalationLevel: 2, slaBreachedAt: breachedAt, now: nowIso });
        await this.o.notify(trx, c.id, 'sla-breach', { dueAt: c.due_at, priority: c.priority, readerId: c.reader_id });
        notified++;
      });
    }
    if (reassigned + notified > 0) this.log.warn('SLA breaches escalated', { reassigned, notified });
    return { reassigned, notified };
  }

  private async loads(db: Db): Promise<ReaderLoad[]> {
    const byReader = await caseCountsByReader(db, READING);
    return this.o.config.readers.map((r) => ({ ...r, openCases: byReader.get(r.id) ?? 0 }));
  }
}
