import { Router } from 'express';
import type { Db } from '../db/database.js';
import { ErrorCode, GatewayError } from '../errors.js';
import { listMessages } from '../hl7/hl7.repository.js';
import type { Hl7MessageRow } from '../hl7/hl7.table.js';
import { MessageStatus } from '../states.js';
import { requireRole } from './auth.js';

/**
 * GET /api/messages: received HL7 messages needing attention (held, rejected)
 * or any other status asked for. The raw text is PHI: only an admin gets it,
 * and only when asking for it.
 */
export function messagesRouter(db: Db): Router {
  const r = Router();
  r.get('/messages', requireRole('admin', 'qa'), async (req, res) => {
    const q = req.query;
    const statuses = parseStatuses(q['status']);
    const includeRaw = q['includeRaw'] === 'true' || q['includeRaw'] === '1';
    if (includeRaw && req.principal?.role !== 'admin') throw new GatewayError(ErrorCode.forbidden, 'includeRaw is for the admin role');
    const limit = int(q['limit'], 100, 1, 1000, 'limit');
    const offset = int(q['offset'], 0, 0, Number.MAX_SAFE_INTEGER, 'offset');
    const rows = await listMessages(db, { statuses, limit, offset });
    res.json({ items: rows.map((m) => presentMessage(m, includeRaw)) });
  });
  return r;
}

function presentMessage(m: Hl7MessageRow, includeRaw: boolean): Record<string, unknown> {
  const out: Record<string, unknown> = {
    id: m.id,
    status: m.status,
    reason: m.reason,
    type: m.message_type,
    kind: m.kind,
    controlId: m.control_id,
    sendingApplication: m.sender_application,
    sendingFacility: m.sender_facility,
    hl7Version: m.hl7_version,
    ackCode: m.ack_code,
    studyInstanceUid: m.study_instance_uid,
    accessionNumber: m.accession_number,
    receivedAt: m.received_at,
    updatedAt: m.updated_at,
  };
  if (includeRaw) out['raw'] = m.raw;
  return out;
}

function parseStatuses(v: unknown): MessageStatus[] {
  if (v === undefined || v === '') return [MessageStatus.held, MessageStatus.rejected];
  const list = (Array.isArray(v) ? v : String(v).split(',')).map((s) => String(s).trim()).filter(Boolean);
  const known = Object.values(MessageStatus) as string[];
  for (const s of list) {
    if (!known.includes(s)) throw new GatewayError(ErrorCode.invalidInput, `status must be one of ${known.join(', ')}`);
  }
  return list as MessageStatus[];
}

function int(v: unknown, dflt: number, min: number, max: number, name: string): number {
  if (v === undefined) return dflt;
  const n = typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new GatewayError(ErrorCode.invalidInput, `${name} must be an integer from ${min} to ${max}`);
  return n;
}
