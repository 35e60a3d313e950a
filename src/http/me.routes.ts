import { Router } from 'express';
import type { GatewayConfig } from '../config/schema.js';
import { mount } from './api-schema.js';
import { consoleRoutes as spec } from './console.schemas.js';

/** GET /api/me: who the token is, so the console shows what the role may do (the server still checks every call). */
export function meRouter(readers: GatewayConfig['readers']): Router {
  const r = Router();
  mount(r, spec.getMe, ({ principal: p }) => {
    const reader = p.readerId ? readers.find((x) => x.id === p.readerId) : undefined;
    return {
      status: 200,
      body: {
        name: p.name,
        role: p.role,
        readerId: p.readerId ?? null,
        reader: reader ? { id: reader.id, name: reader.name, modalities: reader.modalities, subspecialties: reader.subspecialties } : null,
        readers: p.role === 'admin' || p.role === 'qa' ? readers.map((x) => ({ id: x.id, name: x.name, destination: x.destination ?? null })) : [],
      },
    };
  });
  return r;
}
