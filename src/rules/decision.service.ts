import { recordAudit } from '../audit/audit.repository.js';
import { caseReasons, findOpenCase, insertCase, updateCase } from '../cases/case.repository.js';
import { transitionCase } from '../cases/case-state.js';
import type { GatewayConfig } from '../config/schema.js';
import type { Db } from '../db/database.js';
import { lockKey } from '../db/dialect.js';
import { orderCountsOfStudy } from '../hl7/hl7.repository.js';
import { hashId, type Logger } from '../logger.js';
import { CaseState, EvaluationTrigger, StudyState } from '../states.js';
import { findStudy } from '../studies/study.repository.js';
import { hasUnfinishedDueJobs } from '../jobs/job.repository.js';
import type { JobContext, JobQueue } from '../jobs/job.types.js';
import { EVALUATE_JOB, type EvaluationJobPayload } from './evaluation.job.js';
import { isPriorStudy } from '../priors/prior.repository.js';
import { evaluate } from './evaluate.js';
import { loadEvaluationInputs } from './evaluation-input.repository.js';
import { PRIORITY_RANK, type Decision, type Priority, type Reason, type SamplingStateReader } from './rule.types.js';
import {
  applySamplingSlots,
  decisionsOfStudies,
  insertDecision,
  OUTCOME_WINDOW_MS,
  parseDecisionRow,
  samplingCountersOfRadiologist,
} from './rules.repository.js';
import type { RulesService } from './rules.service.js';

/** The counters of a rule set with no sampling rule: none is ever read. */
const NO_COUNTERS: SamplingStateReader = { get: () => undefined };

export interface EvaluationOutcome {
  decision: Decision;
  ruleSetVersion: number;
  caseId: string | null;
  caseCreated: boolean;
}

export interface DecisionServiceOptions {
  db: Db;
  logger: Logger;
  rules: RulesService;
  config: Pick<GatewayConfig, 'sla' | 'forwarding' | 'destinations'>;
  newId: () => string;
  /** A case is being created, in its transaction: its priors lookup is enqueued there (priors.service.ts), so a crash after the commit cannot lose it. */
  onCaseOpened?: (trx: Db, caseId: string) => Promise<void>;
  clock?: () => Date;
  /** The job engine the evaluations run on (the gateway's); without it only direct calls evaluate (tools, tests). */
  jobs?: JobQueue;
}

/** The rule id under which a manual request is recorded when the rule set has no `manual` rule: requests are always honoured. */
export const MANUAL_REQUEST_RULE_ID = 'manual-request';

/**
 * Runs the rules for a study when something that matters changed (it became
 * stable, a final/corrected report, order or AI result linked, a manual
 * request) and turns a flag into a case. The engine is pure; this is the
 * part that reads and writes.
 */
export class DecisionService {
  private readonly db: Db;
  private readonly log: Logger;
  private readonly clock: () => Date;
  /** Evaluations of one study run one after another: each sees the last one's decision and counters. */
  private readonly queues = new Map<string, Promise<unknown>>();

  constructor(private readonly o: DecisionServiceOptions) {
    this.db = o.db;
    this.log = o.logger.child({ component: 'decisions' });
    this.clock = o.clock ?? (() => new Date());
  }

  evaluateStudy(studyInstanceUid: string, trigger: EvaluationTrigger, actor = 'rules'): Promise<EvaluationOutcome | undefined> {
    const previous = this.queues.get(studyInstanceUid) ?? Promise.resolve();
    const next = previous.catch(() => undefined).then(() => this.run(studyInstanceUid, trigger, actor));
    this.queues.set(studyInstanceUid, next);
    void next
      .finally(() => {
        if (this.queues.get(studyInstanceUid) === next) this.queues.delete(studyInstanceUid);
      })
      .catch(() => undefined);
    return next;
  }

  /**
   * The handler of the evaluation job kind: the decision is written in a
   * transaction fenced by the job's claim, so a worker that lost the job to
   * another writes nothing, and the job completes in that same transaction. A thrown error (the database unavailable) is
   * retried by the engine until the evaluation succeeds.
   */
  runJob(job: JobContext<EvaluationJobPayload>): Promise<EvaluationOutcome | undefined> {
    // The job completes in the decision's own transaction: nothing after it needs a retry.
    return this.run(job.payload.studyUid, job.payload.trigger, 'rules', (fn) =>
      job.fenced(async (trx) => {
        const result = await fn(trx);
        await job.completeIn(trx);
        return result;
      }),
    );
  }

