import { Router } from 'express';
import type { InstanceService } from '../instances/instance.service.js';
import { mount } from './api-schema.js';
import { consoleRoutes as spec } from './console.schemas.js';

/** GET /api/instances: every gateway instance on this database, its heartbeat and what it has claimed (console). */
export function instancesRouter(instances: InstanceService): Router {
  const r = Router();
  mount(r, spec.listGatewayInstances, async () => ({ status: 200, body: { self: instances.id, items: await instances.list() } }));
  return r;
}
