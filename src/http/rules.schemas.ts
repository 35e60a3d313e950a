import { z } from 'zod';
import { Role } from '../config/schema.js';
import { PRIORITIES, RULE_KINDS } from '../rules/rule.types.js';
import { defineRoute, described, int, isoInstant, nint, nnum, nstr, time } from './api-schema.js';

export const Reason = z
  .strictObject({
    ruleId: z.string(),
    kind: z.enum(RULE_KINDS),
    detail: described(z.string(), 'the evidence; left out for a reader while the case is blinded or de-identified').optional(),
  })
  .meta({ id: 'Reason' });

const Priority = z.enum(PRIORITIES);
/** A JSON object whose shape the rule engine's own types describe (config/rules.yaml); typed loosely so those interfaces fit. */
const jsonObject = z.unknown().meta({ type: 'object' });
const RuleSource = z.enum(['config', 'api']);

/** As answered; the fields of each kind are described in config/rules.yaml. */
export const Rule = z
  .looseObject({
    id: z.string(),
    kind: z.enum(RULE_KINDS),
    priority: Priority,
    enabled: z.boolean().optional(),
    blinded: z.boolean().optional(),
    description: z.string().optional(),
    slaHours: z.number().optional(),
    destination: z.string().optional(),
    readerGroup: z.string().optional(),
    deidentify: z.boolean().optional(),
    // Typed as a JSON object in the document; its shape is the rule engine's Condition (config/rules.yaml).
    when: z.unknown().meta({ type: 'object', description: 'the conditions (config/rules.yaml)' }).optional(),
  })
  .meta({ id: 'Rule', description: 'One rule; the fields of each kind are described in config/rules.yaml' });

/**
 * A rule as sent: any object here; the rule-set validator (rules/rule.schema.ts) checks it and lists
 * every problem as rules[i].field, which a second, looser copy of its rules here would only blur.
 */
const RuleInput = described(z.record(z.string(), z.unknown()), 'a rule (see the Rule schema and config/rules.yaml); checked by the rule-set validator');

export const RuleSetInput = z
  .union(
    [
      z.strictObject({ rules: z.array(RuleInput), comment: z.string().optional() }),
      z.strictObject({ yaml: described(z.string(), 'a rules file as YAML text, stored with the version (comments kept)'), comment: z.string().optional() }),
      z.array(RuleInput),
    ],
    { error: 'expected {rules: [...], comment?}, {yaml, comment?}, a list of rules, or a YAML rules file' },
  )
  .meta({ id: 'RuleSetInput', description: '{rules, comment?}, {yaml, comment?} or a bare list of rules' });

const RuleSet = z
  .strictObject({
    version: int,
    createdAt: time,
    createdBy: z.string(),
    source: RuleSource,
    rules: z.array(Rule),
    yaml: described(nstr, 'the YAML text of this version as written (comments kept); null when it was saved as JSON'),
    defaults: z
      .looseObject({
        oncologyCodes: jsonObject,
        oncologyKeywords: z.array(z.string()),
        highStakesKeywords: z.array(z.string()),
        aiFindings: z.array(jsonObject),
        indicationConditions: z.array(jsonObject),
        aiSenders: described(
          z.array(z.string()),
          'hl7.aiSenders: the MSH-3 applications whose ORU^R01 are AI results, which discordance rules read (configuration, not part of a rule)',
        ),
      })
      .meta({ description: 'the built-in lists a rule uses when it leaves its own out, and the configured AI senders' }),
  })
  .meta({ id: 'RuleSet' });

const RuleSetUpdate = z
  .strictObject({
    version: int,
    created: described(z.boolean(), 'false when the set equals the one in force (not versioned again)'),
    change: z.strictObject({
      added: z.array(z.string()),
      removed: z.array(z.string()),
      changed: z.array(z.strictObject({ id: z.string(), fields: z.array(z.string()) })),
    }),
    rules: z.array(Rule),
  })
  .meta({ id: 'RuleSetUpdate' });

