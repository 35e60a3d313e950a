import type { OutputsService } from '../outputs/outputs.service.js';
import { recordAudit } from '../audit/audit.repository.js';
import { transitionCase } from '../cases/case-state.js';
import type { CaseRow } from '../cases/case.table.js';
import type { GatewayConfig } from '../config/schema.js';
import type { Db } from '../db/database.js';
import { ErrorCode, GatewayError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { ReaderService } from '../readers/reader.service.js';
import type { Rule } from '../rules/rule.types.js';
import { CaseState } from '../states.js';
import { radpeerScores, type RadpeerScore } from './oru-builder.js';
import { findCase } from '../cases/case.repository.js';
import { firstReaderOf, insertArbitration, latestArbitration, rulesJsonOfVersion, secondReportReaderId, updateArbitration } from './arbitration.repository.js';
import { ARBITRATION_VERDICTS, ArbitrationState, type ArbitrationVerdict, type CaseArbitrationRow } from './arbitration.table.js';
import type { OutboundService } from './outbound.service.js';
import type { SecondReportRow } from './report.table.js';
import { findSecondReport } from './second-report.repository.js';
import type { SecondReportService, Submitter } from './second-report.service.js';

export interface ArbitrationInput {
  verdict: ArbitrationVerdict;
  text: string;
  /** The arbitrator's RADPEER score of the first read: required with `other`; `agree-first` means 1, `agree-second` the second read's. */
  radpeerScore?: RadpeerScore;
}

/** What the DICOM SR (and any other output) of the second read says about its arbitration, once decided. */
export interface ArbitrationOutcome {
  verdict: 'first' | 'second' | 'other';
  readerName?: string;
  text?: string;
  /** RADPEER score of the first read after arbitration. */
  finalScore: RadpeerScore;
  arbitratorId: string | null;
  decidedAt: string;
}

/**
 * The decided arbitration of a case, for the outputs of the second read (ORU, SR, FHIR): undefined while
 * none was decided. `readerName` from the reader config (`readers[].name`) when the arbitrator is a reader.
 */
export async function arbitrationOf(db: Db, caseId: string, readers: readonly { id: string; name: string }[] = []): Promise<ArbitrationOutcome | undefined> {
  const a = await latestArbitration(db, caseId);
  if (!a || a.state !== ArbitrationState.done || !a.verdict || !a.final_score) return undefined;
  const verdict = a.verdict === 'agree-first' ? 'first' : a.verdict === 'agree-second' ? 'second' : 'other';
  const name = readers.find((r) => r.id === a.arbitrator_id)?.name;
  return {
    verdict,
    ...(name ? { readerName: name } : a.decided_by ? { readerName: a.decided_by } : {}),
    ...(a.text ? { text: a.text } : {}),
    finalScore: a.final_score as RadpeerScore,
    arbitratorId: a.arbitrator_id,
    decidedAt: a.decided_at ?? a.created_at,
  };
}

export interface ArbitrationPolicy {
  ruleIds: string[];
  readerGroup: string | null;
}

/**
 * The arbitration a case's rules ask for at this score: the rules that opened the case (its reasons) in
 * the rule set version it was opened under, whose `arbitration.when` lists the score. Several: their
 * reader groups are tried in rule order (the first given wins).
 */
export function arbitrationPolicy(rules: readonly Rule[], ruleIds: readonly string[], score: string): ArbitrationPolicy | undefined {
  const applying = rules.filter((r) => ruleIds.includes(r.id) && r.arbitration && (r.arbitration.when as readonly string[]).includes(score));
  if (applying.length === 0) return undefined;
  return { ruleIds: applying.map((r) => r.id), readerGroup: applying.find((r) => r.arbitration!.readerGroup)?.arbitration!.readerGroup ?? null };
}

export interface ArbitrationServiceOptions {
  db: Db;
  logger: Logger;
  config: Pick<GatewayConfig, 'readers' | 'assignment'>;
  readers: ReaderService;
  reports: SecondReportService;
  outbound: OutboundService;
  newId: () => string;
  /** The SR and FHIR outputs of the second read, issued again with the verdict (src/outputs/). */
  outputs?: Pick<OutputsService, 'enqueue'>;
  clock?: () => Date;
}

/**
 * Arbitration by a third reader (a rule's `arbitration: {when, readerGroup?}`). A second read scoring one
 * of `when` moves the case reported -> arbitration in the transaction that stores it; its write-back waits.
 * With gateway assignment a third reader is chosen (never the first or second reader); with pool
 * assignment, or when nobody fits, the arbitration is `unassigned`: held for admin/QA (who name a
 * reader or give the verdict), announced on the escalation channels. The verdict moves the case back to
 * reported and queues the write-back, which carries it.
 */
export class ArbitrationService {
  private readonly log: Logger;
  private readonly clock: () => Date;

  constructor(private readonly o: ArbitrationServiceOptions) {
    this.log = o.logger.child({ component: 'arbitration' });
    this.clock = o.clock ?? (() => new Date());
    o.reports.useArbitration((trx, c, report, actor, now) => this.startIfDue(trx, c, report, actor, now));
  }

  /** Inside the second report's transaction: opens an arbitration when a rule asks for one at this score. */
  async startIfDue(trx: Db, c: CaseRow, report: SecondReportRow, actor: string, now: string): Promise<boolean> {
    if (report.version !== 1 || c.rule_set_version === null) return false;
    const json = await rulesJsonOfVersion(trx, c.rule_set_version);
    if (!json) return false;
    const ruleIds = [...new Set((JSON.parse(c.reasons) as { ruleId: string }[]).map((r) => r.ruleId))];
    const policy = arbitrationPolicy(JSON.parse(json) as Rule[], ruleIds, report.radpeer_score);
    if (!policy) return false;
    const firstReaderId = await firstReaderOf(trx, c.study_instance_uid);
    const chosen = this.o.readers.assigns
      ? await this.o.readers.chooseArbitrator(trx, c, { firstReaderId, secondReaderId: report.reader_id, readerGroup: policy.readerGroup })
      : ({ ok: false, reason: 'pool assignment: the gateway does not choose readers; name an arbitrator or record the verdict' } as const);
    const id = this.o.newId();
    await insertArbitration(trx, {
      id,
      case_id: c.id,
      report_id: report.id,
      rule_ids: JSON.stringify(policy.ruleIds),
      trigger_score: report.radpeer_score,
      reader_group: policy.readerGroup,
      state: chosen.ok ? ArbitrationState.open : ArbitrationState.unassigned,
      arbitrator_id: chosen.ok ? chosen.readerId : null,
      unassigned_reason: chosen.ok ? null : chosen.reason,
      verdict: null,
      final_score: null,
      text: null,
      decided_by: null,
      created_at: now,
      decided_at: null,
    });
    await transitionCase(trx, {
      caseId: c.id,
      from: [CaseState.reported],
      to: CaseState.arbitration,
      actor,
      now,
      auditId: this.o.newId(),
      details: { arbitrationId: id, rules: policy.ruleIds, radpeerScore: report.radpeer_score },
    });
    if (chosen.ok) {
      await recordAudit(trx, this.o.newId(), now, {
        actor: 'readers',
        action: 'case.arbitration-assigned',
        entityType: 'case',
        entityId: c.id,
        details: { arbitrationId: id, arbitratorId: chosen.readerId, why: chosen.why },
      });
    } else {
      await recordAudit(trx, this.o.newId(), now, {
        actor: 'readers',
        action: 'case.arbitration-unassigned',
        entityType: 'case',
        entityId: c.id,
        details: { arbitrationId: id, reason: chosen.reason },
      });
      await this.o.outbound.notify(trx, c.id, 'arbitration-unassigned', { reason: chosen.reason });
    }
    return true;
  }

  parse(body: unknown): ArbitrationInput {
    const b = (typeof body === 'object' && body !== null && !Array.isArray(body) ? body : {}) as Record<string, unknown>;
    const errors: { path: string; message: string }[] = [];
    for (const k of Object.keys(b)) if (!['verdict', 'text', 'radpeerScore'].includes(k)) errors.push({ path: k, message: 'unknown field' });
    const verdict = b['verdict'];
    if (typeof verdict !== 'string' || !(ARBITRATION_VERDICTS as readonly string[]).includes(verdict))
      errors.push({ path: 'verdict', message: `must be one of ${ARBITRATION_VERDICTS.join(', ')}` });
    const text = b['text'];
    if (typeof text !== 'string' || text.trim() === '' || text.length > 50_000)
      errors.push({ path: 'text', message: 'must be a non-empty string of at most 50000 characters' });
    const score = b['radpeerScore'];
    if (score !== undefined && !(typeof score === 'string' && (radpeerScores as readonly string[]).includes(score))) {
      errors.push({ path: 'radpeerScore', message: `must be one of ${radpeerScores.join(', ')} (RADPEER 2016)` });
    }
    if (verdict === 'other' && score === undefined)
      errors.push({ path: 'radpeerScore', message: 'required with verdict other: your RADPEER score of the first read' });
    if (verdict === 'agree-first' && score !== undefined && score !== '1')
      errors.push({ path: 'radpeerScore', message: 'agreeing with the first read means RADPEER 1' });
    if (errors.length > 0) throw new GatewayError(ErrorCode.invalidInput, 'invalid arbitration verdict', { details: { errors } });
    return { verdict: verdict as ArbitrationVerdict, text: (text as string).trim(), ...(score !== undefined ? { radpeerScore: score as RadpeerScore } : {}) };
  }

  /** The verdict: from the assigned arbitrator, or admin/QA. Closes the discrepancy and queues the write-back. */
  async decide(caseId: string, input: ArbitrationInput, by: Submitter): Promise<CaseArbitrationRow> {
    const now = this.clock().toISOString();
    const row = await this.o.db.transaction().execute(async (trx) => {
      const c = await findCase(trx, caseId);
      if (!c) throw new GatewayError(ErrorCode.notFound, 'no such case');
      const a = await latestArbitration(trx, caseId);
      if (!a) throw new GatewayError(ErrorCode.notFound, 'this case has no arbitration');
      if (by.role === 'reader' && a.arbitrator_id !== by.readerId) throw new GatewayError(ErrorCode.forbidden, 'this arbitration is not assigned to you');
      if (c.state !== CaseState.arbitration || (a.state !== ArbitrationState.open && a.state !== ArbitrationState.unassigned)) {
        throw new GatewayError(ErrorCode.conflict, `the arbitration is ${a.state === ArbitrationState.done ? 'already decided' : a.state} (case ${c.state})`);
      }
      const report = await findSecondReport(trx, a.report_id);
      if (!report) throw new GatewayError(ErrorCode.conflict, 'the second report of this arbitration is gone');
      const finalScore: RadpeerScore =
        input.verdict === 'agree-first' ? '1' : input.verdict === 'agree-second' ? (report.radpeer_score as RadpeerScore) : input.radpeerScore!;
      const set = { state: ArbitrationState.done, verdict: input.verdict, final_score: finalScore, text: input.text, decided_by: by.name, decided_at: now };
      if (!(await updateArbitration(trx, a.id, [a.state], set))) throw new GatewayError(ErrorCode.conflict, 'the arbitration changed meanwhile; reload');
      const details = { arbitrationId: a.id, verdict: input.verdict, finalScore, arbitratorId: a.arbitrator_id, secondScore: report.radpeer_score };
      await recordAudit(trx, this.o.newId(), now, { actor: by.name, action: 'case.arbitrated', entityType: 'case', entityId: caseId, details });
      if (
        !(await transitionCase(trx, { caseId, from: [CaseState.arbitration], to: CaseState.reported, actor: by.name, now, auditId: this.o.newId(), details }))
      ) {
        throw new GatewayError(ErrorCode.conflict, 'the case changed meanwhile; reload');
      }
      // Built now, so the ORU carries the verdict.
      await this.o.reports.queueWriteBack(trx, { ...c, state: CaseState.reported }, report, now);
      // The SR in the PACS and the FHIR report carry the arbitrated outcome too (a new version beside the first).
      const verdict = input.verdict === 'agree-first' ? 'first' : input.verdict === 'agree-second' ? 'second' : 'other';
      const arbitratorName = this.o.config.readers.find((r) => r.id === a.arbitrator_id)?.name ?? by.name;
      await this.o.outputs?.enqueue(
        trx,
        caseId,
        { reportId: report.id, arbitration: { verdict, readerName: arbitratorName, ...(input.text ? { text: input.text } : {}) } },
        false,
      );
      return { ...a, ...set };
    });
    this.log.info('arbitration decided', { caseId, verdict: input.verdict });
    this.o.reports.kickOutbound();
    return row;
  }

  /**
   * Admin/QA name the third reader of an open or unassigned arbitration (or let the assignment choose):
   * the same conditions as the automatic choice, checked again for a named reader.
   */
  async assign(caseId: string, actor: string, readerId: string | undefined, reason: string): Promise<CaseArbitrationRow> {
    const now = this.clock().toISOString();
    return this.o.db.transaction().execute(async (trx) => {
      const c = await findCase(trx, caseId);
      if (!c) throw new GatewayError(ErrorCode.notFound, 'no such case');
      const a = await latestArbitration(trx, caseId);
      if (!a || c.state !== CaseState.arbitration || (a.state !== ArbitrationState.open && a.state !== ArbitrationState.unassigned)) {
        throw new GatewayError(ErrorCode.conflict, 'the case has no open arbitration');
      }
      const secondReaderId = await secondReportReaderId(trx, a.report_id);
      const firstReaderId = await firstReaderOf(trx, c.study_instance_uid);
      let chosen: string;
      if (readerId) {
        const r = this.o.config.readers.find((x) => x.id === readerId);
        if (!r) throw new GatewayError(ErrorCode.invalidInput, `unknown reader "${readerId}"`);
        if (r.id === firstReaderId || r.id === secondReaderId)
          throw new GatewayError(ErrorCode.conflict, 'the third reader cannot be the first or second reader');
        if (r.destination && c.destination_id && r.destination !== c.destination_id) {
          throw new GatewayError(ErrorCode.conflict, `${r.id} reads from ${r.destination}; the study was sent to ${c.destination_id}`);
        }
        chosen = r.id;
      } else {
        const next = await this.o.readers.chooseArbitrator(trx, c, { firstReaderId, secondReaderId: secondReaderId ?? '', readerGroup: a.reader_group });
        if (!next.ok) throw new GatewayError(ErrorCode.conflict, `no reader fits: ${next.reason}`);
        chosen = next.readerId;
      }
      const set = { state: ArbitrationState.open, arbitrator_id: chosen, unassigned_reason: null };
      if (!(await updateArbitration(trx, a.id, [a.state], set))) throw new GatewayError(ErrorCode.conflict, 'the arbitration changed meanwhile; reload');
      await recordAudit(trx, this.o.newId(), now, {
        actor,
        action: 'case.arbitration-assigned',
        entityType: 'case',
        entityId: caseId,
        details: { arbitrationId: a.id, arbitratorId: chosen, from: a.arbitrator_id, reason },
      });
      return { ...a, ...set };
    });
  }
}
