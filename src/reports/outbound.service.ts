import { backoffMs } from '../backoff.js';
import { PollLoop } from '../poll-loop.js';
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
  claimOutbound,
  hasPoolCancel,
  lockCancelledCase,
  lockWaiting,
  outboundStop,
  poolCancelsDue,
  releaseOutbound,
  sentPseudonyms,
  setWriteBackPayload,
  waitingWriteBacksReady,
} from './outbound.repository.js';

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
  clock?: () => Date;
  random?: () => number;
  fetchTimeoutMs?: number;
}

type Attempt = { kind: 'accepted'; response: string } | { kind: 'rejected'; response: string; text: string } | { kind: 'retry'; text: string };

/**
 * The durable queue of what the gateway sends besides images: the second
 * report to the RIS, and QA notifications. Each row holds the exact bytes,
 * built once, so a retry resends the same MSH-10; rows are sent oldest first,
 * one at a time per channel (one message in flight per connection).
 */
export class OutboundService {
  private readonly db: Db;
  private readonly log: Logger;
  private readonly clock: () => Date;
  private readonly random: () => number;
  private readonly loop: PollLoop;
  private buildWriteBack: WriteBackBuilder | undefined;

  constructor(private readonly o: OutboundServiceOptions) {
    this.db = o.db;
    this.log = o.logger.child({ component: 'outbound' });
    this.clock = o.clock ?? (() => new Date());
    this.random = o.random ?? Math.random;
    this.loop = new PollLoop(
      () => this.tick(),
      o.config.writeBack.pollIntervalSeconds * 1000,
      (err) => this.log.error('outbound pass failed', { error: (err as Error).message }),
    );
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
    m: { kind: OutboundMessageRow['kind']; caseId: string; reportId?: string | null; controlId?: string | null; payload: string; waiting?: boolean; destinationId?: string },
  ): Promise<string> {
    const now = this.clock().toISOString();
    const id = this.o.newId();
    await trx
      .insertInto('outbound_messages')
      .values({
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
      })
      .execute();
    return id;
  }

  /** Announces an event on every configured escalation channel (durably, retried). */
  readonly notify = async (trx: Db, caseId: string, event: string, details: Record<string, unknown>): Promise<void> => {
    const c = await trx.selectFrom('cases').select(['accession_number', 'study_instance_uid', 'priority', 'reader_id']).where('id', '=', caseId).executeTakeFirst();
    const esc = this.o.config.escalation;
    if (esc.webhook) {
      // No patient identifiers: the QA channel gets the case id and what happened; the console shows the rest to whoever may see it.
      const body = { event, caseId, accessionNumber: c?.accession_number ?? null, priority: c?.priority ?? null, readerId: c?.reader_id ?? null, at: this.clock().toISOString(), ...details };
      await this.enqueue(trx, { kind: OutboundKind.webhook, caseId, payload: JSON.stringify(body) });
    }
    if (esc.hl7) {
      const controlId = this.o.newControlId();
      const ts = hl7Time(this.clock());
      const detail = Object.entries(details)
        .map(([k, v]) => `${k}=${String(v)}`)
        .join('; ');
      const text = [
        `MSH|^~\\&|${this.o.config.hl7.sendingApplication}|${this.o.config.hl7.sendingFacility}|QA|QA|${ts}||ORU^R01^ORU_R01|${controlId}|P|2.5.1`,
        `OBR|1||${escapeHl7(c?.accession_number ?? '')}|SECONDREAD^Second read^L|||${ts}`,
        `OBX|1|ST|ESCALATION^Second read escalation^L||${escapeHl7(`${event}: case ${caseId}${detail ? `; ${detail}` : ''}`)}||||||F`,
      ].join('\r') + '\r';
      await this.enqueue(trx, { kind: OutboundKind.qaHl7, caseId, controlId, payload: text });
    }
  };

  start(): void {
    this.loop.start();
  }

  async stop(): Promise<void> {
    await this.loop.stop();
    await this.o.ris.close();
    await this.o.qa?.close();
    for (const p of this.o.pools?.values() ?? []) await p.close();
  }

  kick(): void {
    this.loop.kick();
  }

  /** A person sends a failed write-back again (same bytes, same MSH-10) after the RIS side is fixed. */
  async retryWriteBack(caseId: string, actor: string): Promise<{ messages: number }> {
    const now = this.clock().toISOString();
    const n = await this.db.transaction().execute(async (trx) => {
      const failed = await trx.selectFrom('outbound_messages').select('id').where('case_id', '=', caseId).where('kind', '=', OutboundKind.writeBack).where('state', '=', OutboundState.failed).execute();
      if (failed.length === 0) throw new GatewayError(ErrorCode.conflict, 'no failed write-back for this case');
      // The case first: a cancelled case's failed write-back must not become pending again.
      const moved = await transitionCase(trx, { caseId, from: [CaseState.failed], to: CaseState.reported, actor, now, auditId: this.o.newId(), details: { retriedWriteBacks: failed.length } });
      if (!moved) throw new GatewayError(ErrorCode.conflict, 'the case is not failed: nothing to retry');
      await trx
        .updateTable('outbound_messages')
        .set({ state: OutboundState.pending, attempts: 0, next_attempt_at: now, updated_at: now })
        .where('id', 'in', failed.map((f) => f.id))
        .execute();
      return failed.length;
    });
    this.kick();
    return { messages: n };
  }

