import { Router } from 'express';
import type { Db } from '../db/database.js';
import { ErrorCode, GatewayError } from '../errors.js';
import { listMessages } from '../hl7/hl7.repository.js';
import type { Hl7MessageRow } from '../hl7/hl7.table.js';
import { MessageStatus } from '../states.js';
import { mount } from './api-schema.js';
import { messagesRoutes as spec, type Hl7MessageView } from './messages.schemas.js';

/**
 * GET /api/messages: received HL7 messages needing attention (held, rejected)
 * or any other status asked for. The raw text is PHI: only an admin gets it,
 * and only when asking for it.
 */
export function messagesRouter(db: Db): Router {
  const r = Router();
  mount(r, spec.listMessages, async ({ query, principal }) => {
    const includeRaw = query.includeRaw === 'true' || query.includeRaw === '1';
    if (includeRaw && principal.role !== 'admin') throw new GatewayError(ErrorCode.forbidden, 'includeRaw is for the admin role');
    const statuses = query.status?.length ? query.status : [MessageStatus.held, MessageStatus.rejected];
    const rows = await listMessages(db, { statuses, limit: query.limit, offset: query.offset });
    return { status: 200, body: { items: rows.map((m) => presentMessage(m, includeRaw)) } };
  });
  return r;
}

function presentMessage(m: Hl7MessageRow, includeRaw: boolean): Hl7MessageView {
  return {
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
    ...(includeRaw ? { raw: m.raw } : {}),
  };
}
