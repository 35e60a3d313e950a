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
}

/** Nearest-rank percentile (the value a reader can find in the data), on sorted input. */
export function percentile(sorted: readonly number[], p: number): number | null {
  if (sorted.length === 0) return null;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

function percentiles(values: number[]): Percentiles {
  const s = [...values].sort((a, b) => a - b);
  const r = (x: number | null) => (x === null ? null : Math.round(x * 100) / 100);
  return { n: s.length, p50: r(percentile(s, 50)), p90: r(percentile(s, 90)), p95: r(percentile(s, 95)) };
}

const hours = (from: string, to: string) => (Date.parse(to) - Date.parse(from)) / 3_600_000;
const rate = (n: number, of: number) => (of === 0 ? null : Math.round((n / of) * 10_000) / 10_000);

function group(key: string, facts: readonly SecondReadFact[], extra: Partial<GroupStats> = {}): GroupStats {
  const discordant = facts.filter((f) => f.radpeerScore !== '1').length;
  const significant = facts.filter((f) => SIGNIFICANT.includes(f.radpeerScore)).length;
  return {
    key,
    ...extra,
    secondReads: facts.length,
    discordant,
    significant,
    discordanceRate: rate(discordant, facts.length),
    significantRate: rate(significant, facts.length),
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
  };
}

export const STATS_TABLES = ['radiologist-modality', 'radiologist', 'modality', 'reader', 'over-time'] as const;
export type StatsTable = (typeof STATS_TABLES)[number];

function csvCell(v: unknown): string {
  const s = v === null || v === undefined ? '' : String(v);
  // Quote when needed; a leading = + - @ is neutralised so a spreadsheet does not run it as a formula.
  const safe = /^[=+\-@]/.test(s) && !/^-?\d/.test(s) ? `'${s}` : s;
  return /[",\r\n]/.test(safe) ? `"${safe.replace(/"/g, '""')}"` : safe;
}

/** One table of the statistics as CSV (RFC 4180, CRLF). */
export function statsCsv(s: StatsResult, table: StatsTable): string {
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
  ];
  const lines = [cols.map(([h]) => h).join(',')];
  for (const g of rows) lines.push(cols.map(([, get]) => csvCell(get(g))).join(','));
  return lines.join('\r\n') + '\r\n';
}
