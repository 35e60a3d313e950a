import type { Db } from '../db/database.js';
import type { StudyRow } from '../studies/study.table.js';
import { honourManualRequests } from './decision.service.js';
import { evaluate, type CompiledRuleSet } from './evaluate.js';
import { loadEvaluationInputs } from './evaluation-input.repository.js';
import type { BucketCounters, Priority, Reason } from './rule.types.js';

export interface DryRunOptions {
  /** ISO times bounding when studies were first received; absent: unbounded. */
  from?: string;
  to?: string;
  /** How many flagged studies to list (the counts cover all). */
  maxItems: number;
}

export interface DryRunResult {
  evaluated: number;
  flagged: number;
  items: { studyInstanceUid: string; accessionNumber: string | null; modalities: string[]; radiologistId: string | null; priority: Priority | null; reasons: Reason[] }[];
  truncated: boolean;
  byRule: Record<string, number>;
  byRadiologistModality: { radiologistId: string; modality: string; evaluated: number; flagged: number }[];
}

const PAGE = 1000;

/**
 * Evaluates a rule set over stored studies, oldest first, with sampling
 * counters kept in memory from zero: the same function and inputs as the live
 * path, and nothing written.
 */
export async function dryRun(db: Db, compiled: CompiledRuleSet, o: DryRunOptions): Promise<DryRunResult> {
  const result: DryRunResult = { evaluated: 0, flagged: 0, items: [], truncated: false, byRule: {}, byRadiologistModality: [] };
  const sampling = new Map<string, BucketCounters>();
  const byRm = new Map<string, { radiologistId: string; modality: string; evaluated: number; flagged: number }>();
  let after: { at: string; uid: string } | undefined;
  for (;;) {
    let q = db.selectFrom('studies').selectAll();
    if (o.from) q = q.where('first_received_at', '>=', o.from);
    if (o.to) q = q.where('first_received_at', '<', o.to);
    if (after) {
      const a = after;
      q = q.where((eb) => eb.or([eb('first_received_at', '>', a.at), eb.and([eb('first_received_at', '=', a.at), eb('study_instance_uid', '>', a.uid)])]));
    }
    const page: StudyRow[] = await q.orderBy('first_received_at').orderBy('study_instance_uid').limit(PAGE).execute();
    if (page.length === 0) break;
    const inputs = await loadEvaluationInputs(db, page, { withPriorDecisions: false });
    for (const s of page) {
      const input = inputs.get(s.study_instance_uid);
      if (!input) continue;
      const decision = evaluate(compiled, { ...input, samplingState: sampling, now: new Date(s.stable_at ?? s.last_received_at) });
      honourManualRequests(decision, input.manualRequests);
      for (const slot of decision.samplingSlots) {
        const c = sampling.get(slot.bucketKey) ?? { seen: 0, selected: 0 };
        sampling.set(slot.bucketKey, { seen: c.seen + 1, selected: c.selected + (slot.selected ? 1 : 0) });
      }
      if (decision.basis === 'order-only' && !decision.flagged) continue;
      result.evaluated++;
      const radiologistId = [...input.reports].reverse().find((r) => r.status === 'F' || r.status === 'C')?.radiologistId ?? null;
      const modality = input.study.modalities[0] ?? 'UNKNOWN';
      const rmKey = `${radiologistId ?? 'unknown'}|${modality}`;
      const rm = byRm.get(rmKey) ?? { radiologistId: radiologistId ?? 'unknown', modality, evaluated: 0, flagged: 0 };
      rm.evaluated++;
      byRm.set(rmKey, rm);
      if (!decision.flagged) continue;
      rm.flagged++;
      result.flagged++;
      for (const id of new Set(decision.reasons.map((r) => r.ruleId))) result.byRule[id] = (result.byRule[id] ?? 0) + 1;
      if (result.items.length < o.maxItems) {
        result.items.push({
          studyInstanceUid: s.study_instance_uid,
          accessionNumber: s.accession_number,
          modalities: input.study.modalities,
          radiologistId,
          priority: decision.priority,
          reasons: decision.reasons,
        });
      } else result.truncated = true;
    }
    const last = page[page.length - 1]!;
    after = { at: last.first_received_at, uid: last.study_instance_uid };
    if (page.length < PAGE) break;
  }
  result.byRadiologistModality = [...byRm.values()].sort((a, b) => a.radiologistId.localeCompare(b.radiologistId) || a.modality.localeCompare(b.modality));
  return result;
}
