import { z } from 'zod';
import { Role } from '../config/schema.js';
import { PriorState } from '../priors/prior.table.js';
import { ARBITRATION_VERDICTS, ArbitrationState } from '../reports/arbitration.table.js';
import { radpeerScores } from '../reports/oru-builder.js';
import { PRIORITIES } from '../rules/rule.types.js';
import { CaseState, DeliveryState, OutboundState } from '../states.js';
import { ALL_ROLES, defineRoute, described, int, isoInstant, limitParam, nint, nstr, offsetParam, optionalReason, time } from './api-schema.js';
import { Reason } from './rules.schemas.js';
import { PrimaryReportForCase } from './studies.schemas.js';

const deliveryShape = {
  id: z.string(),
  destinationId: z.string(),
  state: z.enum(Object.values(DeliveryState)),
  attempts: int,
  lastError: nstr,
  deidentified: z.boolean(),
  instancesTotal: int,
  instancesSent: int,
  nextAttemptAt: described(time.nullable(), 'set while pending'),
  deliveredAt: time.nullable(),
  updatedAt: time,
};
export const Delivery = z.strictObject(deliveryShape).meta({ id: 'Delivery' });
export type DeliveryView = z.input<typeof Delivery>;
const DeliveryListItem = z.strictObject({ caseId: z.string(), studyInstanceUid: z.string(), ...deliveryShape }).meta({ id: 'DeliveryListItem' });

export const ExcludedInstance = z
  .strictObject({
    sopInstanceUid: described(nstr, 'for a reader of a de-identified case: the pseudonymous UID (null if none was stored)'),
    sopClassUid: z.string(),
    seriesDescription: described(nstr, 'as in the source; null for a reader of a de-identified case'),
    reason: described(z.string(), 'burned-in-risk, encapsulated-document, recognizable-features, free-text-object, opaque-data, phi-detected'),
    detail: described(nstr, 'the rule or the attribute paths where an identifier was found, never a value; null for a reader'),
    destinationId: z.string(),
    excludedAt: time,
  })
  .meta({ id: 'ExcludedInstance', description: 'An instance kept back from a de-identified delivery until a person releases it (admin, QA).' });
export type ExcludedInstanceView = z.input<typeof ExcludedInstance>;

const secondReportShape = {
  id: z.string(),
  version: described(z.number().int().min(1), '1 for the report, 2+ for addenda'),
  readerId: z.string(),
  text: z.string(),
  impression: nstr,
  radpeerScore: z.enum(radpeerScores),
  concordance: z.enum(['CONCORDANT', 'DISCORDANT']),
  discrepant: described(z.boolean(), 'RADPEER 2b, 3a or 3b'),
  addendum: z.boolean(),
  source: z.enum(['api', 'hl7']),
  createdAt: time,
};
export const SecondReport = z.strictObject(secondReportShape).meta({ id: 'SecondReport' });
export type SecondReportView = z.input<typeof SecondReport>;

export const WriteBack = z
  .strictObject({
    state: z.enum(Object.values(OutboundState)),
    attempts: int,
    lastError: nstr.optional(),
    controlId: nstr.optional(),
    response: nstr.optional(),
    updatedAt: time,
  })
  .meta({ description: 'lastError, controlId and response (about the real study) are left out for a reader of a de-identified case' });

export const Prior = z
  .strictObject({
    studyInstanceUid: described(nstr, 'reader view of a de-identified case: the pseudonym the pool got (null until sent)'),
    studyDate: described(nstr, 'DICOM StudyDate as stored (YYYYMMDD); null for a reader of a de-identified case'),
    modalities: z.array(z.string()),
    studyDescription: nstr,
    accessionNumber: nstr,
    state: z.enum(Object.values(PriorState)),
    detail: nstr,
    report: z
      .strictObject({ resultStatus: z.string(), observedAt: nstr.optional(), reportVersionId: z.string().optional() })
      .nullable()
      .meta({ description: 'the latest report the RIS sent for the prior; a reader of a de-identified case sees its status only' }),
  })
  .meta({ id: 'Prior', description: "A prior study of the case's patient fetched from the hospital PACS (read-only context, forwarded with the case)" });
