/**
 * Reproducible QA sampling. The draw for a study is a keyed hash of its
 * StudyInstanceUID, so an auditor holding the secret can replay exactly which
 * studies were picked; the quota logic only reads the persisted counters of
 * the bucket (radiologist x modality x period), so replaying the same studies
 * in the same order against the same counters gives the same answer.
 */
import { createHmac, type KeyObject } from 'node:crypto';
import type { BucketCounters, SamplingPeriod } from './rule.types.js';

/**
 * UTC calendar period of `date`: `2024-03-05` (day), `2024-W10` (ISO week,
 * whose year is the ISO week-numbering year), `2024-03` (month), `2024-Q1` (quarter).
 */
export function periodKey(date: Date, period: SamplingPeriod): string {
  const y = date.getUTCFullYear();
  const m = date.getUTCMonth();
  switch (period) {
    case 'day':
      return `${y}-${pad2(m + 1)}-${pad2(date.getUTCDate())}`;
    case 'month':
      return `${y}-${pad2(m + 1)}`;
    case 'quarter':
      return `${y}-Q${Math.floor(m / 3) + 1}`;
    case 'week': {
      const { year, week } = isoWeek(date);
      return `${year}-W${pad2(week)}`;
    }
  }
}

/** The key of the period just before the one containing `date`. */
export function previousPeriodKey(date: Date, period: SamplingPeriod): string {
  return periodKey(new Date(periodStart(date, period).getTime() - 1), period);
}

/** UTC start of the period containing `date`. */
export function periodStart(date: Date, period: SamplingPeriod): Date {
  const y = date.getUTCFullYear();
  const m = date.getUTCMonth();
  switch (period) {
    case 'day':
      return new Date(Date.UTC(y, m, date.getUTCDate()));
    case 'month':
      return new Date(Date.UTC(y, m, 1));
    case 'quarter':
      return new Date(Date.UTC(y, m - (m % 3), 1));
    case 'week': {
      const isoDay = (date.getUTCDay() + 6) % 7; // Monday = 0
      return new Date(Date.UTC(y, m, date.getUTCDate() - isoDay));
    }
  }
}

function isoWeek(date: Date): { year: number; week: number } {
  // The ISO week belongs to the year of its Thursday.
  const d = new Date(Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), date.getUTCDate()));
  const isoDay = (d.getUTCDay() + 6) % 7;
  d.setUTCDate(d.getUTCDate() - isoDay + 3);
  const year = d.getUTCFullYear();
  const firstThursday = new Date(Date.UTC(year, 0, 4));
  const firstIsoDay = (firstThursday.getUTCDay() + 6) % 7;
  firstThursday.setUTCDate(firstThursday.getUTCDate() - firstIsoDay + 3);
  const week = 1 + Math.round((d.getTime() - firstThursday.getTime()) / (7 * 86_400_000));
  return { year, week };
}

