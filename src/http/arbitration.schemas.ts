import { z } from 'zod';
import { Role } from '../config/schema.js';
import { ARBITRATION_VERDICTS, ArbitrationState } from '../reports/arbitration.table.js';
import { radpeerScores } from '../reports/oru-builder.js';
import { CaseState } from '../states.js';
import { defineRoute, described, limitParam, nstr, optionalReason } from './api-schema.js';
import { ArbitrationForArbitrator, ArbitratorCase, arbitrationStaffShape } from './cases.schemas.js';

export const ArbitrationForStaff = z
  .strictObject({ caseId: z.string(), caseState: z.enum(Object.values(CaseState)), ...arbitrationStaffShape })
  .meta({ id: 'ArbitrationForStaff', description: 'admin, QA: every field, with the score that asked for arbitration' });

/** GET /api/cases/{id}/arbitration for the third reader: their blinded view with the blinded case. */
const ArbitrationWithCase = z
  .strictObject({ ...ArbitrationForArbitrator.shape, case: ArbitratorCase })
  .meta({ id: 'ArbitrationWithCase', description: 'the third reader: the arbitration and the case, blinded to both reads' });

const ArbitrationReadings = z
  .strictObject({
    caseId: z.string(),
    first: z.strictObject({ text: z.string() }).nullable(),
    firstWithheld: described(z.string(), 'for a reader who got the study de-identified: why the first report is not shown').optional(),
    second: z.strictObject({ text: z.string(), impression: nstr }).nullable(),
  })
  .meta({ id: 'ArbitrationReadings', description: 'the two reads as text, without score or reader' });

/** The verdict. The service checks the same again (arbitration.service.ts parse), for its other callers. */
export const ArbitrationVerdictInput = z
  .strictObject({
    verdict: z.enum(ARBITRATION_VERDICTS),
    text: z
      .string()
      .max(50_000)
      .refine((s) => s.trim() !== '', 'must not be blank'),
    radpeerScore: described(z.enum(radpeerScores), 'RADPEER of the first read: required with other; 1 (or left out) with agree-first').optional(),
  })
  // Run even when a field failed, so one answer lists every problem.
  .refine((b) => b.verdict !== 'other' || b.radpeerScore !== undefined, {
    path: ['radpeerScore'],
    message: 'required with verdict other: your RADPEER score of the first read',
    when: () => true,
  })
  .refine((b) => b.verdict !== 'agree-first' || b.radpeerScore === undefined || b.radpeerScore === '1', {
    path: ['radpeerScore'],
    message: 'agreeing with the first read means RADPEER 1',
    when: () => true,
  })
  .meta({ id: 'ArbitrationVerdictInput' });

const caseId = z.object({ id: described(z.string(), 'case id') });
const arbitrating = [Role.admin, Role.qa, Role.reader] as const;
const StaffOrArbitrator = z.union([ArbitrationForStaff, ArbitrationForArbitrator]);

export const arbitrationRoutes = {
  listArbitrations: defineRoute({
    method: 'get',
    path: '/api/arbitrations',
    operationId: 'listArbitrations',
    summary: 'Arbitrations: a reader gets their own open ones (blinded), staff all',
    tag: 'cases',
    roles: arbitrating,
    query: z.object({ state: z.enum(Object.values(ArbitrationState)).optional(), limit: limitParam(100, 1000) }),
    responses: { 200: { description: 'arbitrations', schema: z.strictObject({ items: z.array(StaffOrArbitrator) }) } },
  }),
  getCaseArbitration: defineRoute({
    method: 'get',
    path: '/api/cases/:id/arbitration',
    operationId: 'getCaseArbitration',
    summary: "The case's arbitration: staff see everything, its third reader a blinded view",
    description: 'A reader who is not its third reader gets 403.',
    tag: 'cases',
    roles: arbitrating,
    params: caseId,
    responses: { 200: { description: 'the arbitration', schema: z.union([ArbitrationForStaff, ArbitrationWithCase]) } },
    errors: { 404: 'no such case, or it has no arbitration' },
  }),
  decideCaseArbitration: defineRoute({
    method: 'post',
    path: '/api/cases/:id/arbitration',
    operationId: 'decideCaseArbitration',
    summary: "The third reader's verdict (or admin/QA's): closes the discrepancy and queues the write-back, which carries it",
    tag: 'cases',
    roles: arbitrating,
    params: caseId,
    body: ArbitrationVerdictInput,
    responses: { 200: { description: 'decided', schema: StaffOrArbitrator } },
    errors: { 404: 'no such case, or it has no arbitration', 409: 'the arbitration is already decided or cancelled' },
  }),
  getArbitrationReadings: defineRoute({
    method: 'get',
    path: '/api/cases/:id/arbitration/readings',
    operationId: 'getArbitrationReadings',
    summary: 'The two reads as text (no score, no reader) for the third reader to decide between; audited',
    tag: 'cases',
    roles: arbitrating,
    params: caseId,
    responses: { 200: { description: 'the readings', schema: ArbitrationReadings } },
    errors: { 404: 'no such case, or it has no arbitration', 409: 'the arbitration is not open' },
  }),
  assignCaseArbitration: defineRoute({
    method: 'post',
    path: '/api/cases/:id/arbitration/assign',
    operationId: 'assignCaseArbitration',
    summary: 'Name the third reader of an open or unassigned arbitration (or let the assignment choose); audited',
    tag: 'cases',
    roles: [Role.admin, Role.qa],
    params: caseId,
    body: z.strictObject({ readerId: described(z.string().trim().max(128), 'left out or empty: the assignment chooses').nullish(), reason: optionalReason }),
    bodyOptional: true,
    responses: { 200: { description: 'assigned', schema: ArbitrationForStaff } },
    errors: { 404: 'no such case', 409: 'no open arbitration, or the reader may not arbitrate it' },
  }),
};
