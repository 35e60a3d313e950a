import { Router } from 'express';
import type { Db } from '../db/database.js';
import { listAudit, presentAudit } from '../audit/audit.repository.js';
import { requireRole } from './auth.js';
import { queryInt, queryString, queryTime } from './query.js';

export function auditRouter(db: Db): Router {
  const r = Router();
  r.get('/audit', requireRole('admin', 'qa'), async (req, res) => {
    const q = req.query;
    const rows = await listAudit(db, {
      entityType: queryString(q['entityType']),
      entityId: queryString(q['entityId']),
      actor: queryString(q['actor']),
      action: queryString(q['action']),
      from: queryTime(q['from'], 'from'),
      to: queryTime(q['to'], 'to'),
      limit: queryInt(q['limit'], 200, 1, 5000, 'limit'),
    });
    res.json({ items: rows.map(presentAudit) });
  });
  return r;
}
