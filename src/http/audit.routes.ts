import { Router } from 'express';
import type { Db } from '../db/database.js';
import { listAudit, presentAudit } from '../audit/audit.repository.js';
import { mount } from './api-schema.js';
import { consoleRoutes as spec } from './console.schemas.js';

export function auditRouter(db: Db): Router {
  const r = Router();
  mount(r, spec.listAudit, async ({ query }) => {
    const rows = await listAudit(db, query);
    // audit.repository's presenter is untyped; its fields are the AuditEvent schema's.
    return {
      status: 200,
      body: {
        items: rows.map(
          (row) =>
            presentAudit(row) as { id: string; at: string; actor: string; action: string; entityType: string; entityId: string | null; details: unknown },
        ),
      },
    };
  });
  return r;
}
