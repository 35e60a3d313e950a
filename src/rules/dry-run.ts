import type { Db } from '../db/database.js';
import { honourManualRequests } from './decision.service.js';
import { evaluate, type CompiledRuleSet } from './evaluate.js';
import { loadEvaluationInputs, studiesReceivedPage } from './evaluation-input.repository.js';
import type { BucketCounters, Priority, Reason, Rule, SamplingStateReader } from './rule.types.js';
import { OUTCOME_WINDOW_MS, samplingOutcomes } from './rules.repository.js';

export interface DryRunOptions {
  /** ISO times bounding when studies were first received; absent: unbounded. */
  from?: string;
  to?: string;
  /** How many flagged studies to list (the counts cover all). */
  maxItems: number;
}

/** What the forecast needs from the configuration: who reads (capacity) and how long a case stays open. */
export interface ForecastContext {
  readers: readonly { id: string; subspecialties: readonly string[]; maxOpenCases: number; available: boolean }[];
  sla: { statHours: number; urgentHours: number; routineHours: number };
  rules: readonly Rule[];
}

export interface Forecast {
  /** days of the period the dry run covered (from/to, else first to last study received; at least 1) */
  days: number;
  casesPerDay: number;
  byRule: { ruleId: string; flagged: number; casesPerDay: number }[];
  /**
   * Peak of cases open at once per reader group (a rule's readerGroup; null: no group), each
   * counted open from its decision until its SLA is due (the most a reader may take), against
   * the summed maxOpenCases of the available readers who can take it (null: no reader configured).
   */
  readerLoad: { readerGroup: string | null; openCasesPeak: number; capacity: number | null }[];
  /** per sampling rule x radiologist x modality x period: studies drawn against the rule's minimum and maximum */
  quota: { ruleId: string; radiologist: string; modality: string; period: string; seen: number; drawn: number; min: number; max: number | null }[];
}

export interface DryRunResult {
  evaluated: number;
  flagged: number;
  items: {
    studyInstanceUid: string;
    accessionNumber: string | null;
    modalities: string[];
    radiologistId: string | null;
    priority: Priority | null;
    reasons: Reason[];
  }[];
  truncated: boolean;
  byRule: Record<string, number>;
  byRadiologistModality: { radiologistId: string; modality: string; evaluated: number; flagged: number }[];
}

/** The dry run's full outcome: the API answer plus every flagged UID (for the diff against another version). */
export interface DryRunOutcome extends DryRunResult {
  flaggedUids: Set<string>;
  forecast: Forecast;
}

const PAGE = 1000;

/**
 * Evaluates a rule set over stored studies, oldest first, with sampling
 * counters kept in memory from zero: the same function and inputs as the live
 * path, and nothing written. A precision rule's cells read the stored reviews of
 * drawn studies (second reads) as the live path does, not the planning rate of no reviews.
 */
