import { wilsonInterval } from '../rules/sampling.js';
import type { SecondReadFact } from './stats.repository.js';

/** RADPEER 2016: any score but 1 is a discrepancy ("2+"); 2b, 3a, 3b are likely significant ("2b+"). */
const SIGNIFICANT = ['2b', '3a', '3b'];

export interface Percentiles {
  n: number;
  p50: number | null;
  p90: number | null;
  p95: number | null;
}

export interface GroupStats {
  key: string;
  radiologistId?: string;
  readerId?: string;
  modality?: string;
  secondReads: number;
  /** RADPEER 2a and worse. */
  discordant: number;
  /** RADPEER 2b, 3a, 3b. */
  significant: number;
  discordanceRate: number | null;
  significantRate: number | null;
  /**
   * Inverse-probability weighted rates (Hajek: sum of w*y / sum of w, w = 1/selection probability):
   * enriched second reads (oncology, discordance, ...) weigh 1, random draws 1/p, so the rate
   * estimates the radiologist's whole work, not the enriched mix.
   */
  weightedDiscordanceRate: number | null;
  weightedSignificantRate: number | null;
  /** 95 % Wilson interval of the weighted 2+ rate at the Kish effective sample size (sum w)^2 / sum w^2. */
  discordanceCiLow: number | null;
  discordanceCiHigh: number | null;
  effectiveN: number | null;
  /** Case opened to first second report, in hours. */
  turnaroundHours: Percentiles;
}

export interface StatsResult {
  from: string;
  to: string;
  bucket: 'day' | 'week';
  totals: GroupStats;
  scores: Record<string, number>;
  byRadiologist: GroupStats[];
  byModality: GroupStats[];
  byRadiologistModality: GroupStats[];
  byReader: GroupStats[];
  /** Case opened to the RIS accepting the write-back, in hours. */
  writeBackTurnaroundHours: Percentiles;
  overTime: (GroupStats & { start: string })[];
  /** Why the second reads were done, with their inverse-probability weight (mean and range). */
  enrichment: { selection: string; secondReads: number; meanWeight: number; minWeight: number; maxWeight: number }[];
}

/**
 * Why a study was read twice and its inverse-probability weight, from the kinds of the rules
 * that flagged it and the selection probability of its sampling draw: a random draw weighs 1/p;
 * anything another rule flagged (enrichment), or of unknown origin, was read with certainty: 1.
 */
export function selectionWeight(s: { kinds: ReadonlySet<string>; probability: number | undefined } | undefined): { selection: string; weight: number } {
  if (!s || s.kinds.size === 0) return { selection: 'unknown', weight: 1 };
  const enrichment = [...s.kinds].filter((k) => k !== 'sampling').sort();
  if (enrichment.length > 0) return { selection: enrichment.join(','), weight: 1 };
  return { selection: 'sampling', weight: s.probability !== undefined && s.probability > 0 ? 1 / s.probability : 1 };
}

