import type { Rule, SamplingRule } from './rule.types.js';
import { bucketKey, precisionDrawProbability, previousPeriodKeyOf, selectionProbability, wilsonInterval } from './sampling.js';

export interface SamplingCell {
  ruleId: string;
  radiologist: string;
  modality: string;
  period: string;
  seen: number;
  /** studies drawn in the period */
  selected: number;
  /** second reads of drawn studies so far */
  reviewed: number;
  /** of those, RADPEER 2a and worse */
  discrepant: number;
  rate: number | null;
  ciLow: number | null;
  ciHigh: number | null;
  /** the probability the next study of this cell is drawn */
  drawProbability: number;
  mode: 'quota' | 'precision';
  targetHalfWidth: number | null;
  confidence: number;
  /** precision mode: reviews the target needs at the planning rate */
  needed: number | null;
}

export interface BucketState {
  ruleId: string;
  radiologistId: string;
  modality: string;
  periodKey: string;
  seen: number;
  selected: number;
}

/**
 * Each sampling cell's estimate (Wilson interval at the rule's confidence,
 * 0.95 for quota rules) and the draw probability the engine would use for its
 * next study: the same functions as evaluate().
 */
export function samplingCells(
  buckets: readonly BucketState[],
  outcomes: ReadonlyMap<string, { reviewed: number; discrepant: number }>,
  rules: readonly Rule[],
): SamplingCell[] {
  const byId = new Map(rules.filter((r): r is SamplingRule => r.kind === 'sampling').map((r) => [r.id, r]));
  const byKey = new Map(buckets.map((b) => [bucketKey(b.ruleId, b.radiologistId, b.modality, b.periodKey), b]));
  return buckets.map((b) => {
    const rule = byId.get(b.ruleId);
    const key = bucketKey(b.ruleId, b.radiologistId, b.modality, b.periodKey);
    const o = outcomes.get(key) ?? { reviewed: 0, discrepant: 0 };
    const confidence = rule?.confidence ?? 0.95;
    const ci = wilsonInterval(o.discrepant, o.reviewed, confidence);
    const precision = rule?.mode === 'precision';
    let drawProbability = 0;
    let needed: number | null = null;
    if (rule) {
      const prevKey = previousPeriodKeyOf(b.periodKey);
      const prev = prevKey ? byKey.get(bucketKey(b.ruleId, b.radiologistId, b.modality, prevKey)) : undefined;
      const prevOutcomes = prevKey ? outcomes.get(bucketKey(b.ruleId, b.radiologistId, b.modality, prevKey)) : undefined;
      let rate = rule.rate;
      if (precision) {
        const pooled = { reviewed: o.reviewed + (prevOutcomes?.reviewed ?? 0), discrepant: o.discrepant + (prevOutcomes?.discrepant ?? 0) };
        const p = precisionDrawProbability({ targetHalfWidth: rule.targetHalfWidth!, confidence, rate: rule.rate }, b, prev?.seen, pooled);
        rate = p.probability;
        needed = p.needed;
      }
      drawProbability = selectionProbability({ rate, minimum: rule.minimum, maximum: rule.maximum }, b, prev?.seen);
    }
    return {
      ruleId: b.ruleId,
      radiologist: b.radiologistId,
      modality: b.modality,
      period: b.periodKey,
      seen: b.seen,
      selected: b.selected,
      reviewed: o.reviewed,
      discrepant: o.discrepant,
      rate: ci.rate,
      ciLow: ci.low,
      ciHigh: ci.high,
      drawProbability,
      mode: precision ? 'precision' : 'quota',
      targetHalfWidth: precision ? rule!.targetHalfWidth! : null,
      confidence,
      needed,
    };
  });
}
