import type { Insertable } from 'kysely';
import type { GatewayConfig } from '../config/schema.js';
import type { Db } from '../db/database.js';
import { beginSavepoint, releaseSavepoint, rollbackToSavepoint } from '../db/savepoint.js';
import { ErrorCode, GatewayError, hl7AckCodeFor, toGatewayError } from '../errors.js';
import type { GuardMetrics } from '../metrics.js';
import { hashId, phiFields, type Logger } from '../logger.js';
import {
  decideLink,
  linkColumns,
  linkPendingForStudy,
  reconsiderHeldForPatient,
  identityMatch,
  patientKeys,
  refreshMessageStatus,
  type PatientKey,
  WRONG_PATIENT_RESULT,
  type LinkDecision,
} from '../studies/reconcile.js';
import { studiesWithPendingItems } from '../studies/reconcile.repository.js';
import { buildAck, createControlIdSource, type AckCode, type AckError } from './ack.js';
import { GroupCommitQueue } from '../db/group-commit.js';
import { charsetFor, defaultCharset, peekMsh18, supportedCharsets, type Hl7Charset } from './charset.js';
import { Hl7Message } from './hl7-message.js';
import {
  Hl7ErrorCode,
  hl7Reject,
  readHeader,
  scrapeHeader,
  toInboundEvent,
  type InboundEvent,
  type InboundKind,
  type LinkKeys,
  type MessageHeader,
  type OrderItem,
  type PatientRef,
  type SecondReportItem,
} from './hl7-parse.js';
import {
  applyPatientMerge,
  casesOfStudy,
  finalReportStudyOfOrder,
  findAcceptedMessage,
  liveOrdersOfStudy,
  findOrderToUpdate,
  insertMessageUnlessDuplicate,
  setMessageAckCode,
  setMessageStatus,
  insertAiResults,
  linkedStudiesOfMessages,
  insertMessage,
  insertOrder,
  insertPatientMerge,
  insertReportVersion,
  json,
  personName,
  updateOrder,
} from './hl7.repository.js';
import { CaseState, LinkState, MessageStatus } from '../states.js';
import { canTransition, transitionCase } from '../cases/case-state.js';
import { recordAudit } from '../audit/audit.repository.js';
import type { AiResultTable, OrderRow } from './hl7.table.js';
import type { MllpFailure, MllpMeta } from './mllp-server.js';
import { createIdSource } from '../db/sortable-id.js';
import { storableText } from '../db/dialect.js';

/** The job kind that links pending HL7 items to a study that just arrived (enqueued with its first instance). */
export const RECONCILE_STUDY_JOB = 'hl7.reconcile-study';

export interface InboundEvents {
  /** Committed: these studies gained an order, report version or AI result (rules may re-evaluate). */
  onLinked?(studyInstanceUid: string): void | Promise<void>;
}

export interface Hl7InboundServiceOptions {
  db: Db;
  config: GatewayConfig['hl7'];
  logger: Logger;
  clock?: () => Date;
  /** Most messages committed in one transaction. */
  maxBatch?: number;
  /**
   * False when the storage volume is below its free-space watermark (Spool.hasRoom): the message is
   * then not stored at all and answered AE, so the sender keeps it and resends later.
   */
  hasRoom?: () => boolean;
  guards?: GuardMetrics;
  /**
   * Run inside the transaction that links an order, report version or AI
   * result to a study (the composition root enqueues the rules' evaluation
   * here): the follow-up exists if and only if the link commits.
   */
  linked?(trx: Db, studyInstanceUid: string): Promise<void>;
  /**
   * Second reports from the reader pool's system (ORU^R01 whose MSH-3 is a
   * destination's `hl7Sender`): applied inside the message's own transaction,
   * so the AA means the report is stored.
   */
  secondReports?: {
    poolSenders: readonly string[];
    /** Applies the report, or answers why it is held (stored, not applied, answered AR so the pool sees it was not taken). */
    apply(
      db: Db,
      item: SecondReportItem,
      from: { senderApplication: string; patient: PatientRef },
    ): Promise<{ studyUid: string } | { held: string; hl7Code: string }>;
  };
}

type Prepared =
  { kind: 'event'; header: MessageHeader; event: InboundEvent } | { kind: 'reject'; header: MessageHeader; messageKind: InboundKind; error: AckError };

interface Work {
  raw: string;
  prepared: Prepared;
  remoteAddress: string;
}

interface Outcome {
  ack: AckCode;
  status: MessageStatus | null;
  error?: AckError;
  studyUid: string | null;
  linkedStudies: string[];
}

