import { z } from 'zod';
import { Role } from '../config/schema.js';
import { PRIORITIES } from '../rules/rule.types.js';
import { StudyState } from '../states.js';
import { Verdict } from '../studies/completeness.js';
import { MppsStatus } from '../studies/mpps.table.js';
import { defineRoute, described, int, limitParam, nint, nstr, offsetParam, requiredReason, time } from './api-schema.js';
import { Reason } from './rules.schemas.js';

export const CodedValue = z.strictObject({ code: nstr, text: nstr, system: nstr }).meta({ id: 'CodedValue' });
const procedure = z.strictObject({ code: nstr, text: nstr }).nullable();

const studySummaryShape = {
  studyInstanceUid: z.string(),
  accessionNumber: nstr,
  patientId: nstr,
  modalities: z.array(z.string()),
  bodyParts: z.array(z.string()),
  studyDescription: nstr,
  studyDate: described(nstr, 'DICOM StudyDate as stored (YYYYMMDD)'),
  instanceCount: int,
  lateInstanceCount: described(int, 'instances received after the study was declared stable'),
  sizeBytes: int,
  state: z.enum(Object.values(StudyState)),
  callingAe: nstr,
  firstReceivedAt: time,
  lastReceivedAt: time,
  stableAt: time.nullable(),
  issuerOfPatientId: described(nstr, 'Issuer of Patient ID (0010,0021): the authority of patientId'),
  otherPatientIds: z.array(
    z.strictObject({ id: z.string(), issuer: nstr, type: nstr }).meta({ description: 'an item of Other Patient IDs Sequence (0010,1002)' }),
  ),
  holdReason: described(nstr, 'set while state is held: identity-conflict, iocm-incorrect-patient, ...'),
  holdDetail: described(nstr, 'which attributes changed (names, never values)'),
  heldAt: time.nullable(),
};

export const StudySummary = z.strictObject(studySummaryShape).meta({ id: 'StudySummary', description: 'A study as listed (GET /api/studies)' });
export type StudySummaryView = z.input<typeof StudySummary>;

export const Series = z
  .strictObject({ seriesInstanceUid: z.string(), modality: nstr, bodyPartExamined: nstr, seriesNumber: nint, seriesDescription: nstr, instanceCount: int })
  .meta({ id: 'Series' });

const Order = z
  .strictObject({
    accessionNumber: nstr,
    placerOrderNumber: nstr,
    fillerOrderNumber: nstr,
    orderControl: nstr,
    orderStatus: nstr,
    procedure,
    modality: nstr,
    priority: nstr,
    reasonForStudy: z.array(CodedValue),
    relevantClinicalInfo: nstr,
    diagnoses: z.array(CodedValue),
    referringPhysician: z.strictObject({ id: nstr, name: nstr }).nullable(),
    secondOpinionRequested: z.boolean(),
    cancelledAt: described(time.nullable(), 'when the RIS cancelled this order (ORC-1 CA/DC/OC); null: live'),
    updatedAt: time,
  })
  .meta({ id: 'Order' });

const primaryReportShape = {
  status: described(z.string(), 'OBR-25: P, F, C or X'),
  text: z.string(),
  radiologistId: nstr,
  radiologistName: nstr,
  observedAt: nstr,
  receivedAt: time,
  procedure,
  reasonForStudy: z.array(CodedValue),
  diagnoses: z.array(CodedValue),
};
export const PrimaryReport = z.strictObject(primaryReportShape).meta({ id: 'PrimaryReport' });
/** For a reader the first radiologist is left out (peer review is anonymous). */
export const PrimaryReportForCase = z
  .strictObject({ ...primaryReportShape, radiologistId: nstr.optional(), radiologistName: nstr.optional() })
  .meta({ description: 'the first radiologist is left out for a reader (peer review is anonymous)' });

const AiResult = z
  .strictObject({
    sender: z.string(),
    finding: CodedValue,
    value: nstr,
    abnormalFlags: z.array(z.string()),
    positive: z.boolean(),
    status: nstr,
    observedAt: nstr,
    receivedAt: time,
  })
  .meta({ id: 'AiResult' });

const Decision = z
  .strictObject({
    flagged: z.boolean(),
    reasons: z.array(Reason),
    priority: z.enum(PRIORITIES).nullable(),
    basis: z.string(),
    trigger: z.string(),
    ruleSetVersion: int,
    evaluatedAt: time,
  })
  .meta({ id: 'Decision' });