  /** Waits for the pass under way (tests). */
  async idle(): Promise<void> {
    while (this.loop.current) await this.loop.current;
  }

  /**
   * One pass: claims every due message that is the oldest still pending of its
   * case and channel (so a later one never overtakes it, on any instance), and
   * sends them, channels side by side, each one message at a time. A settled
   * message lets the next of its case go in the pass that follows at once.
   */
  async tick(): Promise<void> {
    await this.buildWaiting();
    await this.queuePoolCancels();
    const now = this.clock();
    const until = new Date(now.getTime() + this.o.config.forwarding.leaseSeconds * 1000).toISOString();
    const due = await claimOutbound(this.db, this.owner, now.toISOString(), until, 100);
    const byKind = new Map<string, OutboundMessageRow[]>();
    for (const m of due) byKind.set(m.kind, [...(byKind.get(m.kind) ?? []), m]);
    let settled = 0;
    await Promise.all(
      [...byKind.values()].map(async (rows) => {
        for (const m of rows) if (await this.attempt(m)) settled++;
      }),
    );
    if (settled > 0) this.loop.kick();
  }

  private get owner(): string {
    return this.o.config.instanceId;
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
          return 'built';
        }
        // Visible, as when it fails at report time: the report is kept, the write-back says why it cannot go.
        await setWriteBackPayload(trx, m.id, { payload: '', state: OutboundState.failed, lastError: built.problem, now: nowIso });
        await transitionCase(trx, { caseId: m.case_id, from: [CaseState.reported], to: CaseState.failed, actor: 'write-back', now: nowIso, auditId: this.o.newId(), details: { error: built.problem } });
        return 'failed';
      });
      if (outcome) this.log.info(outcome === 'built' ? 'primary report linked: waiting write-back built' : 'waiting write-back cannot be built', { jobId: m.id, caseId: m.case_id });
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

  private async attempt(m: OutboundMessageRow): Promise<boolean> {
    const log = this.log.child({ jobId: m.id, kind: m.kind, caseId: m.case_id, controlId: m.control_id ?? undefined });
    // Read again just before sending: a cancel (or a hold) that committed since the claim wins.
    const stop = await outboundStop(this.db, m.id);
    if (stop) {
      await releaseOutbound(this.db, m.id, this.owner);
      log.info('not sent', { because: stop });
      return false;
    }
    let result: Attempt;
    try {
      result = await this.send(m);
    } catch (err) {
      result = { kind: 'retry', text: (err as Error).message };
    }
    const now = this.clock();
    const nowIso = now.toISOString();
    if (result.kind === 'accepted') {
      await this.db.transaction().execute(async (trx) => {
        await trx.updateTable('outbound_messages').set({ state: OutboundState.accepted, attempts: m.attempts + 1, response: result.response, last_error: null, lease_owner: null, lease_expires_at: null, updated_at: nowIso }).where('id', '=', m.id).execute();
        if (m.kind === OutboundKind.writeBack) {
          await transitionCase(trx, { caseId: m.case_id, from: [CaseState.reported], to: CaseState.writtenBack, actor: 'write-back', now: nowIso, auditId: this.o.newId(), details: { controlId: m.control_id } });
        }
      });
      log.info('sent and acknowledged', { attempts: m.attempts + 1 });
      return true;
    }
    const attempts = m.attempts + 1;
    const give = result.kind === 'rejected' || attempts >= this.o.config.writeBack.maxAttempts;
    await this.db.transaction().execute(async (trx) => {
      if (give) {
        await trx
          .updateTable('outbound_messages')
          .set({ state: OutboundState.failed, attempts, last_error: result.text, response: result.kind === 'rejected' ? result.response : null, lease_owner: null, lease_expires_at: null, updated_at: nowIso })
          .where('id', '=', m.id)
          .where('state', '=', OutboundState.pending)
          .execute();
        if (m.kind === OutboundKind.writeBack) {
          await transitionCase(trx, { caseId: m.case_id, from: [CaseState.reported], to: CaseState.failed, actor: 'write-back', now: nowIso, auditId: this.o.newId(), details: { controlId: m.control_id, error: result.text, attempts } });
        }
      } else {
        const next = new Date(now.getTime() + backoffMs(attempts, this.o.config.writeBack.backoffBaseSeconds, this.o.config.writeBack.backoffMaxSeconds, this.random)).toISOString();
        await trx
          .updateTable('outbound_messages')
          .set({ attempts, last_error: result.text, next_attempt_at: next, lease_owner: null, lease_expires_at: null, updated_at: nowIso })
          .where('id', '=', m.id)
          .where('state', '=', OutboundState.pending)
          .execute();
      }
    });
    if (give) log.warn(result.kind === 'rejected' ? 'refused by the receiver; not retried' : 'gave up after too many attempts', { attempts, error: result.text });
    else log.info('will be retried', { attempts, error: result.text });
    return false;
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