/**
 * HL7 inbound: parse, store the raw message and everything it carries in one
 * transaction, link to studies, and only then build the ACK. Messages from
 * all connections go through one group-commit queue; each connection still
 * waits for its own ACK before its next frame is read (MllpServer).
 */
export class Hl7InboundService {
  private readonly db: Db;
  private readonly config: GatewayConfig['hl7'];
  private readonly log: Logger;
  private readonly clock: () => Date;
  private readonly newId = createIdSource();
  private readonly newAckId = createControlIdSource();
  private readonly queue: GroupCommitQueue<Work, Outcome>;
  private readonly listeners: InboundEvents[] = [];
  private pendingLogs: { level: 'info' | 'warn'; fields: Record<string, unknown> }[] = [];
  private readonly secondReports: Hl7InboundServiceOptions['secondReports'];
  private readonly hasRoom: (() => boolean) | undefined;
  private readonly guards: GuardMetrics | undefined;
  private readonly linkedHook: Hl7InboundServiceOptions['linked'];

  constructor(o: Hl7InboundServiceOptions) {
    this.linkedHook = o.linked;
    this.db = o.db;
    this.config = o.config;
    this.log = o.logger.child({ component: 'hl7-in' });
    this.clock = o.clock ?? (() => new Date());
    this.queue = new GroupCommitQueue((batch) => this.commitBatch(batch), o.maxBatch ?? 64);
    this.secondReports = o.secondReports;
    this.hasRoom = o.hasRoom;
    this.guards = o.guards;
  }

  /** Group-commit figures: how many messages shared each durable commit. */
  get commitStats(): Readonly<{ batches: number; items: number; largestBatch: number; depth: number }> {
    return { ...this.queue.stats, depth: this.queue.depth };
  }

  subscribe(listener: InboundEvents): void {
    this.listeners.push(listener);
  }

  /**
   * The MLLP handler: resolves to the ACK, never rejects. A message that names
   * its character set (MSH-18) is decoded from the frame's bytes in that set and
   * answered in it; without MSH-18 the frame is read as UTF-8 (Latin-1 when it is not valid UTF-8).
   */
  readonly handle = async (received: string, meta: MllpMeta): Promise<string | Buffer> => {
    const { raw, charset, problem } = decodeFrame(received, meta.bytes);
    const prepared = this.prepare(raw, charset, problem);
    let outcome: Outcome;
    if (!this.roomToStore()) {
      this.guards?.rejected('storage.minFreeMb');
      outcome = this.failed(new GatewayError(ErrorCode.outOfResources, 'storage below its free-space watermark'));
    } else {
      try {
        outcome = await this.queue.submit({ raw, prepared, remoteAddress: meta.remoteAddress });
      } catch (err) {
        outcome = this.failed(err);
      }
    }
    const header = prepared.header;
    const ackText = buildAck(problem ? { ...header, charset: null } : header, {
      sendingApplication: this.config.sendingApplication,
      sendingFacility: this.config.sendingFacility,
      code: outcome.ack,
      error: outcome.error,
      controlId: this.newAckId(),
      now: this.clock(),
    });
    const ack = charset === defaultCharset ? ackText : charset.encode(ackText);
    // Fields, not a child logger per message (winston builds a new logger object for each child).
    const fields = {
      controlId: header.controlId ?? '-',
      type: header.typeLabel,
      ack: outcome.ack,
      status: outcome.status ?? 'not-stored',
      studyUid: hashId(outcome.studyUid),
      remoteAddress: meta.remoteAddress,
    };
    this.logLater(outcome.ack === 'AA' ? 'info' : 'warn', outcome.ack === 'AA' ? fields : { ...fields, error: outcome.error?.text });
    if (prepared.kind === 'event' && 'patient' in prepared.event && this.log.isDebugEnabled()) {
      // Linking problems come down to which identifiers a message carried; written only with log.phi on (logger.ts).
      const items = prepared.event.items as readonly LinkKeys[];
      this.log.debug('message identifiers', {
        controlId: fields.controlId,
        ...phiFields({
          patientId: prepared.event.patient.id,
          accessionNumbers: items.map((i) => i.accessionNumber),
          studyInstanceUids: items.map((i) => i.studyInstanceUid),
        }),
      });
    }
    return ack;
  };

  /** A volume we cannot even measure counts as full: AE (resend later) is safe, a half-written store is not. */
  private roomToStore(): boolean {
    if (!this.hasRoom) return true;
    try {
      return this.hasRoom();
    } catch {
      return false;
    }
  }

