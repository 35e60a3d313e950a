import { Router } from 'express';
import { recordAudit } from '../audit/audit.repository.js';
import type { Db } from '../db/database.js';
import { ErrorCode, GatewayError } from '../errors.js';
import { MessageStatus } from '../states.js';
import { requireRole } from './auth.js';

/**
 * POST /api/messages/{id}/dismiss: a held message (e.g. a patient-id
 * conflict) was reviewed and set aside; it leaves the review list and its
 * items stay unlinked. The decision and its reason are audited.
 */
export function messageActionsRouter(db: Db, newId: () => string, clock: () => Date = () => new Date()): Router {
  const r = Router();
  r.post('/messages/:id/dismiss', requireRole('admin', 'qa'), async (req, res) => {
    const id = String(req.params['id']);
    const body = (typeof req.body === 'object' && req.body !== null ? req.body : {}) as Record<string, unknown>;
    const reason = body['reason'];
    if (typeof reason !== 'string' || reason.trim() === '' || reason.length > 2000) {
      throw new GatewayError(ErrorCode.invalidInput, 'reason is required (a non-empty string of at most 2000 characters)');
    }
    const now = clock().toISOString();
    await db.transaction().execute(async (trx) => {
      const m = await trx.selectFrom('hl7_messages').select(['status']).where('id', '=', id).executeTakeFirst();
      if (!m) throw new GatewayError(ErrorCode.notFound, 'no such message');
      const moved = await trx.updateTable('hl7_messages').set({ status: MessageStatus.dismissed, updated_at: now }).where('id', '=', id).where('status', '=', MessageStatus.held).executeTakeFirst();
      if (Number(moved.numUpdatedRows) !== 1) throw new GatewayError(ErrorCode.conflict, `only a held message can be dismissed (this one is ${m.status})`);
      await recordAudit(trx, newId(), now, { actor: req.principal!.name, action: 'message.dismissed', entityType: 'hl7-message', entityId: id, details: { reason: reason.trim() } });
    });
    res.json({ id, status: MessageStatus.dismissed });
  });
  return r;
}