export const InstanceVersion = z
  .strictObject({
    sopInstanceUid: z.string(),
    version: int,
    sha256: z.string(),
    sizeBytes: int,
    receivedAt: time,
    callingAe: nstr,
    current: described(z.boolean(), 'the copy the gateway uses and forwards'),
    supersededAt: time.nullable(),
    kind: described(z.enum(['instance', 'iocm-rejection']), 'iocm-rejection: an IOCM rejection note (stored, never forwarded)'),
    studyInstanceUid: z.string(),
    seriesInstanceUid: z.string(),
    patientId: nstr,
    issuerOfPatientId: nstr,
    patientName: nstr,
    patientBirthDate: nstr,
    accessionNumber: nstr,
    identityChanges: z.array(z.string()),
    conflictState: z.enum(['open', 'released', 'rejected']).nullable(),
    rejectedAt: described(time.nullable(), 'withdrawn by an IOCM rejection note'),
    rejectionCode: described(nstr, 'e.g. DCM:113001 (CID 7011)'),
  })
  .meta({
    id: 'InstanceVersion',
    description: 'One received copy of a SOP instance that was re-sent with other content, withdrawn by IOCM, or is a rejection note',
  });
export type InstanceVersionView = z.input<typeof InstanceVersion>;

export const Study = z
  .strictObject({
    ...studySummaryShape,
    series: z.array(Series),
    order: Order.nullable(),
    orders: z.array(Order),
    primaryReport: z.strictObject({ current: PrimaryReport.nullable(), history: z.array(PrimaryReport) }),
    aiResults: z.array(AiResult),
    decision: Decision.nullable(),
    caseId: described(nstr, 'the latest case of the study'),
    patientName: described(nstr, "Patient's Name decoded per the Specific Character Set (component groups joined by =)"),
    patientBirthDate: nstr,
    versions: z.array(InstanceVersion),
    completeness: z
      .strictObject({
        verdict: described(
          z.enum(Object.values(Verdict)),
          'complete: every instance a COMPLETED MPPS lists is here; incomplete: some are missing after the quiet period',
        ),
        referenced: described(int, 'instances listed by COMPLETED steps'),
        arrived: int,
        missing: int,
        mpps: z.array(z.strictObject({ sopInstanceUid: z.string(), status: z.enum(Object.values(MppsStatus)), referenced: int })),
      })
      .nullable()
      .meta({ id: 'StudyCompleteness', description: "the modality's performed procedure steps (MPPS) against what arrived; null without MPPS" }),
  })
  .meta({ id: 'Study', description: 'One study with its series, linked HL7 order/reports/AI results and the latest rules decision' });
export type StudyView = z.input<typeof Study>;

const studyUid = z.object({ studyInstanceUid: z.string() });
const decide = [Role.admin, Role.qa] as const;

export const studiesRoutes = {
  listStudies: defineRoute({
    method: 'get',
    path: '/api/studies',
    operationId: 'listStudies',
    summary: 'Studies received, newest first',
    tag: 'studies',
    roles: [Role.admin, Role.qa, Role.system],
    query: z.object({
      accessionNumber: z.string().optional(),
      patientId: z.string().optional(),
      state: z.enum(Object.values(StudyState)).optional(),
      limit: limitParam(100, 1000),
      offset: offsetParam,
    }),
    responses: { 200: { description: 'studies', schema: z.strictObject({ items: z.array(StudySummary) }) } },
  }),
  getStudy: defineRoute({
    method: 'get',
    path: '/api/studies/:studyInstanceUid',
    operationId: 'getStudy',
    summary: 'One study with order, primary report, AI results, decision and case id',
    tag: 'studies',
    roles: [Role.admin, Role.qa, Role.system],
    params: studyUid,
    responses: { 200: { description: 'the study', schema: Study } },
    errors: { 404: 'no such study' },
  }),
  releaseStudy: defineRoute({
    method: 'post',
    path: '/api/studies/:studyInstanceUid/release',
    operationId: 'releaseStudy',
    summary: 'A held study goes on after QA checked it: the newest copies stay current, rules run again (audited)',
    tag: 'studies',
    roles: decide,
    params: studyUid,
    body: z.strictObject({ reason: requiredReason }),
    responses: { 200: { description: 'the study after the release', schema: StudySummary } },
    errors: { 404: 'no such study', 409: 'the study is not held' },
  }),
  rejectStudy: defineRoute({
    method: 'post',
    path: '/api/studies/:studyInstanceUid/reject',
    operationId: 'rejectStudy',
    summary: 'QA refuses what held the study: the conflicting copies are discarded, the prior ones current again (audited)',
    tag: 'studies',
    roles: decide,
    params: studyUid,
    body: z.strictObject({ reason: requiredReason }),
    responses: { 200: { description: 'the study after the rejection', schema: StudySummary } },
    errors: { 404: 'no such study', 409: 'the study is not held' },
  }),
};
export type PrimaryReportView = z.input<typeof PrimaryReport>;