  /**
   * The per-message log line is written on the next turn, after the ACK has
   * gone out: the sender does not wait for our log I/O, and after a group
   * commit every connection's ACK leaves before the batch's log lines.
   */
  private logLater(level: 'info' | 'warn', fields: Record<string, unknown>): void {
    this.pendingLogs.push({ level, fields });
    if (this.pendingLogs.length === 1) setImmediate(this.flushLogs);
  }

  private readonly flushLogs = (): void => {
    const lines = this.pendingLogs;
    this.pendingLogs = [];
    for (const l of lines) this.log[l.level]('message', l.fields);
  };

  /** The reply for frames the handler never saw (MllpServer): AR for too large, AE if the handler itself failed. */
  readonly failureReply = async (f: MllpFailure): Promise<string> => {
    // Answered in UTF-8 (the frame was never decoded in its own set), so the ACK names no MSH-18.
    const header = { ...scrapeHeader(f.kind === 'too-large' ? f.head : f.message), charset: null };
    let outcome: Outcome;
    if (f.kind === 'too-large') {
      const error = { hl7Code: Hl7ErrorCode.applicationInternalError, text: `message larger than hl7.maxMessageBytes (${f.limit} bytes)` };
      const prepared: Prepared = { kind: 'reject', header, messageKind: 'malformed', error };
      // Stored (head only: the rest was never kept) so an oversized message is visible, not silently dropped.
      const raw = `${f.head}\r[truncated: over ${f.limit} bytes]`;
      try {
        outcome = await this.queue.submit({ raw, prepared, remoteAddress: '-' });
      } catch (err) {
        outcome = this.failed(err);
      }
    } else {
      outcome = this.failed(f.error);
    }
    this.log.warn('message', { controlId: header.controlId ?? '-', type: header.typeLabel, ack: outcome.ack, error: outcome.error?.text });
    return buildAck(header, {
      sendingApplication: this.config.sendingApplication,
      sendingFacility: this.config.sendingFacility,
      code: outcome.ack,
      error: outcome.error,
      controlId: this.newAckId(),
      now: this.clock(),
    });
  };

  /** StudyService onStudyCreated: pending orders, reports and AI results naming this study link now (or are held). */
  async reconcileStudy(studyInstanceUid: string): Promise<void> {
    const now = this.clock().toISOString();
    const r = await this.db.transaction().execute(async (trx) => {
      const res = await linkPendingForStudy(trx, studyInstanceUid, now);
      await refreshMessageStatus(trx, res.messageIds, now);
      if (res.linked > 0) await this.linkedHook?.(trx, studyInstanceUid);
      return res;
    });
    if (r.linked + r.held > 0) {
      this.log.info('pending items reconciled with a new study', { studyUid: hashId(studyInstanceUid), linked: r.linked, held: r.held });
    }
    if (r.linked > 0) this.emitLinked([studyInstanceUid]);
  }

  /** Start-up: studies that arrived while a reconciliation was missed or failed. */
  async reconcileAll(): Promise<number> {
    const uids = await studiesWithPendingItems(this.db);
    for (const uid of uids) await this.reconcileStudy(uid);
    return uids.length;
  }

  private prepare(raw: string, charset: Hl7Charset = defaultCharset, charsetProblem?: string): Prepared {
    let header: MessageHeader | undefined;
    try {
      const m = Hl7Message.parse(raw, charset === defaultCharset ? undefined : charset.decode);
      header = readHeader(m);
      if (charsetProblem) throw hl7Reject('unsupported', Hl7ErrorCode.tableValueNotFound, charsetProblem);
      const event = toInboundEvent(m, header, { mapping: this.config.mapping, aiSenders: this.config.aiSenders, poolSenders: this.secondReports?.poolSenders });
      return { kind: 'event', header, event };
    } catch (err) {
      const ge = toGatewayError(err);
      const messageKind: InboundKind = ge.code === ErrorCode.unsupported ? 'unsupported' : 'malformed';
      const hl7Code =
        (ge.details as { hl7Code?: string } | undefined)?.hl7Code ??
        (ge.code === ErrorCode.internal ? Hl7ErrorCode.applicationInternalError : Hl7ErrorCode.dataTypeError);
      if (ge.code === ErrorCode.internal) this.log.error('parser failed', { error: (err as Error)?.message });
      // A parser bug is ours, not the sender's: it is still stored and answered AR so it is reviewed, not retried forever.
      return {
        kind: 'reject',
        header: header ?? scrapeHeader(raw),
        messageKind,
        error: { hl7Code, text: ge.code === ErrorCode.internal ? 'message could not be processed' : ge.message },
      };
    }
  }

