/**
 * OpenAPI 3.1 description of the HTTP API, served at GET /api/openapi.json
 * (no token: it holds no PHI). test/http/openapi.int.test.ts keeps it true:
 * every registered route is here and nothing else is, and the running gateway's
 * answers validate against these schemas. Response objects are closed
 * (`additionalProperties: false`) so a field added to a route without a line
 * here fails that test instead of going undocumented.
 *
 * `x-roles` on each operation lists the token roles that pass its role check;
 * an empty list means no token is needed.
 */
import { Verdict } from '../studies/completeness.js';
import { MppsStatus } from '../studies/mpps.table.js';
import { PriorState } from '../priors/prior.table.js';
import { Role } from '../config/schema.js';
import { radpeerScores } from '../reports/oru-builder.js';
import { PRIORITIES, RULE_KINDS } from '../rules/rule.types.js';
import { STATS_TABLES } from '../stats/stats.js';
import { CaseState, DeliveryState, MessageStatus, OutboundState, StudyState } from '../states.js';

export type JsonType = 'string' | 'integer' | 'number' | 'boolean' | 'object' | 'array' | 'null';

/** The subset of JSON Schema 2020-12 this document uses (and the conformance test checks). */
export interface JsonSchema {
  type?: JsonType | JsonType[];
  description?: string;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  additionalProperties?: boolean | JsonSchema;
  items?: JsonSchema;
  enum?: readonly (string | number | boolean | null)[];
  $ref?: string;
  anyOf?: JsonSchema[];
  format?: 'date-time' | 'date';
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  minItems?: number;
  default?: unknown;
}

export interface Parameter {
  name: string;
  in: 'path' | 'query';
  required?: boolean;
  description?: string;
  schema: JsonSchema;
}

export interface MediaType {
  schema: JsonSchema;
}

export interface ResponseObject {
  description: string;
  content?: Record<string, MediaType>;
  headers?: Record<string, { description: string; schema: JsonSchema }>;
}

export interface Operation {
  operationId: string;
  summary: string;
  description?: string;
  tags: string[];
  /** Roles whose token passes the route's role check; [] = public. */
  'x-roles': Role[];
  security: Record<string, string[]>[];
  parameters?: Parameter[];
  requestBody?: { required: boolean; description?: string; content: Record<string, MediaType> };
  responses: Record<string, ResponseObject>;
}

export const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'patch'] as const;
export type HttpMethod = (typeof HTTP_METHODS)[number];
export type PathItem = Partial<Record<HttpMethod, Operation>>;

export interface OpenApiDocument {
  openapi: '3.1.0';
  info: { title: string; version: string; description: string };
  jsonSchemaDialect: string;
  servers: { url: string }[];
  tags: { name: string; description: string }[];
  paths: Record<string, PathItem>;
  components: {
    schemas: Record<string, JsonSchema>;
    securitySchemes: Record<string, { type: 'http'; scheme: 'bearer'; description: string }>;
  };
}

const ALL_ROLES: Role[] = [Role.admin, Role.qa, Role.reader, Role.system];

// --- schema shorthands -------------------------------------------------------

const str: JsonSchema = { type: 'string' };
const nstr: JsonSchema = { type: ['string', 'null'] };
const int: JsonSchema = { type: 'integer' };
const nint: JsonSchema = { type: ['integer', 'null'] };
const bool: JsonSchema = { type: 'boolean' };
const time: JsonSchema = { type: 'string', format: 'date-time' };
const ntime: JsonSchema = { type: ['string', 'null'], format: 'date-time' };
const anything: JsonSchema = {};
const ref = (name: string): JsonSchema => ({ $ref: `#/components/schemas/${name}` });
const nullable = (s: JsonSchema): JsonSchema => ({ anyOf: [s, { type: 'null' }] });
const arr = (items: JsonSchema): JsonSchema => ({ type: 'array', items });
const oneOfStrings = (values: readonly string[], description?: string): JsonSchema => ({ type: 'string', enum: [...values], ...(description ? { description } : {}) });

/** A closed object: every property required unless listed in `optional`. */
function obj(properties: Record<string, JsonSchema>, o: { optional?: string[]; description?: string } = {}): JsonSchema {
  return {
    type: 'object',
    ...(o.description ? { description: o.description } : {}),
    properties,
    required: Object.keys(properties).filter((k) => !o.optional?.includes(k)),
    additionalProperties: false,
  };
}

/** An open object: what it documents is there, more may be. */
function openObj(properties: Record<string, JsonSchema>, required: string[], description?: string): JsonSchema {
  return { type: 'object', ...(description ? { description } : {}), properties, required, additionalProperties: true };
}

const items = (name: string): JsonSchema => obj({ items: arr(ref(name)) });

// --- components --------------------------------------------------------------

const coded = obj({ code: nstr, text: nstr, system: nstr });
const procedure = nullable(obj({ code: nstr, text: nstr }));

const studySummary: Record<string, JsonSchema> = {
  studyInstanceUid: str,
  accessionNumber: nstr,
  patientId: nstr,
  modalities: arr(str),
  bodyParts: arr(str),
  studyDescription: nstr,
  studyDate: { type: ['string', 'null'], description: 'DICOM StudyDate as stored (YYYYMMDD)' },
  instanceCount: int,
  lateInstanceCount: { type: 'integer', description: 'instances received after the study was declared stable' },
  sizeBytes: int,
  state: oneOfStrings(Object.values(StudyState)),
  callingAe: nstr,
  firstReceivedAt: time,
  lastReceivedAt: time,
  stableAt: ntime,
  issuerOfPatientId: { type: ['string', 'null'], description: 'Issuer of Patient ID (0010,0021): the authority of patientId' },
  otherPatientIds: arr(obj({ id: str, issuer: nstr, type: nstr }, { description: 'an item of Other Patient IDs Sequence (0010,1002)' })),
  holdReason: { type: ['string', 'null'], description: 'set while state is held: identity-conflict, iocm-incorrect-patient, ...' },
  holdDetail: { type: ['string', 'null'], description: 'which attributes changed (names, never values)' },
  heldAt: ntime,
};

const deliveryProps: Record<string, JsonSchema> = {
  id: str,
  destinationId: str,
  state: oneOfStrings(Object.values(DeliveryState)),
  attempts: int,
  lastError: nstr,
  deidentified: bool,
  instancesTotal: int,
  instancesSent: int,
  nextAttemptAt: { ...ntime, description: 'set while pending' },
  deliveredAt: ntime,
  updatedAt: time,
};

