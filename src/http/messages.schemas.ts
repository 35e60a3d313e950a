import { z } from 'zod';
import { Role } from '../config/schema.js';
import { MessageStatus } from '../states.js';
import { defineRoute, described, limitParam, nstr, offsetParam, requiredReason, time } from './api-schema.js';

const STATUSES = Object.values(MessageStatus);

export const Hl7Message = z
  .strictObject({
    id: z.string(),
    status: z.enum(STATUSES),
    reason: nstr,
    type: z.string(),
    kind: z.string(),
    controlId: z.string(),
    sendingApplication: z.string(),
    sendingFacility: z.string(),
    hl7Version: nstr,
    ackCode: z.string(),
    studyInstanceUid: nstr,
    accessionNumber: nstr,
    receivedAt: time,
    updatedAt: time,
    raw: described(z.string(), 'the message as received (PHI): only with includeRaw=true, admin only').optional(),
  })
  .meta({ id: 'Hl7Message' });
export type Hl7MessageView = z.input<typeof Hl7Message>;

/** `status=held,rejected`: a comma-separated list; default held and rejected (what needs review). */
const statusList = described(
  z
    .string()
    .transform((v) =>
      v
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean),
    )
    .pipe(z.array(z.enum(STATUSES))),
  `comma-separated list of ${STATUSES.join(', ')}; default held,rejected`,
);

export const messagesRoutes = {
  listMessages: defineRoute({
    method: 'get',
    path: '/api/messages',
    operationId: 'listMessages',
    summary: 'Received HL7 messages (default: held and rejected ones, which need review)',
    tag: 'messages',
    roles: [Role.admin, Role.qa],
    query: z.object({
      status: statusList.optional(),
      includeRaw: described(z.enum(['true', '1', 'false', '0']), 'adds the raw message (PHI): admin only, 403 for qa').optional(),
      limit: limitParam(100, 1000),
      offset: offsetParam,
    }),
    responses: { 200: { description: 'messages', schema: z.strictObject({ items: z.array(Hl7Message) }) } },
  }),
  dismissMessage: defineRoute({
    method: 'post',
    path: '/api/messages/:id/dismiss',
    operationId: 'dismissMessage',
    summary: 'Set a held HL7 message aside after review (audited); its items stay unlinked',
    tag: 'messages',
    roles: [Role.admin, Role.qa],
    params: z.object({ id: described(z.string(), 'message id') }),
    body: z.strictObject({ reason: requiredReason }),
    responses: {
      200: { description: 'dismissed', schema: z.strictObject({ id: z.string(), status: z.literal(MessageStatus.dismissed) }).meta({ id: 'DismissResult' }) },
    },
    errors: { 404: 'no such message', 409: 'the message is not held' },
  }),
};