export async function dryRun(db: Db, compiled: CompiledRuleSet, o: DryRunOptions, context?: ForecastContext): Promise<DryRunOutcome> {
  const result: DryRunResult = { evaluated: 0, flagged: 0, items: [], truncated: false, byRule: {}, byRadiologistModality: [] };
  const flaggedUids = new Set<string>();
  const openSpans: { group: string | null; start: number; end: number }[] = [];
  let firstAt: number | undefined;
  let lastAt: number | undefined;
  const sampling = new Map<string, BucketCounters>();
  // Precision cells plan from the reviews of drawn studies: the same second reads the live engine reads
  // (samplingOutcomes, from the same window before the period), so the forecast draws as it will.
  const precision = compiled.sampling.some((s) => s.rule.mode === 'precision');
  const outcomes = precision
    ? await samplingOutcomes(db, undefined, o.from ? new Date(Date.parse(o.from) - OUTCOME_WINDOW_MS).toISOString() : undefined)
    : new Map<string, { reviewed: number; discrepant: number }>();
  const state: SamplingStateReader = {
    get(key) {
      const c = sampling.get(key);
      const r = outcomes.get(key);
      return r === undefined ? c : { seen: c?.seen ?? 0, selected: c?.selected ?? 0, reviewed: r.reviewed, discrepant: r.discrepant };
    },
  };
  const byRm = new Map<string, { radiologistId: string; modality: string; evaluated: number; flagged: number }>();
  let after: { at: string; uid: string } | undefined;
  for (;;) {
    const page = await studiesReceivedPage(db, { from: o.from, to: o.to, after }, PAGE);
    if (page.length === 0) break;
    const inputs = await loadEvaluationInputs(db, page, { withPriorDecisions: false });
    for (const s of page) {
      const input = inputs.get(s.study_instance_uid);
      if (!input) continue;
      const now = new Date(s.stable_at ?? s.last_received_at);
      const decision = evaluate(compiled, { ...input, samplingState: state, now });
      const receivedAt = Date.parse(s.first_received_at);
      firstAt = Math.min(firstAt ?? receivedAt, receivedAt);
      lastAt = Math.max(lastAt ?? receivedAt, receivedAt);
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
      flaggedUids.add(s.study_instance_uid);
      if (context) {
        const sla = context.sla;
        const hours = decision.slaHours ?? (decision.priority === 'stat' ? sla.statHours : decision.priority === 'urgent' ? sla.urgentHours : sla.routineHours);
        openSpans.push({ group: decision.readerGroup ?? null, start: now.getTime(), end: now.getTime() + hours * 3_600_000 });
      }
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
  const span = o.from && o.to ? Date.parse(o.to) - Date.parse(o.from) : firstAt !== undefined && lastAt !== undefined ? lastAt - firstAt : 0;
  const days = Math.max(1, span / 86_400_000);
  return { ...result, flaggedUids, forecast: forecastOf(result, days, openSpans, sampling, context) };
}

const perDay = (n: number, days: number) => Math.round((n / days) * 100) / 100;

function forecastOf(
  result: DryRunResult,
  days: number,
  spans: { group: string | null; start: number; end: number }[],
  sampling: Map<string, BucketCounters>,
  context?: ForecastContext,
): Forecast {
  const byGroup = new Map<string | null, { t: number; d: number }[]>();
  for (const sp of spans) {
    const events = byGroup.get(sp.group) ?? [];
    events.push({ t: sp.start, d: 1 }, { t: sp.end, d: -1 });
    byGroup.set(sp.group, events);
  }
  const readerLoad: Forecast['readerLoad'] = [];
  for (const [group, events] of byGroup) {
    // A case closing at the moment another opens frees its slot first.
    events.sort((a, b) => a.t - b.t || a.d - b.d);
    let open = 0;
    let peak = 0;
    for (const e of events) peak = Math.max(peak, (open += e.d));
    const readers = (context?.readers ?? []).filter((r) => r.available && (group === null || r.subspecialties.includes(group)));
    readerLoad.push({ readerGroup: group, openCasesPeak: peak, capacity: readers.length === 0 ? null : readers.reduce((n, r) => n + r.maxOpenCases, 0) });
  }
  readerLoad.sort((a, b) => (a.readerGroup ?? '').localeCompare(b.readerGroup ?? ''));
  const samplingRules = new Map((context?.rules ?? []).flatMap((r) => (r.kind === 'sampling' ? [[r.id, r] as const] : [])));
  const quota: Forecast['quota'] = [];
  for (const [key, c] of sampling) {
    const [ruleId, radiologist, modality, period] = key.split('|').map((x) => decodeURIComponent(x)) as [string, string, string, string];
    const rule = samplingRules.get(ruleId);
    quota.push({ ruleId, radiologist, modality, period, seen: c.seen, drawn: c.selected, min: rule?.minimum ?? 0, max: rule?.maximum ?? null });
  }
  quota.sort(
    (a, b) =>
      a.ruleId.localeCompare(b.ruleId) ||
      a.radiologist.localeCompare(b.radiologist) ||
      a.modality.localeCompare(b.modality) ||
      a.period.localeCompare(b.period),
  );
  return {
    days: Math.round(days * 100) / 100,
    casesPerDay: perDay(result.flagged, days),
    byRule: Object.entries(result.byRule)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([ruleId, flagged]) => ({ ruleId, flagged, casesPerDay: perDay(flagged, days) })),
    readerLoad,
    quota,
  };
}

/** Studies a candidate flags that the active version does not, and the reverse (sorted, each list at most `max`). */
export function flaggedDiff(
  candidate: ReadonlySet<string>,
  active: ReadonlySet<string>,
  max: number,
): { newlyFlagged: string[]; noLongerFlagged: string[]; truncated: boolean } {
  const newly = [...candidate].filter((u) => !active.has(u)).sort();
  const gone = [...active].filter((u) => !candidate.has(u)).sort();
  return { newlyFlagged: newly.slice(0, max), noLongerFlagged: gone.slice(0, max), truncated: newly.length > max || gone.length > max };
}