const secondReportProps: Record<string, JsonSchema> = {
  id: str,
  version: { type: 'integer', minimum: 1, description: '1 for the report, 2+ for addenda' },
  readerId: str,
  text: str,
  impression: nstr,
  radpeerScore: oneOfStrings(radpeerScores),
  concordance: oneOfStrings(['CONCORDANT', 'DISCORDANT']),
  discrepant: { type: 'boolean', description: 'RADPEER 2b, 3a or 3b' },
  addendum: bool,
  source: oneOfStrings(['api', 'hl7']),
  createdAt: time,
};

const primaryReportProps: Record<string, JsonSchema> = {
  status: { type: 'string', description: 'OBR-25: P, F, C or X' },
  text: str,
  radiologistId: nstr,
  radiologistName: nstr,
  observedAt: nstr,
  receivedAt: time,
  procedure,
  reasonForStudy: arr(ref('CodedValue')),
  diagnoses: arr(ref('CodedValue')),
};

const nnum: JsonSchema = { type: ['number', 'null'] };
const groupStatsProps: Record<string, JsonSchema> = {
  key: str,
  radiologistId: { type: 'string', description: 'first reader (OBR-32 of the primary report)' },
  readerId: { type: 'string', description: 'second reader' },
  modality: str,
  secondReads: int,
  discordant: { type: 'integer', description: 'RADPEER 2a and worse' },
  significant: { type: 'integer', description: 'RADPEER 2b, 3a, 3b' },
  discordanceRate: nnum,
  significantRate: nnum,
  weightedDiscordanceRate: { ...nnum, description: 'RADPEER 2+ rate with inverse-probability weights (random draws 1/p, enrichment 1)' },
  weightedSignificantRate: nnum,
  discordanceCiLow: { ...nnum, description: '95 % Wilson interval of the weighted 2+ rate at the effective sample size' },
  discordanceCiHigh: nnum,
  effectiveN: { ...nnum, description: 'Kish effective sample size (sum w)^2 / sum w^2' },
  turnaroundHours: ref('Percentiles'),
};
const groupStatsOptional = ['radiologistId', 'readerId', 'modality'];

const reason = obj({ ruleId: str, kind: oneOfStrings(RULE_KINDS), detail: { type: 'string', description: 'the evidence; left out for a reader while the case is blinded or de-identified' } }, { optional: ['detail'] });

const ruleChange = obj({
  added: arr(str),
  removed: arr(str),
  changed: arr(obj({ id: str, fields: arr(str) })),
});