  private failed(err: unknown): Outcome {
    const ge = toGatewayError(err);
    if (ge.code === ErrorCode.internal) this.log.error('message not stored', { error: (err as Error)?.message });
    const ack = hl7AckCodeFor(ge);
    return {
      ack,
      status: null,
      error: {
        hl7Code: ge.code === ErrorCode.transient ? '206' : Hl7ErrorCode.applicationInternalError,
        text: ack === 'AE' ? `not stored, please resend: ${ge.message}` : ge.message,
      },
      studyUid: null,
      linkedStudies: [],
    };
  }

  /**
   * One transaction for the batch, one savepoint per message: a message that
   * fails rolls back alone and is answered AE; the others commit. Nothing is
   * answered before COMMIT returns.
   */
  private async commitBatch(batch: Work[]): Promise<Outcome[]> {
    const now = this.clock().toISOString();
    const trx = await this.db.startTransaction().execute();
    const outcomes: Outcome[] = [];
    try {
      for (let i = 0; i < batch.length; i++) {
        const w = batch[i]!;
        const sp = batch.length > 1 ? `m${i}` : undefined;
        if (sp) await beginSavepoint(trx, sp);
        try {
          const outcome = await this.applyOne(trx, w, now);
          // In the message's savepoint: its follow-up work rolls back with it.
          for (const uid of new Set(outcome.linkedStudies)) await this.linkedHook?.(trx, uid);
          outcomes.push(outcome);
          if (sp) await releaseSavepoint(trx, sp);
        } catch (err) {
          if (!sp) throw err;
          await rollbackToSavepoint(trx, sp);
          await releaseSavepoint(trx, sp);
          outcomes.push(this.failed(err));
        }
      }
      await trx.commit().execute();
    } catch (err) {
      await trx
        .rollback()
        .execute()
        .catch(() => undefined);
      throw err;
    }
    const linked = new Set(outcomes.flatMap((o) => o.linkedStudies));
    if (linked.size > 0) this.emitLinked([...linked]);
    return outcomes;
  }

