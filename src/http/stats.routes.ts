import { Router } from 'express';
import type { Db } from '../db/database.js';
import { ErrorCode, GatewayError } from '../errors.js';
import { secondReadFacts } from '../stats/stats.repository.js';
import { computeStats, peerReviewCsv, statsCsv } from '../stats/stats.js';
import { mount } from './api-schema.js';
import { consoleRoutes as spec } from './console.schemas.js';
import { agreementStats } from '../stats/kappa.js';

const DAY = 86_400_000;

/**
 * GET /api/stats: second reads, discordance (RADPEER 2+ and 2b+) per first
 * reader, modality and second reader, turnaround percentiles, and the same
 * over time. `format=csv` answers one table (`table=`) as text/csv.
 */
export function statsRouter(db: Db, clock: () => Date = () => new Date()): Router {
  const r = Router();
  mount(r, spec.getStats, async ({ query: q }, _req, res) => {
    const now = clock().getTime();
    const to = q.to ?? new Date(now + 1).toISOString();
    const from = q.from ?? new Date(Date.parse(to) - 30 * DAY).toISOString();
    if (from >= to) throw new GatewayError(ErrorCode.invalidInput, 'from must be before to');
    if (Date.parse(to) - Date.parse(from) > 3 * 366 * DAY) throw new GatewayError(ErrorCode.invalidInput, 'the period may be at most three years');
    const bucket = q.bucket ?? (Date.parse(to) - Date.parse(from) > 92 * DAY ? 'week' : 'day');
    const all = await secondReadFacts(db, from, to);
    // One first reader's page: their second reads only.
    const facts = q.radiologist === undefined ? all : all.filter((f) => (f.radiologistId ?? '(unknown)') === q.radiologist);
    const stats = computeStats(facts, { from, to, bucket });
    if (q.format === 'csv') {
      const day = (t: string) => t.slice(0, 10);
      res.type('text/csv; charset=utf-8');
      res.set('Content-Disposition', `attachment; filename="second-reads-${q.table}-${day(from)}-${day(to)}.csv"`);
      res.send(q.table === 'peer-review' ? peerReviewCsv(facts) : statsCsv(stats, q.table));
      return;
    }
    // Inter-reader agreement (Cohen's kappa) and arbitration outcomes (stats/kappa.ts).
    return { status: 200, body: { ...stats, ...agreementStats(facts) } };
  });
  return r;
}