export type PriorViewOut = z.input<typeof Prior>;

const arbitrationState = z.enum(Object.values(ArbitrationState));
const arbitrationVerdict = z.enum(ARBITRATION_VERDICTS);

/** Admin, QA and system see every field of an arbitration (src/reports/arbitration.view.ts). */
export const arbitrationStaffShape = {
  id: z.string(),
  state: arbitrationState,
  arbitratorId: nstr,
  unassignedReason: nstr,
  triggerScore: described(z.string(), "the second read's RADPEER score that asked for arbitration"),
  ruleIds: z.array(z.string()),
  readerGroup: nstr,
  verdict: arbitrationVerdict.nullable(),
  finalScore: described(nstr, 'RADPEER of the first read after arbitration'),
  text: nstr,
  decidedBy: nstr,
  createdAt: time,
  decidedAt: time.nullable(),
};

export const CaseArbitration = z
  .strictObject(arbitrationStaffShape)
  .partial()
  .required({ state: true })
  .meta({ id: 'CaseArbitration', description: 'staff: every field; the second reader: the state only' });

/** The third reader: blinded to both reads (no score, rule or reader); their own verdict once given. */
export const ArbitrationForArbitrator = z
  .strictObject({
    id: z.string(),
    caseId: z.string(),
    state: arbitrationState,
    arbitratorId: nstr,
    createdAt: time,
    verdict: arbitrationVerdict.nullable().optional(),
    finalScore: nstr.optional(),
    text: nstr.optional(),
    decidedAt: time.nullable().optional(),
  })
  .meta({ id: 'ArbitrationForArbitrator', description: 'the third reader: blinded to both reads (no score, rule or reader)' });
export type ArbitrationForArbitratorView = z.input<typeof ArbitrationForArbitrator>;

export const Case = z
  .strictObject({
    id: z.string(),
    studyInstanceUid: described(nstr, 'for a reader whose copy was de-identified: the pseudonym they received (null until it is stored)'),
    accessionNumber: nstr,
    patientId: described(nstr, 'reader view of a de-identified case only: the pseudonym').optional(),
    deidentified: described(z.literal(true), 'reader view of a de-identified case only (true)').optional(),
    state: z.enum(Object.values(CaseState)),
    ruleIds: z.array(z.string()),
    reasons: z.array(Reason),
    priority: z.enum(PRIORITIES),
    slaHours: z.number(),
    dueAt: time,
    readerId: nstr,
    destinationId: nstr,
    readerGroup: nstr,
    blinded: z.boolean(),
    deidentify: described(z.boolean().nullable(), 'null: the destination decides'),
    discrepant: z.boolean(),
    ruleSetVersion: nint,
    slaBreachedAt: time.nullable(),
    escalationLevel: described(z.number().int().min(0).max(2), '0 none, 1 reassigned after an SLA breach, 2 notified'),
    deliveries: z.array(Delivery),
    excludedInstances: z.array(ExcludedInstance),
    priors: z.array(Prior),
    arbitration: described(CaseArbitration.nullable(), 'null: no arbitration; left out where the case is shown without it').optional(),
    secondReport: z.strictObject({ ...secondReportShape, versions: int }).nullable(),
    writeBack: WriteBack.nullable(),
    createdBy: z.string(),
    createdAt: time,
    updatedAt: time,
  })
  .meta({ id: 'Case', description: 'A second-read case. A reader sees the cases assigned to them, under pseudonyms when their copy was de-identified.' });
export type CaseView = z.input<typeof Case>;

/** A case as its third reader (arbitration) sees it: what identifies the study, nothing of either read. */
export const ArbitratorCase = z
  .strictObject({
    id: z.string(),
    studyInstanceUid: nstr,
    accessionNumber: nstr,
    patientId: nstr.optional(),
    deidentified: z.literal(true).optional(),
    state: z.enum(Object.values(CaseState)),
    priority: z.enum(PRIORITIES),
    dueAt: time,
    destinationId: nstr,
    deliveries: z.array(Delivery),
    createdAt: time,
    updatedAt: time,
    arbitration: ArbitrationForArbitrator,
  })
  .meta({ id: 'ArbitratorCase', description: 'A case as its third reader sees it: what identifies the study, nothing of either read' });