const RuleSetVersionSummary = z
  .strictObject({ version: int, source: RuleSource, createdBy: z.string(), createdAt: time, comment: nstr })
  .meta({ id: 'RuleSetVersionSummary' });

const RuleSetVersion = z
  .strictObject({ version: int, rules: z.array(Rule), createdAt: time, createdBy: z.string(), source: RuleSource, comment: nstr, yaml: nstr })
  .meta({ id: 'RuleSetVersion' });

export const DryRunRequest = z
  .strictObject({
    rules: described(z.unknown(), 'a candidate rule set (as for PUT /api/rules); absent: the set in force').optional(),
    from: described(isoInstant, 'ISO-8601; studies first received at or after').nullish(),
    to: described(isoInstant, 'ISO-8601; studies first received before').nullish(),
    maxItems: z.number().int().min(0).max(10_000).default(500),
  })
  .meta({ id: 'DryRunRequest' });

const DryRunResult = z
  .strictObject({
    evaluated: int,
    flagged: int,
    items: z.array(
      z.strictObject({
        studyInstanceUid: z.string(),
        accessionNumber: nstr,
        modalities: z.array(z.string()),
        radiologistId: nstr,
        priority: Priority.nullable(),
        reasons: z.array(Reason),
      }),
    ),
    truncated: z.boolean(),
    byRule: z.record(z.string(), int),
    byRadiologistModality: z.array(z.strictObject({ radiologistId: z.string(), modality: z.string(), evaluated: int, flagged: int })),
    forecast: z.strictObject({
      days: described(z.number(), 'days the period covers (from/to, else first to last study received; at least 1)'),
      casesPerDay: z.number(),
      byRule: z.array(z.strictObject({ ruleId: z.string(), flagged: int, casesPerDay: z.number() })),
      readerLoad: z.array(
        z.strictObject({
          readerGroup: described(nstr, "a rule's readerGroup; null: cases without one"),
          openCasesPeak: described(int, 'most cases open at once, each open from its decision until its SLA is due'),
          capacity: described(nint, 'summed maxOpenCases of the available readers who can take the group; null: no reader configured'),
        }),
      ),
      quota: z.array(
        z.strictObject({ ruleId: z.string(), radiologist: z.string(), modality: z.string(), period: z.string(), seen: int, drawn: int, min: int, max: nint }),
      ),
    }),
    diff: z.strictObject({
      activeVersion: int,
      newlyFlagged: described(z.array(z.string()), 'StudyInstanceUIDs the candidate flags and the active version does not'),
      noLongerFlagged: described(z.array(z.string()), 'StudyInstanceUIDs the active version flags and the candidate does not'),
      truncated: z.boolean(),
    }),
    from: time.nullable(),
    to: time.nullable(),
    ruleCount: int,
    elapsedMs: int,
  })
  .meta({ id: 'DryRunResult' });

export const KeywordPreviewRequest = z.strictObject({
  text: z.string().max(10_000),
  keywords: z.array(z.string().trim().min(1).max(200)).min(1).max(200),
});

const SamplingCell = z
  .strictObject({
    ruleId: z.string(),
    radiologist: z.string(),
    modality: z.string(),
    period: z.string(),
    seen: int,
    selected: described(int, 'studies drawn in the period'),
    reviewed: described(int, 'second reads of the drawn studies so far'),
    discrepant: described(int, 'of those, RADPEER 2a and worse'),
    rate: described(nnum, 'discrepant / reviewed'),
    ciLow: described(nnum, 'Wilson interval at the rule confidence'),
    ciHigh: nnum,
    drawProbability: described(z.number(), 'probability that the next study of the cell is drawn'),
    mode: z.enum(['quota', 'precision']),
    targetHalfWidth: nnum,
    confidence: z.number(),
    needed: described(nint, 'precision mode: reviews the target half-width needs at the planning rate'),
  })
  .meta({ id: 'SamplingCell' });

