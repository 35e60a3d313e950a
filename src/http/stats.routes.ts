import { Router } from 'express';
import type { Db } from '../db/database.js';
import { ErrorCode, GatewayError } from '../errors.js';
import { secondReadFacts } from '../stats/stats.repository.js';
import { computeStats, peerReviewCsv, STATS_TABLES, statsCsv } from '../stats/stats.js';
import { agreementStats } from '../stats/kappa.js';
import { requireRole } from './auth.js';
import { oneOf, queryString, queryTime } from './query.js';

const DAY = 86_400_000;

/**
 * GET /api/stats: second reads, discordance (RADPEER 2+ and 2b+) per first
 * reader, modality and second reader, turnaround percentiles, and the same
 * over time. `format=csv` answers one table (`table=`) as text/csv.
 */
export function statsRouter(db: Db, clock: () => Date = () => new Date()): Router {
  const r = Router();
  r.get('/stats', requireRole('admin', 'qa'), async (req, res) => {
    const q = req.query;
    const now = clock().getTime();
    const to = queryTime(q['to'], 'to') ?? new Date(now + 1).toISOString();
    const from = queryTime(q['from'], 'from') ?? new Date(Date.parse(to) - 30 * DAY).toISOString();
    if (from >= to) throw new GatewayError(ErrorCode.invalidInput, 'from must be before to');
    if (Date.parse(to) - Date.parse(from) > 3 * 366 * DAY) throw new GatewayError(ErrorCode.invalidInput, 'the period may be at most three years');
    const bucket = oneOf(q['bucket'], ['day', 'week'] as const, 'bucket') ?? (Date.parse(to) - Date.parse(from) > 92 * DAY ? 'week' : 'day');
    const format = oneOf(q['format'], ['json', 'csv'] as const, 'format') ?? 'json';
    const table = oneOf(q['table'], STATS_TABLES, 'table') ?? 'radiologist-modality';
    const radiologist = queryString(q['radiologist']);
    const all = await secondReadFacts(db, from, to);
    // One first reader's page: their second reads only.
    const facts = radiologist === undefined ? all : all.filter((f) => (f.radiologistId ?? '(unknown)') === radiologist);
    const stats = computeStats(facts, { from, to, bucket });
    if (format === 'csv') {
      const day = (t: string) => t.slice(0, 10);
      res.type('text/csv; charset=utf-8');
      res.set('Content-Disposition', `attachment; filename="second-reads-${table}-${day(from)}-${day(to)}.csv"`);
      res.send(table === 'peer-review' ? peerReviewCsv(facts) : statsCsv(stats, table));
      return;
    }
    // Inter-reader agreement (Cohen's kappa) and arbitration outcomes (stats/kappa.ts).
    res.json({ ...stats, ...agreementStats(facts) });
  });
  return r;
}