  private async applyOne(db: Db, w: Work, now: string): Promise<Outcome> {
    const p = w.prepared;
    const h = p.header;
    const id = this.newId();
    const base = {
      id,
      sender_application: h.sendingApplication ?? '',
      sender_facility: h.sendingFacility ?? '',
      control_id: h.controlId ?? h.controlIdRaw ?? '',
      message_type: h.typeLabel.slice(0, 32),
      hl7_version: h.version?.slice(0, 16) ?? null,
      remote_address: w.remoteAddress,
      raw: w.raw,
      received_at: now,
      updated_at: now,
    };
    if (p.kind === 'reject') {
      await insertMessage(db, {
        ...base,
        kind: p.messageKind,
        status: MessageStatus.rejected,
        reason: p.error.text,
        ack_code: 'AR',
        study_instance_uid: null,
        accession_number: null,
      });
      return { ack: 'AR', status: MessageStatus.rejected, error: p.error, studyUid: null, linkedStudies: [] };
    }

    const e = p.event;
    const first = e.kind === 'patient-merge' ? undefined : e.items[0];
    // The message row goes in first (the items reference it) as applied; a hold found below updates it.
    const inserted = await insertMessageUnlessDuplicate(db, {
      ...base,
      kind: e.kind,
      status: MessageStatus.applied,
      reason: null,
      ack_code: 'AA',
      study_instance_uid: first?.studyInstanceUid ?? null,
      accession_number: first?.accessionNumber ?? null,
    });
    if (!inserted) {
      const dup = await findAcceptedMessage(db, base.sender_application, base.sender_facility, base.control_id);
      if (dup && messageContentKey(dup.raw) !== messageContentKey(storableText(w.raw))) {
        // A RIS whose counter was reset would otherwise lose this message quietly behind an AA.
        const text = `control id reused with other content (MSH-3/MSH-4/MSH-10 of message ${dup.id}): not applied, held for review`;
        await insertMessage(db, {
          ...base,
          kind: e.kind,
          status: MessageStatus.held,
          reason: text,
          ack_code: 'AR',
          reuse_of: dup.id,
          study_instance_uid: first?.studyInstanceUid ?? null,
          accession_number: first?.accessionNumber ?? null,
        });
        return { ack: 'AR', status: MessageStatus.held, error: { hl7Code: Hl7ErrorCode.duplicateKey, text }, studyUid: null, linkedStudies: [] };
      }
      await insertMessage(db, {
        ...base,
        kind: e.kind,
        status: MessageStatus.duplicate,
        reason: `same MSH-3/MSH-4/MSH-10 and content as message ${dup?.id ?? '?'}`,
        ack_code: 'AA',
        study_instance_uid: null,
        accession_number: null,
      });
      return { ack: 'AA', status: MessageStatus.duplicate, studyUid: null, linkedStudies: [] };
    }

    switch (e.kind) {
      case 'order':
        return this.applyOrders(db, base, e.patient, e.items, now);
      case 'second-report': {
        const studies: string[] = [];
        // Its own savepoint: a held item undoes the items applied before it (a report is taken whole or not at all), the message row stays.
        await beginSavepoint(db, SECOND_REPORT_SAVEPOINT);
        for (const it of e.items) {
          const r = await this.secondReports!.apply(db, it, { senderApplication: base.sender_application, patient: e.patient });
          if ('held' in r) {
            await rollbackToSavepoint(db, SECOND_REPORT_SAVEPOINT);
            await releaseSavepoint(db, SECOND_REPORT_SAVEPOINT);
            await setMessageStatus(db, id, MessageStatus.held, r.held, null, now);
            await setMessageAckCode(db, id, 'AR');
            return {
              ack: 'AR',
              status: MessageStatus.held,
              error: { hl7Code: r.hl7Code, text: `not applied, held for review: ${r.held}` },
              studyUid: null,
              linkedStudies: [],
            };
          }
          studies.push(r.studyUid);
        }
        await releaseSavepoint(db, SECOND_REPORT_SAVEPOINT);
        if (studies[0]) await setMessageStatus(db, id, MessageStatus.applied, null, studies[0], now);
        return { ack: 'AA', status: MessageStatus.applied, studyUid: studies[0] ?? null, linkedStudies: [] };
      }
      case 'report':
      case 'ai-result': {
        const decisions: LinkDecision[] = [];
        for (const it of e.items) {
          decisions.push(await decideLink(db, { accessionNumber: it.accessionNumber, studyInstanceUid: it.studyInstanceUid, ...linkPatient(e.patient) }));
        }
        if (e.kind === 'report') {
          for (let i = 0; i < e.items.length; i++) {
            const it = e.items[i]!;
            if (!it.wrongPatient) continue;
            // Never the study's report: a person decides what the RIS meant, and the read of a final report stops.
            const d = decisions[i]!;
            decisions[i] = { state: LinkState.held, reason: `${WRONG_PATIENT_RESULT}: an observation has OBX-11 W (result belongs to another patient)` };
            await this.holdForWrongPatient(db, it, d.state === LinkState.linked ? d.studyInstanceUid : null, base, now);
          }
        }
        const summary = await this.messageStatus(db, base.id, decisions, e.items[0]!.studyInstanceUid, now);
        const patient = {
          patient_id: e.patient.id,
          patient_id_authority: e.patient.authority,
          patient_identifiers: identifiersJson(e.patient),
          sender_application: base.sender_application,
        };
        if (e.kind === 'report') {
          for (let i = 0; i < e.items.length; i++) {
            const it = e.items[i]!;
            await insertReportVersion(db, {
              id: this.newId(),
              message_id: id,
              ...patient,
              ...linkKeyColumns(it),
              ...linkColumns(decisions[i]!),
              result_status: it.resultStatus,
              report_text: it.text,
              radiologist_id: it.radiologist?.id ?? null,
              radiologist_name: personName(it.radiologist),
              procedure_code: it.procedure?.code ?? null,
              procedure_text: it.procedure?.text ?? null,
              reason_for_study: json.coded(it.reasonForStudy),
              diagnoses: json.coded(it.diagnoses),
              observed_at: it.observedAt,
              received_at: now,
              updated_at: now,
            });
          }
        } else {
          const rows: Insertable<AiResultTable>[] = [];
          e.items.forEach((it, i) => {
            for (const f of it.findings) {
              rows.push({
                id: this.newId(),
                message_id: id,
                ...patient,
                ...linkKeyColumns(it),
                ...linkColumns(decisions[i]!),
                finding_code: f.code,
                finding_text: f.text,
                finding_system: f.system,
                value_text: f.value,
                abnormal_flags: f.abnormalFlags.join('~') || null,
                positive: f.positive ? 1 : 0,
                result_status: f.status,
                observed_at: f.observedAt ?? it.observedAt,
                received_at: now,
                updated_at: now,
              });
            }
          });
          await insertAiResults(db, rows);
        }
        return summary;
      }
      case 'patient-merge': {
        const changed: string[] = [];
        const linked: string[] = [];
        for (const m of e.items) {
          const counts = await applyPatientMerge(
            db,
            { id: m.prior.id!, authority: m.prior.authority },
            { id: m.patient.id!, authority: m.patient.authority },
            now,
          );
          await insertPatientMerge(db, {
            id: this.newId(),
            message_id: id,
            patient_id: m.patient.id!,
            prior_patient_id: m.prior.id!,
            authority: m.patient.authority,
            prior_authority: m.prior.authority,
            studies_updated: counts.studies,
            records_updated: counts.records,
            applied_at: now,
          });
          const r = await reconsiderHeldForPatient(db, m.patient.id!, now);
          changed.push(...r.messageIds);
          if (r.linked > 0) linked.push(...(await linkedStudiesOfMessages(db, r.messageIds)));
        }
        await refreshMessageStatus(db, changed, now);
        return { ack: 'AA', status: MessageStatus.applied, studyUid: null, linkedStudies: linked };
      }
    }
  }

