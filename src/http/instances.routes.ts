import { Router } from 'express';
import type { InstanceService } from '../instances/instance.service.js';
import { requireRole } from './auth.js';

/** GET /api/instances: every gateway instance on this database, its heartbeat and what it has claimed (console). */
export function instancesRouter(instances: InstanceService): Router {
  const r = Router();
  r.get('/instances', requireRole('admin', 'qa'), async (_req, res) => {
    res.json({ self: instances.id, items: await instances.list() });
  });
  return r;
}
