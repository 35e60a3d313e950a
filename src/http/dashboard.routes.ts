import { Router } from 'express';
import { dashboardSummary } from '../dashboard/dashboard.repository.js';
import type { Db } from '../db/database.js';
import { requireRole } from './auth.js';

/** GET /api/dashboard: the console's live counts (no PHI: counts, states and destination ids only). */
export function dashboardRouter(db: Db, clock: () => Date = () => new Date()): Router {
  const r = Router();
  r.get('/dashboard', requireRole('admin', 'qa'), async (_req, res) => {
    res.json(await dashboardSummary(db, clock()));
  });
  return r;
}
