import { Router } from 'express';
import { recordAudit } from '../audit/audit.repository.js';
import type { Db } from '../db/database.js';
import { ErrorCode, GatewayError } from '../errors.js';
import { dismissHeldMessage, messageStatus } from '../hl7/held-message.repository.js';
import { MessageStatus } from '../states.js';
import { mount } from './api-schema.js';
import { messagesRoutes as spec } from './messages.schemas.js';

/**
 * POST /api/messages/{id}/dismiss: a held message (e.g. a patient-id
 * conflict) was reviewed and set aside; it leaves the review list and its
 * items stay unlinked. The decision and its reason are audited.
 */
export function messageActionsRouter(db: Db, newId: () => string, clock: () => Date = () => new Date()): Router {
  const r = Router();
  mount(r, spec.dismissMessage, async ({ params: { id }, body: { reason }, principal }) => {
    const now = clock().toISOString();
    await db.transaction().execute(async (trx) => {
      const status = await messageStatus(trx, id);
      if (!status) throw new GatewayError(ErrorCode.notFound, 'no such message');
      if (!(await dismissHeldMessage(trx, id, now))) throw new GatewayError(ErrorCode.conflict, `only a held message can be dismissed (this one is ${status})`);
      await recordAudit(trx, newId(), now, {
        actor: principal.name,
        action: 'message.dismissed',
        entityType: 'hl7-message',
        entityId: id,
        details: { reason },
      });
    });
    return { status: 200, body: { id, status: MessageStatus.dismissed } };
  });
  return r;
}