function pad2(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

/** `ruleId|radiologist|modality|periodKey`; `|` and `%` inside a part are percent-encoded so keys never collide. */
export function bucketKey(ruleId: string, radiologistId: string, modality: string, period: string): string {
  return `${esc(ruleId)}|${esc(radiologistId)}|${esc(modality)}|${esc(period)}`;
}

function esc(part: string): string {
  return part.includes('|') || part.includes('%') ? part.replace(/%/g, '%25').replace(/\|/g, '%7C') : part;
}

/** HMAC-SHA256(secret, studyInstanceUid), first 48 bits as a fraction in [0, 1). A KeyObject saves importing the key per call. */
export function samplingDraw(secret: string | Buffer | KeyObject, studyInstanceUid: string): number {
  const digest = createHmac('sha256', secret).update(studyInstanceUid, 'utf8').digest();
  return digest.readUIntBE(0, 6) / 2 ** 48;
}

export interface QuotaParams {
  rate: number;
  minimum: number;
  maximum?: number;
}

/**
 * The probability that decideSampling selects the next study with these
 * counters (it selects exactly when draw < this), the inclusion probability
 * whose inverse weighs a sampled second read in the statistics.
 */
export function selectionProbability(p: QuotaParams, counters: BucketCounters | undefined, previousSeen: number | undefined): number {
  const seen = counters?.seen ?? 0;
  const selected = counters?.selected ?? 0;
  if (p.maximum !== undefined && selected >= p.maximum) return 0;
  if (selected < p.minimum) {
    const deficit = p.minimum - selected;
    if (previousSeen === undefined || previousSeen <= 0) return 1;
    const horizon = Math.max(p.minimum, Math.floor(previousSeen * MINIMUM_HORIZON_FRACTION));
    const remaining = horizon - seen;
    if (remaining <= deficit) return 1;
    return Math.min(1, Math.max(p.rate, deficit / remaining));
  }
  return Math.min(1, p.rate);
}

export type SamplingOutcome = { selected: true; why: 'rate' | 'minimum' } | { selected: false; why: 'not-drawn' | 'maximum' };

/**
 * The minimum is planned against the previous period's volume for the same
 * bucket, discounted by this factor, so a period busier than 3/4 of the last
 * one always reaches its minimum even though we cannot know its volume in advance.
 */
export const MINIMUM_HORIZON_FRACTION = 0.75;

/**
 * Decides one study from the bucket counters as they are BEFORE this study.
 *
 * - Never beyond `maximum`.
 * - Selected when `draw < rate`.
 * - Minimum catch-up while `selected < minimum`: with no history for the
 *   bucket (first period), select until the minimum is met (we cannot plan
 *   without a volume estimate, and a guaranteed minimum beats a random one).
 *   With history, plan to meet the minimum by the horizon H =
 *   max(minimum, floor(previousSeen x 0.75)): the selection probability is
 *   raised to deficit / (H - seen) and becomes 1 once the remaining horizon
 *   is no larger than the deficit. The same `draw` is compared, so catch-up
 *   picks stay random and replayable.
 */
export function decideSampling(p: QuotaParams, counters: BucketCounters | undefined, previousSeen: number | undefined, draw: number): SamplingOutcome {
  const seen = counters?.seen ?? 0;
  const selected = counters?.selected ?? 0;
  if (p.maximum !== undefined && selected >= p.maximum) return { selected: false, why: 'maximum' };
  if (draw < p.rate) return { selected: true, why: 'rate' };
  if (selected < p.minimum) {
    const deficit = p.minimum - selected;
    if (previousSeen === undefined || previousSeen <= 0) return { selected: true, why: 'minimum' };
    const horizon = Math.max(p.minimum, Math.floor(previousSeen * MINIMUM_HORIZON_FRACTION));
    const remaining = horizon - seen;
    if (remaining <= deficit || draw < deficit / remaining) return { selected: true, why: 'minimum' };
  }
  return { selected: false, why: 'not-drawn' };
}

// ---------------------------------------------------------------------------
// Precision sampling: enough second reads per cell to estimate its discrepancy
// rate within +/- targetHalfWidth, and no more.

/** Two-sided standard normal quantile for `confidence` (Acklam's rational approximation, |error| < 1.2e-9). */
export function zForConfidence(confidence: number): number {
  const p = 1 - (1 - confidence) / 2;
  const a = [-3.969683028665376e1, 2.209460984245205e2, -2.759285104469687e2, 1.38357751867269e2, -3.066479806614716e1, 2.506628277459239];
  const b = [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
  const c = [-7.784894002430293e-3, -3.223964580411365e-1, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
  const d = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
  const low = 0.02425;
  if (p < low) {
    const q = Math.sqrt(-2 * Math.log(p));
    return (((((c[0]! * q + c[1]!) * q + c[2]!) * q + c[3]!) * q + c[4]!) * q + c[5]!) / ((((d[0]! * q + d[1]!) * q + d[2]!) * q + d[3]!) * q + 1);
  }
  if (p > 1 - low) {
    const q = Math.sqrt(-2 * Math.log(1 - p));
    return -(((((c[0]! * q + c[1]!) * q + c[2]!) * q + c[3]!) * q + c[4]!) * q + c[5]!) / ((((d[0]! * q + d[1]!) * q + d[2]!) * q + d[3]!) * q + 1);
  }
  const q = p - 0.5;
  const r = q * q;
  return (
    ((((((a[0]! * r + a[1]!) * r + a[2]!) * r + a[3]!) * r + a[4]!) * r + a[5]!) * q) / (((((b[0]! * r + b[1]!) * r + b[2]!) * r + b[3]!) * r + b[4]!) * r + 1)
  );
}

/** Wilson score interval of `successes` in `n` (null bounds when n = 0). */
export function wilsonInterval(successes: number, n: number, confidence: number): { rate: number | null; low: number | null; high: number | null } {
  if (n <= 0) return { rate: null, low: null, high: null };
  const z = zForConfidence(confidence);
  const p = successes / n;
  const { centre, half } = wilsonParts(p, n, z);
  return { rate: p, low: Math.max(0, centre - half), high: Math.min(1, centre + half) };
}

function wilsonParts(p: number, n: number, z: number): { centre: number; half: number } {
  const z2 = z * z;
  const denom = 1 + z2 / n;
  return { centre: (p + z2 / (2 * n)) / denom, half: (z / denom) * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n)) };
}

/** Half-width of the Wilson interval at rate `p` after `n` reviews. */
export function wilsonHalfWidth(p: number, n: number, confidence: number): number {
  return wilsonParts(p, n, zForConfidence(confidence)).half;
}

/**
 * The smallest n whose Wilson interval at rate `p` is no wider than +/- `halfWidth`.
 * The half-width falls monotonically with n, so a doubling search then bisection finds it.
 */
export function wilsonSampleSize(p: number, halfWidth: number, confidence: number): number {
  const z = zForConfidence(confidence);
  const ok = (n: number) => wilsonParts(p, n, z).half <= halfWidth;
  let hi = 1;
  while (!ok(hi)) hi *= 2;
  let lo = Math.floor(hi / 2);
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (ok(mid)) hi = mid;
    else lo = mid;
  }
  return ok(lo) && lo > 0 ? lo : hi;
}