const schemas: Record<string, JsonSchema> = {
  Error: obj(
    {
      error: obj(
        {
          code: oneOfStrings(['invalid-input', 'unreadable-data', 'unsupported', 'unauthorized', 'forbidden', 'not-found', 'conflict', 'out-of-resources', 'transient', 'rate-limited', 'internal']),
          message: str,
          details: { description: 'e.g. {errors: [{path, message}]} for invalid input' },
        },
        { optional: ['details'] },
      ),
    },
    { description: 'Every failure, whatever the route' },
  ),
  Health: openObj({ status: oneOfStrings(['ok', 'starting']), instanceId: nstr, destinations: { type: 'object', additionalProperties: obj({ ok: bool, detail: str }) } }, ['status']),
  CodedValue: coded,
  Reason: reason,
  StudySummary: obj(studySummary, { description: 'A study as listed (GET /api/studies)' }),
  Series: obj({ seriesInstanceUid: str, modality: nstr, bodyPartExamined: nstr, seriesNumber: nint, seriesDescription: nstr, instanceCount: int }),
  Order: obj({
    accessionNumber: nstr,
    placerOrderNumber: nstr,
    fillerOrderNumber: nstr,
    orderControl: nstr,
    orderStatus: nstr,
    procedure,
    modality: nstr,
    priority: nstr,
    reasonForStudy: arr(ref('CodedValue')),
    relevantClinicalInfo: nstr,
    diagnoses: arr(ref('CodedValue')),
    referringPhysician: nullable(obj({ id: nstr, name: nstr })),
    secondOpinionRequested: bool,
    // ORC-1 CA/DC/OC received: when the RIS cancelled this order (null: live).
    cancelledAt: ntime,
    updatedAt: time,
  }),
  PrimaryReport: obj(primaryReportProps),
  AiResult: obj({
    sender: str,
    finding: coded,
    value: nstr,
    abnormalFlags: arr(str),
    positive: bool,
    status: nstr,
    observedAt: nstr,
    receivedAt: time,
  }),
  Decision: obj({
    flagged: bool,
    reasons: arr(ref('Reason')),
    priority: nullable(oneOfStrings(PRIORITIES)),
    basis: str,
    trigger: str,
    ruleSetVersion: int,
    evaluatedAt: time,
  }),
  Study: obj(
    {
      ...studySummary,
      series: arr(ref('Series')),
      order: nullable(ref('Order')),
      orders: arr(ref('Order')),
      primaryReport: obj({ current: nullable(ref('PrimaryReport')), history: arr(ref('PrimaryReport')) }),
      aiResults: arr(ref('AiResult')),
      decision: nullable(ref('Decision')),
      caseId: { type: ['string', 'null'], description: 'the latest case of the study' },
      patientName: { type: ['string', 'null'], description: "Patient's Name decoded per the Specific Character Set (component groups joined by =)" },
      patientBirthDate: nstr,
      versions: arr(ref('InstanceVersion')),
      completeness: nullable(
        obj(
          {
            verdict: oneOfStrings(Object.values(Verdict), 'complete: every instance a COMPLETED MPPS lists is here; incomplete: some are missing after the quiet period'),
            referenced: { type: 'integer', description: 'instances listed by COMPLETED steps' },
            arrived: int,
            missing: int,
            mpps: arr(obj({ sopInstanceUid: str, status: oneOfStrings(Object.values(MppsStatus)), referenced: int })),
          },
          { description: "the modality's performed procedure steps (MPPS) against what arrived; null without MPPS" },
        ),
      ),
    },
    { description: 'One study with its series, linked HL7 order/reports/AI results and the latest rules decision' },
  ),
  Prior: obj(
    {
      studyInstanceUid: { type: ['string', 'null'], description: 'reader view of a de-identified case: the pseudonym the pool got (null until sent)' },
      studyDate: nstr,
      modalities: arr(str),
      studyDescription: nstr,
      accessionNumber: nstr,
      state: oneOfStrings(Object.values(PriorState)),
      detail: nstr,
      report: nullable(obj({ resultStatus: str, observedAt: nstr, reportVersionId: str }, { optional: ['observedAt', 'reportVersionId'] })),
    },
    { description: "A prior study of the case's patient fetched from the hospital PACS (read-only context, forwarded with the case)" },
  ),
  InstanceVersion: obj(
    {
      sopInstanceUid: str,
      version: int,
      sha256: str,
      sizeBytes: int,
      receivedAt: time,
      callingAe: nstr,
      current: { type: 'boolean', description: 'the copy the gateway uses and forwards' },
      supersededAt: ntime,
      kind: oneOfStrings(['instance', 'iocm-rejection'], 'iocm-rejection: an IOCM rejection note (stored, never forwarded)'),
      studyInstanceUid: str,
      seriesInstanceUid: str,
      patientId: nstr,
      issuerOfPatientId: nstr,
      patientName: nstr,
      patientBirthDate: nstr,
      accessionNumber: nstr,
      identityChanges: arr(str),
      conflictState: nullable(oneOfStrings(['open', 'released', 'rejected'])),
      rejectedAt: { ...ntime, description: 'withdrawn by an IOCM rejection note' },
      rejectionCode: { type: ['string', 'null'], description: 'e.g. DCM:113001 (CID 7011)' },
    },
    { description: 'One received copy of a SOP instance that was re-sent with other content, withdrawn by IOCM, or is a rejection note' },
  ),
  Delivery: obj(deliveryProps),
  DeliveryListItem: obj({ caseId: str, studyInstanceUid: str, ...deliveryProps }),
  SecondReport: obj(secondReportProps),
  Case: obj(
    {
      id: str,
      studyInstanceUid: { type: ['string', 'null'], description: 'for a reader whose copy was de-identified: the pseudonym they received (null until it is stored)' },
      accessionNumber: nstr,
      patientId: { type: ['string', 'null'], description: 'reader view of a de-identified case only: the pseudonym' },
      deidentified: { type: 'boolean', description: 'reader view of a de-identified case only (true)' },
      state: oneOfStrings(Object.values(CaseState)),
      ruleIds: arr(str),
      reasons: arr(ref('Reason')),
      priority: oneOfStrings(PRIORITIES),
      slaHours: { type: 'number' },
      dueAt: time,
      readerId: nstr,
      destinationId: nstr,
      readerGroup: nstr,
      blinded: bool,
      deidentify: { type: ['boolean', 'null'], description: 'null: the destination decides' },
      discrepant: bool,
      ruleSetVersion: nint,
      slaBreachedAt: ntime,
      escalationLevel: { type: 'integer', minimum: 0, maximum: 2, description: '0 none, 1 reassigned after an SLA breach, 2 notified' },
      deliveries: arr(ref('Delivery')),
      excludedInstances: arr(ref('ExcludedInstance')),
      priors: arr(ref('Prior')),
      secondReport: nullable(obj({ ...secondReportProps, versions: int })),
      writeBack: nullable(
        obj(
          {
            state: oneOfStrings(Object.values(OutboundState)),
            attempts: int,
            lastError: nstr,
            controlId: nstr,
            response: nstr,
            updatedAt: time,
          },
          { optional: ['lastError', 'controlId', 'response'], description: 'lastError, controlId and response (about the real study) are left out for a reader of a de-identified case' },
        ),
      ),
      createdBy: str,
      createdAt: time,
      updatedAt: time,
    },
    { optional: ['patientId', 'deidentified'], description: 'A second-read case. A reader sees the cases assigned to them, under pseudonyms when their copy was de-identified.' },
  ),
  ExcludedInstance: obj(
    {
      sopInstanceUid: { type: ['string', 'null'], description: 'for a reader of a de-identified case: the pseudonymous UID (null if none was stored)' },
      sopClassUid: str,
      seriesDescription: { type: ['string', 'null'], description: 'as in the source; null for a reader of a de-identified case' },
      reason: { type: 'string', description: 'burned-in-risk, encapsulated-document, recognizable-features, free-text-object, opaque-data, phi-detected' },
      detail: { type: ['string', 'null'], description: 'the rule or the attribute paths where an identifier was found, never a value; null for a reader' },
      destinationId: str,
      excludedAt: time,
    },
    { description: 'An instance kept back from a de-identified delivery until a person releases it (admin, QA).' },
  ),
  ManualCaseRequest: obj(
    {
      studyInstanceUid: { type: 'string', maxLength: 64 },
      accessionNumber: { type: 'string', maxLength: 64 },
      reason: { type: 'string', minLength: 1, maxLength: 2000 },
      destinationId: { type: 'string', maxLength: 128 },
      priority: oneOfStrings(PRIORITIES),
    },
    { optional: ['studyInstanceUid', 'accessionNumber', 'destinationId', 'priority'], description: 'studyInstanceUid or accessionNumber is required' },
  ),
  SecondReportInput: obj(
    {
      text: { type: 'string', minLength: 1, maxLength: 200_000 },
      radpeerScore: oneOfStrings(radpeerScores, 'RADPEER 2016'),
      readerId: { type: 'string', maxLength: 128, description: 'system tokens name the reader; a reader token reports under its own id' },
      impression: { type: 'string', maxLength: 50_000 },
      findings: { type: 'string', maxLength: 200_000 },
      addendum: { type: 'boolean', description: 'true for an addendum to a case already reported' },
    },
    { optional: ['readerId', 'impression', 'findings', 'addendum'] },
  ),
  SecondReportResult: obj({ report: ref('SecondReport'), case: ref('Case') }),
  DeclineResult: obj({ readerId: { type: ['string', 'null'], description: 'the reader it went to; null when nobody else could take it' }, held: bool }),
  Hl7Message: obj(
    {
      id: str,
      status: oneOfStrings(Object.values(MessageStatus)),
      reason: nstr,
      type: str,
      kind: str,
      controlId: str,
      sendingApplication: str,
      sendingFacility: str,
      hl7Version: nstr,
      ackCode: str,
      studyInstanceUid: nstr,
      accessionNumber: nstr,
      receivedAt: time,
      updatedAt: time,
      raw: { type: 'string', description: 'the message as received (PHI): only with includeRaw=true, admin only' },
    },
    { optional: ['raw'] },
  ),
  Rule: openObj(
    { id: str, kind: oneOfStrings(RULE_KINDS), priority: oneOfStrings(PRIORITIES), enabled: bool, blinded: bool, description: str, slaHours: { type: 'number' }, destination: str, readerGroup: str, deidentify: bool, when: { type: 'object' } },
    ['id', 'kind', 'priority'],
    'One rule; the fields of each kind are described in config/rules.yaml',
  ),
  RuleSet: obj({
    version: int,
    createdAt: time,
    createdBy: str,
    source: oneOfStrings(['config', 'api']),
    rules: arr(ref('Rule')),
    yaml: { ...nstr, description: 'the YAML text of this version as written (comments kept); null when it was saved as JSON' },
    defaults: openObj(
      { oncologyCodes: { type: 'object' }, oncologyKeywords: arr(str), highStakesKeywords: arr(str), aiFindings: arr({ type: 'object' }), indicationConditions: arr({ type: 'object' }), aiSenders: { ...arr(str), description: 'hl7.aiSenders: the MSH-3 applications whose ORU^R01 are AI results, which discordance rules read (configuration, not part of a rule)' } },
      ['oncologyCodes', 'oncologyKeywords', 'highStakesKeywords', 'aiFindings', 'indicationConditions', 'aiSenders'],
      'the built-in lists a rule uses when it leaves its own out, and the configured AI senders',
    ),
  }),
  RuleSetInput: {
    description: '{rules, comment?} or a bare list of rules',
    anyOf: [obj({ rules: arr(ref('Rule')), comment: str }, { optional: ['comment'] }), obj({ yaml: { type: 'string', description: 'a rules file as YAML text, stored with the version (comments kept)' }, comment: str }, { optional: ['comment'] }), arr(ref('Rule'))],
  },
  RuleSetUpdate: obj({ version: int, created: { type: 'boolean', description: 'false when the set equals the one in force (not versioned again)' }, change: ruleChange, rules: arr(ref('Rule')) }),
  RuleSetVersionSummary: obj({ version: int, source: oneOfStrings(['config', 'api']), createdBy: str, createdAt: time, comment: nstr }),
  RuleSetVersion: obj({ version: int, rules: arr(ref('Rule')), createdAt: time, createdBy: str, source: oneOfStrings(['config', 'api']), comment: nstr, yaml: nstr }),
  DryRunRequest: obj(
    {
      rules: { description: 'a candidate rule set (as for PUT /api/rules); absent: the set in force' },
      from: { type: 'string', description: 'ISO-8601; studies first received at or after' },
      to: { type: 'string', description: 'ISO-8601; studies first received before' },
      maxItems: { type: 'integer', minimum: 0, maximum: 10_000, default: 500 },
    },
    { optional: ['rules', 'from', 'to', 'maxItems'] },
  ),
  DryRunResult: obj({
    evaluated: int,
    flagged: int,
    items: arr(obj({ studyInstanceUid: str, accessionNumber: nstr, modalities: arr(str), radiologistId: nstr, priority: nullable(oneOfStrings(PRIORITIES)), reasons: arr(ref('Reason')) })),
    truncated: bool,
    byRule: { type: 'object', additionalProperties: int },
    byRadiologistModality: arr(obj({ radiologistId: str, modality: str, evaluated: int, flagged: int })),
    forecast: obj({
      days: { type: 'number', description: 'days the period covers (from/to, else first to last study received; at least 1)' },
      casesPerDay: { type: 'number' },
      byRule: arr(obj({ ruleId: str, flagged: int, casesPerDay: { type: 'number' } })),
      readerLoad: arr(
        obj(
          {
            readerGroup: { ...nstr, description: "a rule's readerGroup; null: cases without one" },
            openCasesPeak: { type: 'integer', description: 'most cases open at once, each open from its decision until its SLA is due' },
            capacity: { ...nint, description: 'summed maxOpenCases of the available readers who can take the group; null: no reader configured' },
          },
        ),
      ),
      quota: arr(obj({ ruleId: str, radiologist: str, modality: str, period: str, seen: int, drawn: int, min: int, max: nint })),
    }),
    diff: obj({
      activeVersion: int,
      newlyFlagged: { ...arr(str), description: 'StudyInstanceUIDs the candidate flags and the active version does not' },
      noLongerFlagged: { ...arr(str), description: 'StudyInstanceUIDs the active version flags and the candidate does not' },
      truncated: bool,
    }),
    from: ntime,
    to: ntime,
    ruleCount: int,
    elapsedMs: int,
  }),
  SamplingCell: obj({
    ruleId: str,
    radiologist: str,
    modality: str,
    period: str,
    seen: int,
    selected: { type: 'integer', description: 'studies drawn in the period' },
    reviewed: { type: 'integer', description: 'second reads of the drawn studies so far' },
    discrepant: { type: 'integer', description: 'of those, RADPEER 2a and worse' },
    rate: { ...nnum, description: 'discrepant / reviewed' },
    ciLow: { ...nnum, description: 'Wilson interval at the rule confidence' },
    ciHigh: nnum,
    drawProbability: { type: 'number', description: 'probability that the next study of the cell is drawn' },
    mode: oneOfStrings(['quota', 'precision']),
    targetHalfWidth: nnum,
    confidence: { type: 'number' },
    needed: { ...nint, description: 'precision mode: reviews the target half-width needs at the planning rate' },
  }),
  SamplingBucket: obj({
    ruleId: str,
    radiologistId: str,
    modality: str,
    period: str,
    seen: int,
    selected: int,
    quota: nullable(obj({ rate: { type: 'number' }, minimum: int, maximum: nint, period: str })),
    updatedAt: time,
  }),
  Me: obj({
    name: str,
    role: oneOfStrings(ALL_ROLES),
    readerId: nstr,
    reader: nullable(obj({ id: str, name: str, modalities: arr(str), subspecialties: arr(str) })),
    readers: { ...arr(obj({ id: str, name: str, destination: nstr })), description: 'every configured reader, for admin and qa; empty for the other roles' },
  }),
  Dashboard: obj({
    generatedAt: time,
    todayStartsAt: { ...time, description: "local midnight of the gateway host: where today's counts start" },
    today: obj({ studiesReceived: int, casesOpened: int, secondReports: int, writtenBack: int }),
    casesByState: obj(Object.fromEntries(Object.values(CaseState).map((state) => [state, int]))),
    queues: arr(obj({ destinationId: str, pending: int, sending: int, dead: int, held: int, delivered: int })),
    slaBreaches: obj({ open: int, overdue: { type: 'integer', description: 'past due, not yet seen by the SLA watch' } }),
    writeBack: obj({ pending: int, failed: int }),
    deadLetters: int,
    heldMessages: int,
  }),
  Percentiles: obj({ n: int, p50: nnum, p90: nnum, p95: nnum }, { description: 'nearest-rank percentiles, in hours' }),
  GroupStats: obj(groupStatsProps, { optional: groupStatsOptional }),
  Stats: obj({
    from: time,
    to: time,
    bucket: oneOfStrings(['day', 'week']),
    totals: ref('GroupStats'),
    scores: { type: 'object', description: 'second reads per RADPEER score', additionalProperties: int },
    byRadiologist: arr(ref('GroupStats')),
    byModality: arr(ref('GroupStats')),
    byRadiologistModality: arr(ref('GroupStats')),
    byReader: arr(ref('GroupStats')),
    writeBackTurnaroundHours: ref('Percentiles'),
    overTime: arr(obj({ start: time, ...groupStatsProps }, { optional: groupStatsOptional })),
    enrichment: arr(obj({ selection: { type: 'string', description: 'sampling, or the kinds of the rules that flagged the study (enrichment)' }, secondReads: int, meanWeight: { type: 'number' }, minWeight: { type: 'number' }, maxWeight: { type: 'number' } })),
  }),
  TimelineEvent: obj(
    {
      at: time,
      kind: { type: 'string', description: 'received, stable, order, report-linked, ai-result, decision, forwarding, forwarded, delivery-failed, assigned, assignment-ended, reported, written-back, notified, write-back-failed, write-back-pending, audit' },
      title: str,
      actor: nstr,
      details: { type: 'object' },
    },
    { optional: ['actor', 'details'] },
  ),
  CaseTimeline: obj({ caseId: str, items: arr(ref('TimelineEvent')) }),
  CasePrimaryReport: obj({
    caseId: str,
    blinded: bool,
    report: obj(primaryReportProps, { optional: ['radiologistId', 'radiologistName'], description: 'the first radiologist is left out for a reader (peer review is anonymous)' }),
  }),
  ReassignResult: obj({ readerId: str, previousReaderId: nstr, case: ref('Case') }),
  RetryWriteBackResult: obj({ messages: { type: 'integer', description: 'failed write-backs queued again' }, case: ref('Case') }),
  DismissResult: obj({ id: str, status: oneOfStrings([MessageStatus.dismissed]) }),
  GatewayInstance: obj({
    instanceId: str,
    host: str,
    pid: int,
    version: nstr,
    startedAt: time,
    heartbeatAt: time,
    stoppedAt: ntime,
    alive: { type: 'boolean', description: 'heartbeat within the lease period and not stopped' },
    self: { type: 'boolean', description: 'the instance that answered' },
    claims: obj({
      leases: arr(obj({ name: str, acquiredAt: ntime, expiresAt: ntime, expired: bool })),
      deliveries: arr(obj({ id: str, caseId: str, destinationId: str, leaseExpiresAt: ntime, expired: bool, instancesSent: int, instancesTotal: int })),
      outbound: arr(obj({ id: str, caseId: str, kind: str, leaseExpiresAt: ntime, expired: bool, attempts: int })),
    }),
  }),
  AuditEvent: obj({ id: str, at: time, actor: str, action: str, entityType: str, entityId: nstr, details: anything }),
};