  /** The message is held while any of its items is; it was stored as applied with the first item's keys. */
  private async messageStatus(db: Db, messageId: string, decisions: LinkDecision[], givenUid: string | null, now: string): Promise<Outcome> {
    const held = decisions.find((d): d is Extract<LinkDecision, { state: 'held' }> => d.state === LinkState.held);
    const linkedStudies = [...new Set(decisions.flatMap((d) => (d.state === LinkState.linked ? [d.studyInstanceUid] : [])))];
    const studyUid = linkedStudies[0] ?? givenUid;
    if (held || studyUid !== givenUid) {
      await setMessageStatus(db, messageId, held ? MessageStatus.held : MessageStatus.applied, held?.reason ?? null, studyUid, now);
    }
    return { ack: 'AA', status: held ? MessageStatus.held : MessageStatus.applied, studyUid, linkedStudies };
  }

  private async applyOrders(db: Db, base: { id: string; sender_application: string }, patient: PatientRef, items: OrderItem[], now: string): Promise<Outcome> {
    // Decide everything first (reads), then write: the message row carries the final status.
    const plans: { item: OrderItem; existing?: OrderRow; decision: LinkDecision; insert: boolean }[] = [];
    const msgKeys = linkPatient(patient).patientIds;
    for (const it of items) {
      const existing = await findOrderToUpdate(db, it);
      const existingKeys = existing ? patientKeys(existing.patient_id, existing.patient_id_authority, existing.patient_identifiers) : [];
      if (existingKeys.length > 0 && msgKeys.length > 0 && !(await identityMatch(db, msgKeys, existingKeys)).match) {
        plans.push({ item: it, decision: { state: LinkState.held, reason: 'order update names a different patient than the stored order' }, insert: true });
        continue;
      }
      const keys = {
        accessionNumber: it.accessionNumber ?? existing?.accession_number ?? null,
        studyInstanceUid: it.studyInstanceUid ?? existing?.study_instance_uid ?? null,
        ...(msgKeys.length > 0 ? linkPatient(patient) : { patientId: existing?.patient_id ?? null, patientIds: existingKeys }),
        excludeOrderId: existing?.id,
        isOrder: true,
      };
      const decision = await decideLink(db, keys);
      // A held update never changes the order we hold; it is kept beside it for review.
      plans.push({ item: it, existing, decision, insert: !existing || decision.state === LinkState.held });
    }
    const summary = await this.messageStatus(
      db,
      base.id,
      plans.map((p) => p.decision),
      items[0]!.studyInstanceUid,
      now,
    );
    const affected: string[] = [];
    const cancels: { orderId: string; studyUid: string | null; control: string }[] = [];
    for (const p of plans) {
      const it = p.item;
      const control = it.orderControl?.toUpperCase() ?? '';
      const cancelled = CANCEL_CONTROLS.has(control) && p.decision.state !== LinkState.held;
      const fields = {
        message_id: base.id,
        sender_application: base.sender_application,
        order_control: it.orderControl,
        order_status: it.orderStatus,
        procedure_code: it.procedure?.code ?? null,
        procedure_text: it.procedure?.text ?? null,
        modality: it.modality,
        priority: it.priority,
        reason_for_study: json.coded(it.reasonForStudy),
        relevant_clinical_info: it.relevantClinicalInfo,
        diagnoses: json.coded(it.diagnoses),
        referring_physician_id: it.referringPhysician?.id ?? null,
        referring_physician_name: personName(it.referringPhysician),
        second_opinion_requested: it.secondOpinionRequested ? 1 : 0,
        updated_at: now,
      };
      let orderId: string;
      if (p.insert || !p.existing) {
        orderId = this.newId();
        await insertOrder(db, {
          id: orderId,
          ...fields,
          ...linkKeyColumns(it),
          patient_id: patient.id,
          patient_id_authority: patient.authority,
          patient_identifiers: identifiersJson(patient),
          ...linkColumns(p.decision),
          cancelled_at: cancelled ? now : null,
          created_at: now,
        });
      } else {
        const ex = p.existing;
        orderId = ex.id;
        // An update fills in what it carries and keeps what it leaves out (a status message omits the procedure).
        await updateOrder(db, ex.id, {
          ...fields,
          procedure_code: fields.procedure_code ?? ex.procedure_code,
          procedure_text: fields.procedure_text ?? ex.procedure_text,
          modality: fields.modality ?? ex.modality,
          priority: fields.priority ?? ex.priority,
          reason_for_study: it.reasonForStudy.length > 0 ? fields.reason_for_study : ex.reason_for_study,
          diagnoses: it.diagnoses.length > 0 ? fields.diagnoses : ex.diagnoses,
          relevant_clinical_info: fields.relevant_clinical_info ?? ex.relevant_clinical_info,
          referring_physician_id: fields.referring_physician_id ?? ex.referring_physician_id,
          referring_physician_name: fields.referring_physician_name ?? ex.referring_physician_name,
          accession_number: it.accessionNumber ?? ex.accession_number,
          study_instance_uid: it.studyInstanceUid ?? ex.study_instance_uid,
          placer_order_number: it.placerOrderNumber ?? ex.placer_order_number,
          filler_order_number: it.fillerOrderNumber ?? ex.filler_order_number,
          patient_id: patient.id ?? ex.patient_id,
          patient_id_authority: patient.id ? patient.authority : ex.patient_id_authority,
          patient_identifiers: patient.id ? identifiersJson(patient) : ex.patient_identifiers,
          ...linkColumns(p.decision),
          cancelled_at: cancelled ? (ex.cancelled_at ?? now) : ex.cancelled_at,
        });
      }
      if (cancelled) cancels.push({ orderId, studyUid: p.decision.state === LinkState.linked ? p.decision.studyInstanceUid : null, control });
      // The order may carry the key that connects waiting reports and AI results to their study.
      if (p.decision.state === LinkState.linked) {
        const r = await linkPendingForStudy(db, p.decision.studyInstanceUid, now);
        affected.push(...r.messageIds);
      }
    }
    await refreshMessageStatus(
      db,
      affected.filter((m) => m !== base.id),
      now,
    );
    for (const c of cancels) if (c.studyUid) await this.cancelCasesForOrder(db, c.studyUid, c.control, base, now);
    return summary;
  }