export type ArbitratorCaseView = z.input<typeof ArbitratorCase>;

/** What GET /api/cases answers per case: the case, or for its third reader the blinded ArbitratorCase. */
export const CaseForCaller = z.union([Case, ArbitratorCase]);
export type CaseForCallerView = z.input<typeof CaseForCaller>;

export const ManualCaseRequest = z
  .strictObject({
    studyInstanceUid: z.string().trim().min(1).max(64).optional(),
    accessionNumber: z.string().trim().min(1).max(64).optional(),
    reason: z.string().trim().min(1, 'required').max(2000),
    destinationId: z.string().trim().min(1).max(128).optional(),
    priority: z.enum(PRIORITIES).optional(),
  })
  // Runs even when a field failed, so one answer lists every problem.
  .refine((b) => !!b.studyInstanceUid || !!b.accessionNumber, {
    path: ['studyInstanceUid'],
    message: 'give studyInstanceUid or accessionNumber',
    when: () => true,
  })
  .meta({ id: 'ManualCaseRequest', description: 'studyInstanceUid or accessionNumber is required' });

/** The text is stored as written: blank is refused, nothing is trimmed. */
const nonBlank = (max: number) =>
  z
    .string()
    .min(1)
    .max(max)
    .refine((s) => s.trim() !== '', 'must not be blank');

export const SecondReportInput = z
  .strictObject({
    text: nonBlank(200_000),
    radpeerScore: described(z.enum(radpeerScores), 'RADPEER 2016'),
    readerId: described(nonBlank(128), 'system tokens name the reader; a reader token reports under its own id').nullish(),
    impression: nonBlank(50_000).nullish(),
    findings: nonBlank(200_000).nullish(),
    addendum: described(z.boolean(), 'true for an addendum to a case already reported').optional(),
    keyImages: described(
      z
        .array(
          z
            .string()
            .max(64)
            .regex(/^[0-9]+(\.[0-9]+)*$/, 'must be a SOP Instance UID (digits and dots)'),
        )
        .max(1000),
      'SOP Instance UIDs of the study the reader marked (at most 1000): sent as a Key Object Selection when outputs.dicomSr is set',
    ).nullish(),
  })
  .meta({ id: 'SecondReportInput' });

const Timeline = z
  .strictObject({
    caseId: z.string(),
    items: z.array(
      z
        .strictObject({
          at: time,
          kind: described(
            z.string(),
            'received, stable, order, report-linked, ai-result, decision, forwarding, forwarded, delivery-failed, assigned, assignment-ended, reported, written-back, notified, write-back-failed, write-back-pending, audit',
          ),
          title: z.string(),
          actor: nstr.optional(),
          details: z.record(z.string(), z.unknown()).optional(),
        })
        .meta({ id: 'TimelineEvent' }),
    ),
  })
  .meta({ id: 'CaseTimeline' });

const reasonOnly = z.strictObject({ reason: optionalReason });
const caseId = z.object({ id: described(z.string(), 'case id') });
const qa = [Role.admin, Role.qa] as const;