// --- operations --------------------------------------------------------------

const json = (schema: JsonSchema): Record<string, MediaType> => ({ 'application/json': { schema } });
const ok = (description: string, schema: JsonSchema): ResponseObject => ({ description, content: json(schema) });
const error = (description: string): ResponseObject => ({ description, content: json(ref('Error')) });

interface OpSpec {
  operationId: string;
  summary: string;
  description?: string;
  tag: string;
  roles: Role[];
  parameters?: Parameter[];
  body?: { schema: JsonSchema; description?: string; /** Also accepted as YAML text (`Content-Type: application/yaml`). */ yaml?: string };
  responses: Record<string, ResponseObject>;
  /** Extra error answers beyond what the parameters imply. */
  errors?: Record<string, string>;
}

/**
 * Adds the answers every authenticated route can give (401, 403, 429, 500)
 * and 400 when it takes query parameters or a body.
 */
function op(o: OpSpec): Operation {
  const responses: Record<string, ResponseObject> = { ...o.responses };
  const takesInput = !!o.body || (o.parameters ?? []).some((p) => p.in === 'query');
  if (takesInput) responses['400'] = error('invalid input: every problem listed in error.details.errors where there are several');
  if (o.roles.length > 0) {
    responses['401'] = error('no bearer token, or an unknown one');
    responses['403'] = error(`the token's role is not one of ${o.roles.join(', ')}`);
    responses['429'] = { ...error('too many failed logins from this address: refused until the minute is over'), headers: { 'Retry-After': { description: 'seconds', schema: int } } };
  }
  for (const [status, why] of Object.entries(o.errors ?? {})) responses[status] = error(why);
  responses['500'] = error('internal error');
  return {
    operationId: o.operationId,
    summary: o.summary,
    ...(o.description ? { description: o.description } : {}),
    tags: [o.tag],
    'x-roles': o.roles,
    security: o.roles.length > 0 ? [{ bearer: [] }] : [],
    ...(o.parameters ? { parameters: o.parameters } : {}),
    ...(o.body
      ? {
          requestBody: {
            required: true,
            ...(o.body.description ? { description: o.body.description } : {}),
            content: { ...json(o.body.schema), ...(o.body.yaml ? { 'application/yaml': { schema: { type: 'string', description: o.body.yaml } } } : {}) },
          },
        }
      : {}),
    responses,
  };
}