  /** Waits for every evaluation under way or due now, in this process or (jobs) in the database (tests). */
  async idle(): Promise<void> {
    for (;;) {
      while (this.queues.size > 0) await Promise.allSettled([...this.queues.values()]);
      if (!this.o.jobs || !(await hasUnfinishedDueJobs(this.db, EVALUATE_JOB))) return;
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  private async run(
    uid: string,
    trigger: EvaluationTrigger,
    actor: string,
    transaction: <T>(fn: (trx: Db) => Promise<T>) => Promise<T> = (fn) => this.db.transaction().execute(fn),
  ): Promise<EvaluationOutcome | undefined> {
    const active = await this.o.rules.current();
    const now = this.clock();
    const nowIso = now.toISOString();
    // Everything the rules read is read under the study's lock (PostgreSQL: an advisory lock across instances;
    // SQLite: the one writer), so two instances deciding the same study never decide on a stale read. The
    // counters are read, decided on and incremented under the radiologist's sampling lock, so two evaluations
    // never both take the last slot of a quota. The study's lock first, always in that order.
    const result = await transaction(async (trx) => {
      await lockKey(trx, `study:${uid}`);
      const study = await findStudy(trx, uid);
      if (!study) return undefined;
      // Rules decide on a complete study; a manual request is recorded at once and forwarded once stable.
      if (study.state !== StudyState.stable && trigger !== EvaluationTrigger.manual) return undefined;
      // A study fetched as a case's prior is read-only context: no rules, no case of its own (a person may still ask for one).
      if (trigger !== EvaluationTrigger.manual && (await isPriorStudy(trx, uid))) return undefined;
      const input = (await loadEvaluationInputs(trx, [study], { withPriorDecisions: true })).get(uid);
      if (!input) return undefined;
      const radiologist = [...input.reports].reverse().find((r) => r.status === 'F' || r.status === 'C')?.radiologistId;
      // Without an enabled sampling rule no counter is read or drawn from: no lock, no read. The rule set is the
      // one this evaluation decides with, so a set published meanwhile changes nothing here.
      const sampling = active.rules.some((r) => r.kind === 'sampling' && r.enabled);
      // Reviews of drawn studies matter only to precision rules, so only they pay for reading them.
      const precision = active.rules.some((r) => r.kind === 'sampling' && r.mode === 'precision' && r.enabled);
      let samplingState: SamplingStateReader = NO_COUNTERS;
      if (sampling) {
        await lockKey(trx, `sampling:${radiologist ?? 'unknown'}`);
        samplingState = await samplingCountersOfRadiologist(
          trx,
          radiologist ?? 'unknown',
          precision ? { outcomesSince: new Date(now.getTime() - OUTCOME_WINDOW_MS).toISOString() } : {},
        );
      }
      const decision = evaluate(active.compiled, { ...input, samplingState, now });
      honourManualRequests(decision, input.manualRequests);
      const last = (await decisionsOfStudies(trx, [uid])).at(-1);
      const unchanged =
        last !== undefined &&
        last.rule_set_version === active.version &&
        decision.samplingSlots.length === 0 &&
        JSON.stringify(parseDecisionRow(last).reasons) === JSON.stringify(decision.reasons);
      // Nothing to record: an order-only look that found nothing, or the same verdict again.
      if ((!decision.flagged && decision.basis === 'order-only' && decision.samplingSlots.length === 0) || unchanged) {
        return { decision, caseId: last?.case_id ?? null, caseCreated: false, recorded: false };
      }
      await applySamplingSlots(trx, decision.samplingSlots, nowIso);
      let caseId: string | null = null;
      let caseCreated = false;
      if (decision.flagged) {
        const open = await findOpenCase(trx, uid);
        const priority = decision.priority ?? 'routine';
        const slaHours = decision.slaHours ?? this.slaHoursFor(priority);
        if (open) {
          caseId = open.id;
          const known = caseReasons(open);
          const added = decision.reasons.filter((r) => !known.some((k) => k.ruleId === r.ruleId && k.detail === r.detail));
          const upgrade = PRIORITY_RANK[priority] < PRIORITY_RANK[open.priority as Priority];
          if (added.length > 0 || upgrade) {
            await updateCase(trx, open.id, {
              reasons: JSON.stringify([...known, ...added]),
              updated_at: nowIso,
              rule_set_version: active.version,
              ...(upgrade ? { priority, sla_hours: slaHours, due_at: addHours(open.created_at, slaHours) } : {}),
            });
            await recordAudit(trx, this.o.newId(), nowIso, {
              actor,
              action: 'case.reasons-added',
              entityType: 'case',
              entityId: open.id,
              details: { trigger, ruleSetVersion: active.version, reasons: added, ...(upgrade ? { priority } : {}) },
            });
          }
        } else {
          caseId = this.o.newId();
          caseCreated = true;
          await insertCase(trx, {
            id: caseId,
            study_instance_uid: uid,
            accession_number: study.accession_number,
            state: CaseState.flagged,
            priority,
            sla_hours: slaHours,
            due_at: addHours(nowIso, slaHours),
            destination_id: decision.destinationId ?? this.defaultDestination(),
            reader_group: decision.readerGroup ?? null,
            blinded: decision.blinded ? 1 : 0,
            deidentify: decision.deidentify === undefined ? null : decision.deidentify ? 1 : 0,
            rule_set_version: active.version,
            reasons: JSON.stringify(decision.reasons),
            reader_id: null,
            discrepant: 0,
            sla_breached_at: null,
            escalation_level: 0,
            created_by: actor,
            created_at: nowIso,
            updated_at: nowIso,
          });
          await recordAudit(trx, this.o.newId(), nowIso, {
            actor,
            action: 'case.created',
            entityType: 'case',
            entityId: caseId,
            details: { trigger, studyUid: uid, ruleSetVersion: active.version, priority, reasons: decision.reasons },
          });
          await this.o.onCaseOpened?.(trx, caseId);
          // The RIS cancelled every order of this study before the rules flagged it (the modality sent it
          // anyway): a second read of a cancelled exam is a doubt for a person, not something to send. A
          // person's own request (manual) stands. QA releases the case (held -> flagged) or cancels it.
          const orders = await orderCountsOfStudy(trx, uid);
          if (input.manualRequests.length === 0 && orders.linked > 0 && orders.cancelled === orders.linked) {
            await transitionCase(trx, {
              caseId,
              from: [CaseState.flagged],
              to: CaseState.held,
              actor,
              now: nowIso,
              auditId: this.o.newId(),
              details: { reason: 'order-cancelled', detail: 'every order of the study was cancelled by the RIS (ORC-1 CA/DC/OC) before the case opened' },
            });
          }
        }
      }
      await insertDecision(trx, { id: this.o.newId(), studyInstanceUid: uid, ruleSetVersion: active.version, trigger, decision, caseId, evaluatedAt: nowIso });
      return { decision, caseId, caseCreated, recorded: true };
    });
    if (!result) return undefined;
    const { decision, recorded } = result;
    if (!recorded) return { decision, ruleSetVersion: active.version, caseId: result.caseId, caseCreated: false };
    this.log.info('study evaluated', {
      studyUid: hashId(uid),
      trigger,
      ruleSetVersion: active.version,
      flagged: decision.flagged,
      rules: [...new Set(decision.reasons.map((r) => r.ruleId))],
      caseId: result.caseId ?? undefined,
    });
    return { decision, ruleSetVersion: active.version, caseId: result.caseId, caseCreated: result.caseCreated };
  }

  slaHoursFor(priority: Priority): number {
    const sla = this.o.config.sla;
    return priority === 'stat' ? sla.statHours : priority === 'urgent' ? sla.urgentHours : sla.routineHours;
  }

  private defaultDestination(): string | null {
    return this.o.config.forwarding.defaultDestination ?? this.o.config.destinations[0]?.id ?? null;
  }
}

/**
 * A person's request for a second read is honoured even when the rule set has
 * no `manual` rule (or it is disabled): the request then stands as its own reason.
 */
export function honourManualRequests(decision: Decision, requests: readonly { reason: string; priority?: Priority; destinationId?: string }[]): void {
  if (requests.length === 0 || decision.reasons.some((r) => r.kind === 'manual')) return;
  const reason: Reason = { ruleId: MANUAL_REQUEST_RULE_ID, kind: 'manual', detail: `requested: ${requests.map((r) => r.reason).join('; ')}` };
  decision.reasons.push(reason);
  decision.flagged = true;
  let priority: Priority = decision.priority ?? 'routine';
  for (const r of requests) if (r.priority && PRIORITY_RANK[r.priority] < PRIORITY_RANK[priority]) priority = r.priority;
  decision.priority = priority;
  decision.destinationId = requests.find((r) => r.destinationId)?.destinationId ?? decision.destinationId;
}

function addHours(iso: string, hours: number): string {
  return new Date(Date.parse(iso) + hours * 3_600_000).toISOString();
}