  /**
   * ORC-1 CA/DC/OC: the RIS ended the order. The open case(s) of its study end
   * with it, through the case life cycle (audited, and whatever stops with a
   * cancelled case stops). A grouped procedure whose study still has another
   * live order keeps its case: the read is still wanted for that order; the
   * cancel is recorded on the case instead.
   */
  private async cancelCasesForOrder(db: Db, studyUid: string, control: string, base: { id: string; sender_application: string }, now: string): Promise<void> {
    const actor = `hl7:${base.sender_application || 'unknown'}`;
    const live = await liveOrdersOfStudy(db, studyUid);
    const cases = await casesOfStudy(db, studyUid);
    for (const c of cases) {
      if (c.state === CaseState.cancelled || c.state === CaseState.writtenBack) continue;
      if (live > 0) {
        await recordAudit(db, this.newId(), now, {
          actor,
          action: 'case.order-cancelled',
          entityType: 'case',
          entityId: c.id,
          details: { orderControl: control, messageId: base.id, liveOrders: live, outcome: 'case kept: the study has other live orders' },
        });
        continue;
      }
      await transitionCase(db, {
        caseId: c.id,
        from: [c.state],
        to: CaseState.cancelled,
        actor,
        now,
        auditId: this.newId(),
        details: { reason: `order cancelled by the RIS (ORC-1 ${control})`, messageId: base.id },
      });
    }
  }