const q = (name: string, schema: JsonSchema, description?: string): Parameter => ({ name, in: 'query', required: false, schema, ...(description ? { description } : {}) });
const p = (name: string, schema: JsonSchema = str, description?: string): Parameter => ({ name, in: 'path', required: true, schema, ...(description ? { description } : {}) });
const limit = (dflt: number, max: number) => q('limit', { type: 'integer', minimum: 1, maximum: max, default: dflt });
const offset = q('offset', { type: 'integer', minimum: 0, default: 0 });
const caseId = p('id', str, 'case id');

const paths: Record<string, PathItem> = {
  '/healthz': {
    get: op({
      operationId: 'getHealth',
      summary: 'Liveness and readiness',
      description: '200 once listeners and database are up; 503 while starting or stopping.',
      tag: 'operations',
      roles: [],
      responses: { '200': ok('up', ref('Health')), '503': ok('starting or stopping', ref('Health')) },
    }),
  },
  '/metrics': {
    get: op({
      operationId: 'getMetrics',
      summary: 'Prometheus metrics',
      description:
        'Prometheus text exposition format, every sample labelled instance_id. Families include gateway_instances_received, gateway_hl7_messages_received{type,status}, gateway_studies{state}, gateway_cases{state} (every state, zeros included), gateway_delivery_queue{destination,state}, gateway_delivery_queue_depth{destination}, gateway_delivery_seconds (histogram per destination), gateway_delivered_instances_total, gateway_delivery_failures_total{destination,kind}, gateway_outbound_messages{kind,state}, gateway_sla_breached_cases, resource guards (gateway_limit, gateway_in_use, gateway_guard_rejections_total) and process metrics.',
      tag: 'operations',
      roles: [Role.admin, Role.qa, Role.system],
      responses: { '200': { description: 'metrics', content: { 'text/plain': { schema: str } } } },
      errors: { '404': 'metrics are not enabled' },
    }),
  },
  '/api/openapi.json': {
    get: op({
      operationId: 'getOpenApi',
      summary: 'This document',
      tag: 'operations',
      roles: [],
      responses: { '200': ok('OpenAPI 3.1 document', { type: 'object', required: ['openapi', 'paths'] }) },
    }),
  },
  '/api/studies': {
    get: op({
      operationId: 'listStudies',
      summary: 'Studies received, newest first',
      tag: 'studies',
      roles: [Role.admin, Role.qa, Role.system],
      parameters: [q('accessionNumber', str), q('patientId', str), q('state', oneOfStrings(Object.values(StudyState))), limit(100, 1000), offset],
      responses: { '200': ok('studies', items('StudySummary')) },
    }),
  },
  '/api/studies/{studyInstanceUid}': {
    get: op({
      operationId: 'getStudy',
      summary: 'One study with order, primary report, AI results, decision and case id',
      tag: 'studies',
      roles: [Role.admin, Role.qa, Role.system],
      parameters: [p('studyInstanceUid')],
      responses: { '200': ok('the study', ref('Study')) },
      errors: { '404': 'no such study' },
    }),
  },
  '/api/studies/{studyInstanceUid}/release': {
    post: op({
      operationId: 'releaseStudy',
      summary: 'A held study goes on after QA checked it: the newest copies stay current, rules run again (audited)',
      tag: 'studies',
      roles: [Role.admin, Role.qa],
      parameters: [p('studyInstanceUid')],
      body: { schema: obj({ reason: { type: 'string', minLength: 1, maxLength: 2000 } }) },
      responses: { '200': ok('the study after the release', ref('StudySummary')) },
      errors: { '404': 'no such study', '409': 'the study is not held' },
    }),
  },
  '/api/studies/{studyInstanceUid}/reject': {
    post: op({
      operationId: 'rejectStudy',
      summary: 'QA refuses what held the study: the conflicting copies are discarded, the prior ones current again (audited)',
      tag: 'studies',
      roles: [Role.admin, Role.qa],
      parameters: [p('studyInstanceUid')],
      body: { schema: obj({ reason: { type: 'string', minLength: 1, maxLength: 2000 } }) },
      responses: { '200': ok('the study after the rejection', ref('StudySummary')) },
      errors: { '404': 'no such study', '409': 'the study is not held' },
    }),
  },
  '/api/messages': {
    get: op({
      operationId: 'listMessages',
      summary: 'Received HL7 messages (default: held and rejected ones, which need review)',
      tag: 'messages',
      roles: [Role.admin, Role.qa],
      parameters: [
        q('status', str, `comma-separated list of ${Object.values(MessageStatus).join(', ')}; default held,rejected`),
        q('includeRaw', oneOfStrings(['true', '1', 'false', '0']), 'adds the raw message (PHI): admin only, 403 for qa'),
        limit(100, 1000),
        offset,
      ],
      responses: { '200': ok('messages', items('Hl7Message')) },
    }),
  },
  '/api/cases': {
    get: op({
      operationId: 'listCases',
      summary: 'Second-read cases (a reader sees only the cases assigned to them)',
      tag: 'cases',
      roles: ALL_ROLES,
      parameters: [
        q('state', oneOfStrings(Object.values(CaseState))),
        q('readerId', str, 'ignored for a reader token'),
        q('studyInstanceUid', str),
        q('ruleId', str, 'cases one of whose reasons is this rule'),
        q('priority', str, `${PRIORITIES.join(', ')}; another value matches nothing`),
        q('modality', str),
        q('dueBefore', str, 'ISO-8601: cases due before this time'),
        limit(100, 1000),
        offset,
      ],
      responses: { '200': ok('cases', items('Case')) },
    }),
    post: op({
      operationId: 'requestCase',
      summary: 'Manual second-read request',
      description: '201 with a new case; 200 with the open case of the study, to which the reason was added. Forwarded once the study is stable.',
      tag: 'cases',
      roles: [Role.admin, Role.qa, Role.system],
      body: { schema: ref('ManualCaseRequest') },
      responses: { '201': ok('case opened', ref('Case')), '200': ok('reason added to the open case', ref('Case')) },
      errors: { '404': 'no study with that StudyInstanceUID / accession number', '409': 'several studies share the accession number' },
    }),
  },
  '/api/cases/{id}': {
    get: op({
      operationId: 'getCase',
      summary: 'One case with deliveries, latest second report and write-back',
      tag: 'cases',
      roles: ALL_ROLES,
      parameters: [caseId],
      responses: { '200': ok('the case', ref('Case')) },
      errors: { '404': 'no such case' },
      description: 'A reader gets 403 for a case not assigned to them.',
    }),
  },
  '/api/cases/{id}/report': {
    post: op({
      operationId: 'submitSecondReport',
      summary: 'Store the second report (or an addendum) and queue the HL7 write-back',
      description: 'A reader reports only on cases assigned to them (403 otherwise).',
      tag: 'cases',
      roles: [Role.reader, Role.system],
      parameters: [caseId],
      body: { schema: ref('SecondReportInput') },
      responses: { '201': ok('stored', ref('SecondReportResult')) },
      errors: { '404': 'no such case', '409': 'the case takes no report in its state, or the second reader is the first reader' },
    }),
  },
  '/api/cases/{id}/decline': {
    post: op({
      operationId: 'declineCase',
      summary: 'A reader declines a case assigned to them; it is reassigned or held',
      tag: 'cases',
      roles: [Role.reader],
      parameters: [caseId],
      body: { schema: obj({ reason: { type: 'string', maxLength: 2000 } }, { optional: ['reason'] }), description: 'optional' },
      responses: { '200': ok('reassigned or held', ref('DeclineResult')) },
      errors: { '404': 'no such case', '409': 'the case is not being read' },
    }),
  },
  '/api/cases/{id}/cancel': {
    post: op({
      operationId: 'cancelCase',
      summary: 'Cancel an open (or failed) case: stops its deliveries (after the instance in flight), deltas and write-backs; tells each pool with an HL7 channel that received it',
      tag: 'cases',
      roles: [Role.admin, Role.qa],
      parameters: [caseId],
      body: { schema: obj({ reason: { type: 'string', maxLength: 2000 } }, { optional: ['reason'] }), description: 'optional; kept in the audit event' },
      responses: { '200': ok('cancelled', ref('Case')) },
      errors: { '400': 'unknown field or a reason that is not a string', '404': 'no such case', '409': 'the case is no longer open' },
    }),
  },
  '/api/cases/{id}/retry': {
    post: op({
      operationId: 'retryCase',
      summary: 'Retry dead or held deliveries, or re-plan a held case',
      tag: 'cases',
      roles: [Role.admin, Role.qa, Role.system],
      parameters: [caseId],
      responses: { '200': ok('queued again', ref('Case')) },
      errors: { '404': 'no such case', '409': 'nothing to retry' },
    }),
  },
  '/api/cases/{id}/excluded/{sopInstanceUid}/release': {
    post: op({
      operationId: 'releaseExcludedInstance',
      summary: 'Send an instance kept back from a de-identified delivery, after a person looked at it (audited)',
      description:
        'The instance is queued in its delivery again (a delta) and de-identified with the reviewer\'s release; the verifier still runs. An instance excluded as phi-detected cannot be released (409).',
      tag: 'cases',
      roles: [Role.admin, Role.qa],
      parameters: [caseId, p('sopInstanceUid', str, 'the original SOP Instance UID, as listed in excludedInstances')],
      body: { schema: obj({ reason: { type: 'string', maxLength: 2000 } }, { optional: ['reason'] }) },
      responses: { '200': ok('released and queued', ref('Case')) },
      errors: { '404': 'no such case, or no such instance in its study', '409': 'not excluded, already released, phi-detected, or the case is cancelled' },
    }),
  },
  '/api/cases/{id}/timeline': {
    get: op({
      operationId: 'getCaseTimeline',
      summary: "The case's story: arrival, HL7, decisions, deliveries, assignments, reports, write-backs, audit",
      description: 'Opening it is audited as a view of the case (case.viewed). Report text is not included.',
      tag: 'cases',
      roles: [Role.admin, Role.qa],
      parameters: [caseId],
      responses: { '200': ok('the timeline, oldest first', ref('CaseTimeline')) },
      errors: { '404': 'no such case' },
    }),
  },
  '/api/cases/{id}/primary-report': {
    get: op({
      operationId: 'getCasePrimaryReport',
      summary: 'The current primary report of the case (a PHI view, audited)',
      description: 'A reader gets it only for a case assigned to them, and while the case is blinded only after their own second report (403 otherwise).',
      tag: 'cases',
      roles: [Role.admin, Role.qa, Role.reader],
      parameters: [caseId],
      responses: { '200': ok('the report', ref('CasePrimaryReport')) },
      errors: { '404': 'no such case, or no primary report linked to its study' },
    }),
  },
  '/api/cases/{id}/reassign': {
    post: op({
      operationId: 'reassignCase',
      summary: 'Give a case being read to another reader (named, or the next one the assignment picks)',
      tag: 'cases',
      roles: [Role.admin, Role.qa],
      parameters: [caseId],
      body: { schema: obj({ readerId: { type: 'string', maxLength: 128 }, reason: { type: 'string', maxLength: 2000 } }, { optional: ['readerId', 'reason'] }) },
      responses: { '200': ok('reassigned', ref('ReassignResult')) },
      errors: { '404': 'no such case', '409': 'the case is not being read, the reader already has it, is its first reader or reads from another destination' },
    }),
  },
  '/api/cases/{id}/retry-write-back': {
    post: op({
      operationId: 'retryCaseWriteBack',
      summary: 'Queue the failed write-back of a case again',
      tag: 'cases',
      roles: [Role.admin, Role.qa],
      parameters: [caseId],
      responses: { '200': ok('queued again', ref('RetryWriteBackResult')) },
      errors: { '404': 'no such case', '409': 'no failed write-back for this case' },
    }),
  },
  '/api/messages/{id}/dismiss': {
    post: op({
      operationId: 'dismissMessage',
      summary: 'Set a held HL7 message aside after review (audited); its items stay unlinked',
      tag: 'messages',
      roles: [Role.admin, Role.qa],
      parameters: [p('id', str, 'message id')],
      body: { schema: obj({ reason: { type: 'string', minLength: 1, maxLength: 2000 } }) },
      responses: { '200': ok('dismissed', ref('DismissResult')) },
      errors: { '404': 'no such message', '409': 'the message is not held' },
    }),
  },
  '/api/me': {
    get: op({
      operationId: 'getMe',
      summary: 'Who the token is (name, role, reader), for the console',
      tag: 'console',
      roles: ALL_ROLES,
      responses: { '200': ok('the principal', ref('Me')) },
    }),
  },
  '/api/dashboard': {
    get: op({
      operationId: 'getDashboard',
      summary: "Live counts for the console: today's activity, cases by state, queues, SLA breaches, write-backs, held messages",
      tag: 'console',
      roles: [Role.admin, Role.qa],
      responses: { '200': ok('the counts', ref('Dashboard')) },
    }),
  },
  '/api/stats': {
    get: op({
      operationId: 'getStats',
      summary: 'Second reads and discordance per first reader, modality and second reader, turnaround percentiles, over time',
      tag: 'console',
      roles: [Role.admin, Role.qa],
      parameters: [
        q('from', str, 'ISO-8601; default: 30 days before `to`'),
        q('to', str, 'ISO-8601; default: now. At most three years after `from`'),
        q('bucket', oneOfStrings(['day', 'week']), 'default: week for periods over 92 days, else day'),
        q('format', oneOfStrings(['json', 'csv'])),
        q('table', oneOfStrings(STATS_TABLES), 'with format=csv: which table (default radiologist-modality); peer-review: one row per second read'),
        q('radiologist', str, "one first reader's statistics (their page)"),
      ],
      responses: { '200': { description: 'the statistics (JSON), or one table as CSV', content: { 'application/json': { schema: ref('Stats') }, 'text/csv': { schema: str } } } },
    }),
  },
  '/api/instances': {
    get: op({
      operationId: 'listGatewayInstances',
      summary: 'Every gateway instance on this database: heartbeat, liveness and what it has claimed',
      tag: 'console',
      roles: [Role.admin, Role.qa],
      responses: { '200': ok('instances', obj({ self: { type: 'string', description: 'the id of the instance that answered' }, items: arr(ref('GatewayInstance')) })) },
    }),
  },
  '/api/deliveries': {
    get: op({
      operationId: 'listDeliveries',
      summary: 'Delivery jobs (a study to a destination)',
      tag: 'cases',
      roles: [Role.admin, Role.qa, Role.system],
      parameters: [q('state', oneOfStrings(Object.values(DeliveryState))), q('destinationId', str), limit(100, 1000), offset],
      responses: { '200': ok('deliveries', items('DeliveryListItem')) },
    }),
  },
  '/api/rules': {
    get: op({
      operationId: 'getRules',
      summary: 'The rule set in force, with the built-in default lists',
      tag: 'rules',
      roles: [Role.admin, Role.qa, Role.system],
      responses: { '200': ok('the rule set', ref('RuleSet')) },
    }),
    put: op({
      operationId: 'putRules',
      summary: 'Replace the rule set: validated, versioned, audited',
      description: '201 with a new version; 200 when the set equals the one in force. 400 lists every problem with its path.',
      tag: 'rules',
      roles: [Role.admin, Role.qa],
      body: { schema: ref('RuleSetInput'), yaml: 'the text of a rules file (as config/rules.yaml)' },
      responses: { '201': ok('new version', ref('RuleSetUpdate')), '200': ok('unchanged', ref('RuleSetUpdate')) },
    }),
  },
  '/api/rules/versions': {
    get: op({
      operationId: 'listRuleVersions',
      summary: 'Every stored version of the rule set',
      tag: 'rules',
      roles: [Role.admin, Role.qa],
      responses: { '200': ok('versions', items('RuleSetVersionSummary')) },
    }),
  },
  '/api/rules/versions/{version}': {
    get: op({
      operationId: 'getRuleVersion',
      summary: 'One stored version of the rule set',
      tag: 'rules',
      roles: [Role.admin, Role.qa],
      parameters: [p('version', { type: 'integer', minimum: 1 })],
      responses: { '200': ok('the version', ref('RuleSetVersion')) },
      errors: { '400': 'version is not a positive integer', '404': 'no such version' },
    }),
  },
  '/api/rules/dry-run': {
    post: op({
      operationId: 'dryRunRules',
      summary: 'Which stored studies a rule set would flag, with reasons; changes nothing',
      tag: 'rules',
      roles: [Role.admin, Role.qa],
      body: { schema: ref('DryRunRequest') },
      responses: { '200': ok('the outcome', ref('DryRunResult')) },
    }),
  },
  '/api/rules/keyword-preview': {
    post: op({
      operationId: 'previewKeywords',
      summary: "How the rules' text matching reads each keyword in a sentence (negation preview)",
      tag: 'rules',
      roles: [Role.admin, Role.qa],
      body: { schema: obj({ text: { type: 'string', maxLength: 10_000 }, keywords: { ...arr(str), minItems: 1 } }) },
      responses: {
        '200': ok(
          'each keyword with its class',
          obj({ items: arr(obj({ keyword: str, class: oneOfStrings(['affirmed', 'uncertain', 'questioned', 'negated', 'absent']) })) }),
        ),
      },
    }),
  },
  '/api/sampling': {
    get: op({
      operationId: 'listSamplingBuckets',
      summary: 'QA sampling counters per rule x radiologist x modality x period, with the quota',
      tag: 'rules',
      roles: [Role.admin, Role.qa],
      parameters: [q('period', str, 'period key, e.g. 2026-03'), q('ruleId', str)],
      responses: {
        '200': ok(
          'buckets and their cells (estimate with Wilson interval, draw probability of the next study)',
          obj({ cells: arr(ref('SamplingCell')), items: arr(ref('SamplingBucket')) }),
        ),
      },
    }),
  },
  '/api/audit': {
    get: op({
      operationId: 'listAudit',
      summary: 'Who did what, when',
      tag: 'audit',
      roles: [Role.admin, Role.qa],
      parameters: [
        q('entityType', str),
        q('entityId', str),
        q('actor', str),
        q('action', str),
        q('from', str, 'ISO-8601 date or date-time'),
        q('to', str, 'ISO-8601 date or date-time'),
        limit(200, 5000),
      ],
      responses: { '200': ok('audit events', items('AuditEvent')) },
    }),
  },
};

export const openApiDocument: OpenApiDocument = {
  openapi: '3.1.0',
  info: {
    title: 'Second-read gateway',
    version: '1',
    description: 'Radiology second-read gateway HTTP API (DESIGN.md section 3). JSON; `Authorization: Bearer <token>`; 401 without, 403 for the wrong role.',
  },
  jsonSchemaDialect: 'https://spec.openapis.org/oas/3.1/dialect/base',
  servers: [{ url: '/' }],
  tags: [
    { name: 'operations', description: 'health, metrics, this document' },
    { name: 'studies', description: 'studies received over DICOM, with linked HL7' },
    { name: 'messages', description: 'received HL7 messages' },
    { name: 'cases', description: 'second-read cases, deliveries, second reports' },
    { name: 'rules', description: 'the rule set and QA sampling' },
    { name: 'audit', description: 'the audit log' },
    { name: 'console', description: 'what the web console reads' },
  ],
  paths,
  components: {
    schemas,
    securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'a token from auth.tokens in the gateway config' } },
  },
};
