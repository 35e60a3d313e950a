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

export type SamplingOutcome =
  | { selected: true; why: 'rate' | 'minimum' }
  | { selected: false; why: 'not-drawn' | 'maximum' };

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