/** Nearest-rank percentile (the value a reader can find in the data), on sorted input. */
export function percentile(sorted: readonly number[], p: number): number | null {
  if (sorted.length === 0) return null;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

function percentiles(values: number[]): Percentiles {
  const s = [...values].sort((a, b) => a - b);
  // Four decimals of an hour (0.36 s): reads that take seconds or minutes do not round to 0.
  const r = (x: number | null) => (x === null ? null : Math.round(x * 10_000) / 10_000);
  return { n: s.length, p50: r(percentile(s, 50)), p90: r(percentile(s, 90)), p95: r(percentile(s, 95)) };
}

const hours = (from: string, to: string) => (Date.parse(to) - Date.parse(from)) / 3_600_000;
const rate = (n: number, of: number) => (of === 0 ? null : Math.round((n / of) * 10_000) / 10_000);

function group(key: string, facts: readonly SecondReadFact[], extra: Partial<GroupStats> = {}): GroupStats {
  const discordant = facts.filter((f) => f.radpeerScore !== '1').length;
  const significant = facts.filter((f) => SIGNIFICANT.includes(f.radpeerScore)).length;
  let sw = 0;
  let sw2 = 0;
  let swd = 0;
  let sws = 0;
  for (const f of facts) {
    const w = f.weight ?? 1;
    sw += w;
    sw2 += w * w;
    if (f.radpeerScore !== '1') swd += w;
    if (SIGNIFICANT.includes(f.radpeerScore)) sws += w;
  }
  const effectiveN = sw2 === 0 ? null : (sw * sw) / sw2;
  const ci = effectiveN === null ? { low: null, high: null } : wilsonInterval((swd / sw) * effectiveN, effectiveN, 0.95);
  const r4 = (x: number | null) => (x === null ? null : Math.round(x * 10_000) / 10_000);
  return {
    key,
    ...extra,
    secondReads: facts.length,
    discordant,
    significant,
    discordanceRate: rate(discordant, facts.length),
    significantRate: rate(significant, facts.length),
    weightedDiscordanceRate: sw === 0 ? null : r4(swd / sw),
    weightedSignificantRate: sw === 0 ? null : r4(sws / sw),
    discordanceCiLow: r4(ci.low),
    discordanceCiHigh: r4(ci.high),
    effectiveN: effectiveN === null ? null : Math.round(effectiveN * 100) / 100,
    turnaroundHours: percentiles(facts.map((f) => hours(f.caseCreatedAt, f.reportedAt))),
  };
}

function groupBy(facts: readonly SecondReadFact[], keyOf: (f: SecondReadFact) => string): Map<string, SecondReadFact[]> {
  const m = new Map<string, SecondReadFact[]>();
  for (const f of facts) {
    const k = keyOf(f);
    const list = m.get(k);
    if (list) list.push(f);
    else m.set(k, [f]);
  }
  return new Map([...m.entries()].sort(([a], [b]) => a.localeCompare(b)));
}

/** The start (UTC) of the day or ISO week (Monday) holding `t`. */
export function bucketStart(t: string, bucket: 'day' | 'week'): string {
  const d = new Date(t);
  d.setUTCHours(0, 0, 0, 0);
  if (bucket === 'week') d.setUTCDate(d.getUTCDate() - ((d.getUTCDay() + 6) % 7));
  return d.toISOString();
}

const UNKNOWN = '(unknown)';

export function computeStats(facts: readonly SecondReadFact[], o: { from: string; to: string; bucket: 'day' | 'week' }): StatsResult {
  const rad = (f: SecondReadFact) => f.radiologistId ?? UNKNOWN;
  const mod = (f: SecondReadFact) => f.modality ?? UNKNOWN;
  const scores: Record<string, number> = { '1': 0, '2a': 0, '2b': 0, '3a': 0, '3b': 0 };
  for (const f of facts) scores[f.radpeerScore] = (scores[f.radpeerScore] ?? 0) + 1;
  // Every bucket of the period is listed, empty ones too, so a chart's time axis has no gaps.
  const overTime: StatsResult['overTime'] = [];
  const byBucket = groupBy(facts, (f) => bucketStart(f.reportedAt, o.bucket));
  const step = o.bucket === 'week' ? 7 * 86_400_000 : 86_400_000;
  const maxBuckets = 400;
  for (let t = Date.parse(bucketStart(o.from, o.bucket)); t < Date.parse(o.to) && overTime.length < maxBuckets; t += step) {
    const start = new Date(t).toISOString();
    overTime.push({ start, ...group(start, byBucket.get(start) ?? []) });
  }
  return {
    from: o.from,
    to: o.to,
    bucket: o.bucket,
    totals: group('all', facts),
    scores,
    byRadiologist: [...groupBy(facts, rad)].map(([k, v]) => group(k, v, { radiologistId: k })),
    byModality: [...groupBy(facts, mod)].map(([k, v]) => group(k, v, { modality: k })),
    byRadiologistModality: [...groupBy(facts, (f) => `${rad(f)}|${mod(f)}`)].map(([k, v]) => group(k, v, { radiologistId: rad(v[0]!), modality: mod(v[0]!) })),
    byReader: [...groupBy(facts, (f) => f.readerId)].map(([k, v]) => group(k, v, { readerId: k })),
    writeBackTurnaroundHours: percentiles(facts.filter((f) => f.writtenBackAt).map((f) => hours(f.caseCreatedAt, f.writtenBackAt!))),
    overTime,
    enrichment: [...groupBy(facts, (f) => f.selection ?? 'unknown')].map(([selection, v]) => {
      const w = v.map((f) => f.weight ?? 1);
      return {
        selection,
        secondReads: v.length,
        meanWeight: Math.round((w.reduce((a, b) => a + b, 0) / w.length) * 100) / 100,
        minWeight: Math.round(Math.min(...w) * 100) / 100,
        maxWeight: Math.round(Math.max(...w) * 100) / 100,
      };
    }),
  };
}

export const STATS_TABLES = ['radiologist-modality', 'radiologist', 'modality', 'reader', 'over-time', 'peer-review'] as const;
export type StatsTable = (typeof STATS_TABLES)[number];

function csvCell(v: unknown): string {
  const s = v === null || v === undefined ? '' : String(v);
  // Quote when needed; a leading = + - @ is neutralised so a spreadsheet does not run it as a formula.
  const safe = /^[=+\-@]/.test(s) && !/^-?\d/.test(s) ? `'${s}` : s;
  return /[",\r\n]/.test(safe) ? `"${safe.replace(/"/g, '""')}"` : safe;
}

/**
 * The peer-review export a QA committee files: one row per second read (RFC 4180, CRLF).
 * `arbitrated`: a third reader's verdict closed the second read (reports/arbitration.service.ts).
 */
export const PEER_REVIEW_COLUMNS = [
  'case_id',
  'first_reader',
  'second_reader',
  'modality',
  'radpeer_score',
  'discrepant_2plus',
  'significant_2b_plus',
  'first_read_at',
  'case_opened_at',
  'second_read_at',
  'arbitrated',
  'selection',
  'weight',
] as const;

export function peerReviewCsv(facts: readonly SecondReadFact[]): string {
  const lines: string[] = [PEER_REVIEW_COLUMNS.join(',')];
  for (const f of facts) {
    lines.push(
      [
        f.caseId,
        f.radiologistId,
        f.readerId,
        f.modality,
        f.radpeerScore,
        f.radpeerScore !== '1',
        SIGNIFICANT.includes(f.radpeerScore),
        f.firstReadAt ?? null,
        f.caseCreatedAt,
        f.reportedAt,
        !!f.arbitration?.verdict,
        f.selection ?? 'unknown',
        Math.round((f.weight ?? 1) * 10_000) / 10_000,
      ]
        .map(csvCell)
        .join(','),
    );
  }
  return lines.join('\r\n') + '\r\n';
}

/** One table of the statistics as CSV (RFC 4180, CRLF). */
export function statsCsv(s: StatsResult, table: Exclude<StatsTable, 'peer-review'>): string {
  const rows: GroupStats[] =
    table === 'radiologist'
      ? s.byRadiologist
      : table === 'modality'
        ? s.byModality
        : table === 'reader'
          ? s.byReader
          : table === 'over-time'
            ? s.overTime
            : s.byRadiologistModality;
  const keyCols: [string, (g: GroupStats & { start?: string }) => unknown][] =
    table === 'radiologist'
      ? [['radiologist', (g) => g.radiologistId]]
      : table === 'modality'
        ? [['modality', (g) => g.modality]]
        : table === 'reader'
          ? [['reader', (g) => g.readerId]]
          : table === 'over-time'
            ? [['period_start', (g) => g.start]]
            : [
                ['radiologist', (g) => g.radiologistId],
                ['modality', (g) => g.modality],
              ];
  const cols: [string, (g: GroupStats & { start?: string }) => unknown][] = [
    ...keyCols,
    ['second_reads', (g) => g.secondReads],
    ['discordant_2plus', (g) => g.discordant],
    ['discordance_rate_2plus', (g) => g.discordanceRate],
    ['discordant_2b_plus', (g) => g.significant],
    ['discordance_rate_2b_plus', (g) => g.significantRate],
    ['turnaround_hours_p50', (g) => g.turnaroundHours.p50],
    ['turnaround_hours_p90', (g) => g.turnaroundHours.p90],
    ['turnaround_hours_p95', (g) => g.turnaroundHours.p95],
    ['weighted_discordance_rate_2plus', (g) => g.weightedDiscordanceRate],
    ['discordance_ci_low', (g) => g.discordanceCiLow],
    ['discordance_ci_high', (g) => g.discordanceCiHigh],
  ];
  const lines = [cols.map(([h]) => h).join(',')];
  for (const g of rows) lines.push(cols.map(([, get]) => csvCell(get(g))).join(','));
  return lines.join('\r\n') + '\r\n';
}