const SamplingBucket = z
  .strictObject({
    ruleId: z.string(),
    radiologistId: z.string(),
    modality: z.string(),
    period: z.string(),
    seen: int,
    selected: int,
    quota: z.strictObject({ rate: z.number(), minimum: int, maximum: nint, period: z.string() }).nullable(),
    updatedAt: time,
  })
  .meta({ id: 'SamplingBucket' });

const qa = [Role.admin, Role.qa] as const;

export const rulesRoutes = {
  getRules: defineRoute({
    method: 'get',
    path: '/api/rules',
    operationId: 'getRules',
    summary: 'The rule set in force, with the built-in default lists',
    tag: 'rules',
    roles: [Role.admin, Role.qa, Role.system],
    responses: { 200: { description: 'the rule set', schema: RuleSet } },
  }),
  putRules: defineRoute({
    method: 'put',
    path: '/api/rules',
    operationId: 'putRules',
    summary: 'Replace the rule set: validated, versioned, audited',
    description: '201 with a new version; 200 when the set equals the one in force. 400 lists every problem with its path.',
    tag: 'rules',
    roles: qa,
    body: RuleSetInput,
    yamlBody: 'the text of a rules file (as config/rules.yaml)',
    responses: { 201: { description: 'new version', schema: RuleSetUpdate }, 200: { description: 'unchanged', schema: RuleSetUpdate } },
  }),
  listRuleVersions: defineRoute({
    method: 'get',
    path: '/api/rules/versions',
    operationId: 'listRuleVersions',
    summary: 'Every stored version of the rule set',
    tag: 'rules',
    roles: qa,
    responses: { 200: { description: 'versions', schema: z.strictObject({ items: z.array(RuleSetVersionSummary) }) } },
  }),
  getRuleVersion: defineRoute({
    method: 'get',
    path: '/api/rules/versions/:version',
    operationId: 'getRuleVersion',
    summary: 'One stored version of the rule set',
    tag: 'rules',
    roles: qa,
    params: z.object({ version: z.coerce.number().int().min(1).max(Number.MAX_SAFE_INTEGER) }),
    responses: { 200: { description: 'the version', schema: RuleSetVersion } },
    errors: { 400: 'version is not a positive integer', 404: 'no such version' },
  }),
  dryRunRules: defineRoute({
    method: 'post',
    path: '/api/rules/dry-run',
    operationId: 'dryRunRules',
    summary: 'Which stored studies a rule set would flag, with reasons; changes nothing',
    tag: 'rules',
    roles: qa,
    body: DryRunRequest,
    bodyOptional: true,
    responses: { 200: { description: 'the outcome', schema: DryRunResult } },
  }),
  previewKeywords: defineRoute({
    method: 'post',
    path: '/api/rules/keyword-preview',
    operationId: 'previewKeywords',
    summary: "How the rules' text matching reads each keyword in a sentence (negation preview)",
    tag: 'rules',
    roles: qa,
    body: KeywordPreviewRequest,
    responses: {
      200: {
        description: 'each keyword with its class',
        schema: z.strictObject({
          items: z.array(z.strictObject({ keyword: z.string(), class: z.enum(['affirmed', 'uncertain', 'questioned', 'negated', 'absent']) })),
        }),
      },
    },
  }),
  listSamplingBuckets: defineRoute({
    method: 'get',
    path: '/api/sampling',
    operationId: 'listSamplingBuckets',
    summary: 'QA sampling counters per rule x radiologist x modality x period, with the quota',
    tag: 'rules',
    roles: qa,
    query: z.object({ period: described(z.string(), 'period key, e.g. 2026-03').optional(), ruleId: z.string().optional() }),
    responses: {
      200: {
        description: 'buckets and their cells (estimate with Wilson interval, draw probability of the next study)',
        schema: z.strictObject({ cells: z.array(SamplingCell), items: z.array(SamplingBucket) }),
      },
    },
  }),
};
