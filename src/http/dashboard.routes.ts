import { Router } from 'express';
import { dashboardSummary } from '../dashboard/dashboard.repository.js';
import type { Db } from '../db/database.js';
import type { CaseState } from '../states.js';
import { mount } from './api-schema.js';
import { consoleRoutes as spec } from './console.schemas.js';

/** GET /api/dashboard: the console's live counts (no PHI: counts, states and destination ids only). */
export function dashboardRouter(db: Db, clock: () => Date = () => new Date()): Router {
  const r = Router();
  mount(r, spec.getDashboard, async () => {
    const summary = await dashboardSummary(db, clock());
    // dashboardSummary counts every case state (zeros included); its type says only Record<string, number>.
    return { status: 200, body: { ...summary, casesByState: summary.casesByState as Record<CaseState, number> } };
  });
  return r;
}