/** Reviewed second reads of a cell and how many were discrepant (RADPEER 2+). */
export interface CellOutcomes {
  reviewed: number;
  discrepant: number;
}

export interface PrecisionParams {
  targetHalfWidth: number;
  confidence: number;
  /** the draw probability while there is no volume estimate for the cell (its first period) */
  rate: number;
}

/**
 * The rate the sample size is planned at: the "plus four" estimate
 * (discrepant + 2) / (reviewed + 4), which starts at 0.5 (the most
 * conservative guess) and moves to the observed rate as reviews come in, so a
 * cell with few reviews is not planned at an accidental 0 %.
 */
export function planningRate(o: CellOutcomes): number {
  return (o.discrepant + 2) / (o.reviewed + 4);
}

/**
 * The draw probability of a precision cell before this study: the reviews
 * still needed for the target width (sample size at the planning rate minus
 * what the period has already drawn), spread over the studies the period is
 * still expected to see (the previous period's volume minus those seen).
 * Without a previous period the rule's `rate` applies. Clamped to [0, 1];
 * the rule's minimum and maximum per period still apply on top (decideSampling).
 */
export function precisionDrawProbability(
  p: PrecisionParams,
  counters: BucketCounters | undefined,
  previousSeen: number | undefined,
  outcomes: CellOutcomes,
): { probability: number; needed: number } {
  const needed = wilsonSampleSize(planningRate(outcomes), p.targetHalfWidth, p.confidence);
  if (previousSeen === undefined || previousSeen <= 0) return { probability: p.rate, needed };
  const drawn = counters?.selected ?? 0;
  const seen = counters?.seen ?? 0;
  const stillNeeded = needed - drawn;
  if (stillNeeded <= 0) return { probability: 0, needed };
  const remaining = Math.max(1, previousSeen - seen);
  return { probability: Math.min(1, stillNeeded / remaining), needed };
}

/** The key of the period before a period key (`2024-03` -> `2024-02`, `2024-W01` -> the last ISO week of 2023); undefined if unparseable. */
export function previousPeriodKeyOf(key: string): string | undefined {
  let m: RegExpMatchArray | null;
  if ((m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(key))) return previousPeriodKey(new Date(Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!)), 'day');
  if ((m = /^(\d{4})-(\d{2})$/.exec(key))) return previousPeriodKey(new Date(Date.UTC(+m[1]!, +m[2]! - 1, 1)), 'month');
  if ((m = /^(\d{4})-Q([1-4])$/.exec(key))) return previousPeriodKey(new Date(Date.UTC(+m[1]!, (+m[2]! - 1) * 3, 1)), 'quarter');
  if ((m = /^(\d{4})-W(\d{2})$/.exec(key))) {
    // Thursday of ISO week 1 is the week holding 4 January; step whole weeks from there.
    const jan4 = new Date(Date.UTC(+m[1]!, 0, 4));
    const thursday = new Date(jan4.getTime() + (3 - ((jan4.getUTCDay() + 6) % 7)) * 86_400_000 + (+m[2]! - 1) * 7 * 86_400_000);
    return previousPeriodKey(thursday, 'week');
  }
  return undefined;
}
