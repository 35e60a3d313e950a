import { recordAudit } from '../audit/audit.repository.js';
import { caseReasons, findOpenCase, insertCase, updateCase } from '../cases/case.repository.js';
import type { GatewayConfig } from '../config/schema.js';
import type { Db } from '../db/database.js';
import { hashId, type Logger } from '../logger.js';
import { CaseState, EvaluationTrigger, StudyState } from '../states.js';
import { findStudy } from '../studies/study.repository.js';
import { evaluate } from './evaluate.js';
import { loadEvaluationInputs } from './evaluation-input.repository.js';
import { PRIORITY_RANK, type Decision, type Priority, type Reason } from './rule.types.js';
import { applySamplingSlots, decisionsOfStudies, insertDecision, parseDecisionRow, samplingCountersOfRadiologist } from './rules.repository.js';
import type { RulesService } from './rules.service.js';


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
  clock?: () => Date;
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
    void next.finally(() => {
      if (this.queues.get(studyInstanceUid) === next) this.queues.delete(studyInstanceUid);
    }).catch(() => undefined);
    return next;
  }

  /** Waits for every evaluation under way (shutdown, tests). */
  async idle(): Promise<void> {
    while (this.queues.size > 0) await Promise.allSettled([...this.queues.values()]);
  }

  private async run(uid: string, trigger: EvaluationTrigger, actor: string): Promise<EvaluationOutcome | undefined> {
    const study = await findStudy(this.db, uid);
    if (!study) return undefined;
    // Rules decide on a complete study; a manual request is recorded at once and forwarded once stable.
    if (study.state !== StudyState.stable && trigger !== EvaluationTrigger.manual) return undefined;

    const active = await this.o.rules.current();
    const input = (await loadEvaluationInputs(this.db, [study], { withPriorDecisions: true })).get(uid);
    if (!input) return undefined;
    const radiologist = [...input.reports].reverse().find((r) => r.status === 'F' || r.status === 'C')?.radiologistId;
    const samplingState = await samplingCountersOfRadiologist(this.db, radiologist ?? 'unknown');
    const now = this.clock();
    const decision = evaluate(active.compiled, { ...input, samplingState, now });
    honourManualRequests(decision, input.manualRequests);

    const nowIso = now.toISOString();
    const last = (await decisionsOfStudies(this.db, [uid])).at(-1);
    const unchanged =
      last !== undefined &&
      last.rule_set_version === active.version &&
      decision.samplingSlots.length === 0 &&
      JSON.stringify(parseDecisionRow(last).reasons) === JSON.stringify(decision.reasons);
    // Nothing to record: an order-only look that found nothing, or the same verdict again.
    if ((!decision.flagged && decision.basis === 'order-only' && decision.samplingSlots.length === 0) || unchanged) {
      return { decision, ruleSetVersion: active.version, caseId: last?.case_id ?? null, caseCreated: false };
    }

    const result = await this.db.transaction().execute(async (trx) => {
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
        }
      }
      await insertDecision(trx, { id: this.o.newId(), studyInstanceUid: uid, ruleSetVersion: active.version, trigger, decision, caseId, evaluatedAt: nowIso });
      return { caseId, caseCreated };
    });
    this.log.info('study evaluated', {
      studyUid: hashId(uid),
      trigger,
      ruleSetVersion: active.version,
      flagged: decision.flagged,
      rules: [...new Set(decision.reasons.map((r) => r.ruleId))],
      caseId: result.caseId ?? undefined,
    });
    return { decision, ruleSetVersion: active.version, ...result };
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