export const casesRoutes = {
  listCases: defineRoute({
    method: 'get',
    path: '/api/cases',
    operationId: 'listCases',
    summary: 'Second-read cases (a reader sees only the cases assigned to them)',
    tag: 'cases',
    roles: ALL_ROLES,
    query: z.object({
      state: z.enum(Object.values(CaseState)).optional(),
      readerId: described(z.string(), 'ignored for a reader token').optional(),
      studyInstanceUid: z.string().optional(),
      ruleId: described(z.string(), 'cases one of whose reasons is this rule').optional(),
      priority: described(z.string(), `${PRIORITIES.join(', ')}; another value matches nothing`).optional(),
      modality: z.string().optional(),
      dueBefore: described(isoInstant, 'ISO-8601: cases due before this time').optional(),
      limit: limitParam(100, 1000),
      offset: offsetParam,
    }),
    responses: { 200: { description: 'cases (a third reader gets the blinded ArbitratorCase)', schema: z.strictObject({ items: z.array(CaseForCaller) }) } },
  }),
  requestCase: defineRoute({
    method: 'post',
    path: '/api/cases',
    operationId: 'requestCase',
    summary: 'Manual second-read request',
    description: '201 with a new case; 200 with the open case of the study, to which the reason was added. Forwarded once the study is stable.',
    tag: 'cases',
    roles: [Role.admin, Role.qa, Role.system],
    body: ManualCaseRequest,
    responses: { 201: { description: 'case opened', schema: Case }, 200: { description: 'reason added to the open case', schema: Case } },
    errors: { 404: 'no study with that StudyInstanceUID / accession number', 409: 'several studies share the accession number' },
  }),
  getCase: defineRoute({
    method: 'get',
    path: '/api/cases/:id',
    operationId: 'getCase',
    summary: 'One case with deliveries, latest second report and write-back',
    description: 'A reader gets 403 for a case not assigned to them; its third reader (arbitration) gets the blinded ArbitratorCase.',
    tag: 'cases',
    roles: ALL_ROLES,
    params: caseId,
    responses: { 200: { description: 'the case', schema: CaseForCaller } },
    errors: { 404: 'no such case' },
  }),
  submitSecondReport: defineRoute({
    method: 'post',
    path: '/api/cases/:id/report',
    operationId: 'submitSecondReport',
    summary: 'Store the second report (or an addendum) and queue the HL7 write-back',
    description: 'A reader reports only on cases assigned to them (403 otherwise).',
    tag: 'cases',
    roles: [Role.reader, Role.system],
    params: caseId,
    body: SecondReportInput,
    responses: { 201: { description: 'stored', schema: z.strictObject({ report: SecondReport, case: Case }).meta({ id: 'SecondReportResult' }) } },
    errors: { 404: 'no such case', 409: 'the case takes no report in its state, or the second reader is the first reader' },
  }),
  declineCase: defineRoute({
    method: 'post',
    path: '/api/cases/:id/decline',
    operationId: 'declineCase',
    summary: 'A reader declines a case assigned to them; it is reassigned or held',
    tag: 'cases',
    roles: [Role.reader],
    params: caseId,
    body: reasonOnly,
    bodyOptional: true,
    responses: {
      200: {
        description: 'reassigned or held',
        schema: z
          .strictObject({ readerId: described(nstr, 'the reader it went to; null when nobody else could take it'), held: z.boolean() })
          .meta({ id: 'DeclineResult' }),
      },
    },
    errors: { 404: 'no such case', 409: 'the case is not being read' },
  }),
  cancelCase: defineRoute({
    method: 'post',
    path: '/api/cases/:id/cancel',
    operationId: 'cancelCase',
    summary:
      'Cancel an open (or failed) case: stops its deliveries (after the instance in flight), deltas and write-backs; tells each pool with an HL7 channel that received it',
    tag: 'cases',
    roles: qa,
    params: caseId,
    body: reasonOnly,
    bodyOptional: true,
    responses: { 200: { description: 'cancelled', schema: Case } },
    errors: { 404: 'no such case', 409: 'the case is no longer open' },
  }),
  retryCase: defineRoute({
    method: 'post',
    path: '/api/cases/:id/retry',
    operationId: 'retryCase',
    summary: 'Retry dead or held deliveries, or re-plan a held case',
    tag: 'cases',
    roles: [Role.admin, Role.qa, Role.system],
    params: caseId,
    responses: { 200: { description: 'queued again', schema: Case } },
    errors: { 404: 'no such case', 409: 'nothing to retry' },
  }),
  releaseExcludedInstance: defineRoute({
    method: 'post',
    path: '/api/cases/:id/excluded/:sopInstanceUid/release',
    operationId: 'releaseExcludedInstance',
    summary: 'Send an instance kept back from a de-identified delivery, after a person looked at it (audited)',
    description:
      "The instance is queued in its delivery again (a delta) and de-identified with the reviewer's release; the verifier still runs. An instance excluded as phi-detected cannot be released (409).",
    tag: 'cases',
    roles: qa,
    params: z.object({
      id: described(z.string(), 'case id'),
      sopInstanceUid: described(z.string(), 'the original SOP Instance UID, as listed in excludedInstances'),
    }),
    body: reasonOnly,
    bodyOptional: true,
    responses: { 200: { description: 'released and queued', schema: Case } },
    errors: { 404: 'no such case, or no such instance in its study', 409: 'not excluded, already released, phi-detected, or the case is cancelled' },
  }),
  getCaseTimeline: defineRoute({
    method: 'get',
    path: '/api/cases/:id/timeline',
    operationId: 'getCaseTimeline',
    summary: "The case's story: arrival, HL7, decisions, deliveries, assignments, reports, write-backs, audit",
    description: 'Opening it is audited as a view of the case (case.viewed). Report text is not included.',
    tag: 'cases',
    roles: qa,
    params: caseId,
    responses: { 200: { description: 'the timeline, oldest first', schema: Timeline } },
    errors: { 404: 'no such case' },
  }),
  getCasePrimaryReport: defineRoute({
    method: 'get',
    path: '/api/cases/:id/primary-report',
    operationId: 'getCasePrimaryReport',
    summary: 'The current primary report of the case (a PHI view, audited)',
    description: 'A reader gets it only for a case assigned to them, and while the case is blinded only after their own second report (403 otherwise).',
    tag: 'cases',
    roles: [Role.admin, Role.qa, Role.reader],
    params: caseId,
    responses: {
      200: {
        description: 'the report',
        schema: z.strictObject({ caseId: z.string(), blinded: z.boolean(), report: PrimaryReportForCase }).meta({ id: 'CasePrimaryReport' }),
      },
    },
    errors: { 404: 'no such case, or no primary report linked to its study' },
  }),
  reassignCase: defineRoute({
    method: 'post',
    path: '/api/cases/:id/reassign',
    operationId: 'reassignCase',
    summary: 'Give a case being read to another reader (named, or the next one the assignment picks)',
    tag: 'cases',
    roles: qa,
    params: caseId,
    body: z.strictObject({ readerId: z.string().max(128).nullish(), reason: optionalReason }),
    bodyOptional: true,
    responses: {
      200: { description: 'reassigned', schema: z.strictObject({ readerId: z.string(), previousReaderId: nstr, case: Case }).meta({ id: 'ReassignResult' }) },
    },
    errors: { 404: 'no such case', 409: 'the case is not being read, the reader already has it, is its first reader or reads from another destination' },
  }),
  retryCaseWriteBack: defineRoute({
    method: 'post',
    path: '/api/cases/:id/retry-write-back',
    operationId: 'retryCaseWriteBack',
    summary: 'Queue the failed write-back of a case again',
    tag: 'cases',
    roles: qa,
    params: caseId,
    responses: {
      200: {
        description: 'queued again',
        schema: z.strictObject({ messages: described(int, 'failed write-backs queued again'), case: Case }).meta({ id: 'RetryWriteBackResult' }),
      },
    },
    errors: { 404: 'no such case', 409: 'no failed write-back for this case' },
  }),
  listDeliveries: defineRoute({
    method: 'get',
    path: '/api/deliveries',
    operationId: 'listDeliveries',
    summary: 'Delivery jobs (a study to a destination)',
    tag: 'cases',
    roles: [Role.admin, Role.qa, Role.system],
    query: z.object({
      state: z.enum(Object.values(DeliveryState)).optional(),
      destinationId: z.string().optional(),
      limit: limitParam(100, 1000),
      offset: offsetParam,
    }),
    responses: { 200: { description: 'deliveries', schema: z.strictObject({ items: z.array(DeliveryListItem) }) } },
  }),
};