  /**
   * A result marked wrong-patient (OBX-11 W) after a final report of the same
   * order: the study's open case is held for review (a second read of a report
   * about someone else must not go on). Cases past the point where they can be
   * held (reported, written back) get the finding in their audit trail.
   */
  private async holdForWrongPatient(
    db: Db,
    it: LinkKeys,
    linkedUid: string | null,
    base: { id: string; sender_application: string },
    now: string,
  ): Promise<void> {
    const studyUid = await finalReportStudyOfOrder(db, {
      accessionNumber: it.accessionNumber,
      studyInstanceUid: it.studyInstanceUid,
      linkedStudyUid: linkedUid,
    });
    if (!studyUid) return;
    const actor = `hl7:${base.sender_application || 'unknown'}`;
    for (const c of await casesOfStudy(db, studyUid)) {
      const details = { reason: 'wrong-patient-result', messageId: base.id };
      if (canTransition(c.state, CaseState.held)) {
        await transitionCase(db, { caseId: c.id, from: [c.state], to: CaseState.held, actor, now, auditId: this.newId(), details });
      } else if (c.state !== CaseState.cancelled && c.state !== CaseState.held) {
        await recordAudit(db, this.newId(), now, {
          actor,
          action: 'case.wrong-patient-result',
          entityType: 'case',
          entityId: c.id,
          details: { ...details, state: c.state },
        });
      }
    }
  }

  private emitLinked(uids: string[]): void {
    for (const l of this.listeners) {
      const fn = l.onLinked;
      if (!fn) continue;
      for (const uid of uids) {
        Promise.resolve()
          .then(() => fn.call(l, uid))
          .catch((err: unknown) => this.log.error('onLinked listener failed', { studyUid: hashId(uid), error: (err as Error).message }));
      }
    }
  }
}

/**
 * The text of a frame in its own character set. The listener read the bytes
 * as UTF-8 (or Latin-1); MSH-18 is in the ASCII part of MSH, so it can be read
 * from that text, and only a message that names another set is decoded again.
 */
export function decodeFrame(received: string, bytes: Buffer | undefined): { raw: string; charset: Hl7Charset; problem?: string } {
  const name = peekMsh18(received);
  if (name === null) return { raw: received, charset: defaultCharset };
  const charset = charsetFor(name);
  if (!charset) return { raw: received, charset: defaultCharset, problem: `MSH-18 character set "${name}" not supported (${supportedCharsets.join(', ')})` };
  // ASCII and UTF-8 text is what the listener already made of the bytes.
  if (!bytes || charset.name === 'ASCII' || charset.name === 'UNICODE UTF-8') return { raw: received, charset };
  try {
    return { raw: charset.decode(bytes), charset };
  } catch (err) {
    return { raw: received, charset: defaultCharset, problem: (err as Error).message };
  }
}

/**
 * What "the same content" means for a resent control id: every segment as
 * sent, except MSH-7 (the time the sender built the message, which a resend
 * may refresh), with segment ends normalised. Any other difference (a report
 * text, a status, a patient) is other content.
 */
export function messageContentKey(raw: string): string {
  const segs = raw
    .replace(/^[\s\x0b]+/, '')
    .split(/\r\n|\r|\n/)
    .filter((l) => l.length > 0);
  const msh = segs[0];
  if (msh?.startsWith('MSH') && msh.length > 4) {
    const f = msh.split(msh[3]!);
    // Raw split: f[6] is MSH-7.
    if (f.length > 6) f[6] = '';
    segs[0] = f.join(msh[3]!);
  }
  return segs.join('\r');
}

const SECOND_REPORT_SAVEPOINT = 'second_report';

/** ORC-1 order control codes that end an order: cancel, discontinue, cancelled as requested. */
const CANCEL_CONTROLS = new Set(['CA', 'DC', 'OC']);

function identifiersJson(p: PatientRef): string | null {
  return p.identifiers.length > 0 ? JSON.stringify(p.identifiers) : null;
}

/** What linking compares: every PID-3 repetition with its authority. */
function linkPatient(p: PatientRef): { patientId: string | null; patientAuthority: string | null; patientIds: PatientKey[] } {
  return { patientId: p.id, patientAuthority: p.authority, patientIds: p.identifiers.map((i) => ({ id: i.id, authority: i.authority })) };
}

/** The keys an item was sent with, stored as given (linking decides separately where it belongs). */
function linkKeyColumns(it: LinkKeys): {
  accession_number: string | null;
  study_instance_uid: string | null;
  placer_order_number: string | null;
  filler_order_number: string | null;
} {
  return {
    accession_number: it.accessionNumber,
    study_instance_uid: it.studyInstanceUid,
    placer_order_number: it.placerOrderNumber,
    filler_order_number: it.fillerOrderNumber,
  };
}
