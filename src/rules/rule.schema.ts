/**
 * Validation of a rule set (YAML or JSON, already parsed) and the default
 * keyword/finding lists. Every object is strict: a misspelt key in YAML must
 * be an error, not a rule that silently never fires.
 */
import { z } from 'zod';
import { parseIcd10Pattern } from './icd10.js';
import { phraseWords } from './text-match.js';
import {
  DIAGNOSIS_SOURCES,
  PRIORITIES,
  RADPEER_SCORES,
  RULE_KINDS,
  SAMPLING_PERIODS,
  TEXT_SOURCES,
  type Condition,
  type FindingSpec,
  type Rule,
} from './rule.types.js';

export interface DefaultLists {
  oncologyCodes: { include: string[]; exclude: string[]; personalHistory: string[] };
  oncologyKeywords: string[];
  highStakesKeywords: string[];
  aiFindings: FindingSpec[];
  indicationConditions: FindingSpec[];
}

/** Fresh copies of the lists rules use when they leave a list out (so the API can show them). */
export function defaultLists(): DefaultLists {
  return {
    oncologyCodes: {
      // C00-C96 malignant (C4A, C7A, C7B included), D00-D09 in situ, D37-D49 uncertain/unspecified behaviour.
      // D3A (benign neuroendocrine) sorts between D36 and D37, so it is outside D37-D49 without an exclusion.
      include: ['C00-C96', 'D00-D09', 'D37-D49'],
      exclude: [],
      personalHistory: ['Z85'],
    },
    oncologyKeywords: [
      'staging',
      'restaging',
      're-staging',
      'metasta*',
      'carcinoma*',
      'adenocarcinoma*',
      'lymphoma*',
      'malignancy',
      'BI-RADS 4*',
      'BI-RADS 5*',
      'BI-RADS category 4*',
      'BI-RADS category 5*',
      'BIRADS 4*',
      'BIRADS 5*',
      'Lung-RADS 4*',
      'Lung-RADS category 4*',
      'LungRADS 4*',
    ],
    highStakesKeywords: [
      'surgical planning',
      'surgery planning',
      'operative planning',
      'presurgical',
      'pre-surgical',
      'pre-operative',
      'preoperative',
      'pre-op',
      'preop',
      'transplant evaluation',
      'transplant work-up',
      'transplant workup',
      'pre-transplant',
      'pretransplant',
      'transplant candidate',
      'biopsy planning',
      'pre-biopsy',
      'prebiopsy',
    ],
    aiFindings: [
      { id: 'pulmonary-nodule', synonyms: ['nodule*', 'pulmonary nodule', 'lung nodule', 'pulmonary mass', 'lung mass', 'mass'] },
      { id: 'pulmonary-embolism', synonyms: ['pulmonary embol*', 'embol*', 'PE', 'filling defect*', 'thrombus', 'thrombi'] },
      { id: 'intracranial-hemorrhage', synonyms: ['hemorrhage', 'haemorrhage', 'bleed', 'hematoma', 'haematoma', 'ICH', 'SAH', 'SDH'] },
      { id: 'pneumothorax', synonyms: ['pneumothorax', 'pneumothoraces', 'PTX'] },
      { id: 'fracture', synonyms: ['fracture*', 'fx'] },
      { id: 'pleural-effusion', synonyms: ['pleural effusion*', 'effusion*'] },
      { id: 'large-vessel-occlusion', synonyms: ['large vessel occlusion', 'LVO', 'occlusion', 'occluded'] },
      { id: 'pneumoperitoneum', synonyms: ['pneumoperitoneum', 'free air', 'free intraperitoneal air'] },
    ],
    indicationConditions: [
      { id: 'pulmonary-embolism', synonyms: ['pulmonary embol*', 'embol*', 'PE'] },
      { id: 'aortic-dissection', synonyms: ['aortic dissection', 'dissection'] },
      { id: 'appendicitis', synonyms: ['appendicitis'] },
      { id: 'intracranial-hemorrhage', synonyms: ['intracranial hemorrhage', 'intracranial haemorrhage', 'ICH', 'hemorrhage', 'haemorrhage', 'bleed'] },
    ],
  };
}

// ---------------------------------------------------------------------------

const nonEmpty = z.string().trim().min(1, 'must not be empty');

/** A single string is accepted where a list is expected (`modality: CT`). */
const stringList = z.union([nonEmpty, z.array(nonEmpty).min(1, 'must not be empty')]).transform((v) => (Array.isArray(v) ? v : [v]));

const phrase = nonEmpty.superRefine((v, ctx) => {
  try {
    phraseWords(v);
  } catch {
    ctx.addIssue({ code: 'custom', message: `phrase "${v}" has no letters or digits` });
  }
});
const phraseList = z.array(phrase).min(1, 'must not be empty');

const icdPattern = nonEmpty.superRefine((v, ctx) => {
  const p = parseIcd10Pattern(v);
  if (typeof p === 'string') ctx.addIssue({ code: 'custom', message: p });
});

const HHMM = /^([01]\d|2[0-3]):[0-5]\d$/;

function validTimeZone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat('en-GB', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

const conditionSchema: z.ZodType<Condition, unknown> = z.lazy(() =>
  z
    .strictObject({
      modality: stringList.optional(),
      bodyPart: stringList.optional(),
      procedureCode: stringList.optional(),
      ageYears: z
        .strictObject({ min: z.number().nonnegative().optional(), max: z.number().nonnegative().optional() })
        .refine((a) => a.min !== undefined || a.max !== undefined, 'give min, max or both')
        .refine((a) => a.min === undefined || a.max === undefined || a.min <= a.max, 'min is greater than max')
        .optional(),
      referringService: stringList.optional(),
      orderPriority: stringList.optional(),
      primaryRadiologist: stringList.optional(),
      callingAe: stringList.optional(),
      timeOfDay: z
        .strictObject({
          from: z.string().regex(HHMM, 'a time of day "HH:MM" (00:00 to 23:59)'),
          to: z.string().regex(HHMM, 'a time of day "HH:MM" (00:00 to 23:59)'),
          timeZone: z.string().refine(validTimeZone, 'an IANA time zone such as Europe/London').optional(),
        })
        .refine((t) => t.from !== t.to, 'from and to are the same time (an empty or whole-day window)')
        .optional(),
      all: z.array(conditionSchema).min(1, 'must not be empty').optional(),
      any: z.array(conditionSchema).min(1, 'must not be empty').optional(),
      not: conditionSchema.optional(),
    })
    .refine((c) => Object.values(c).some((v) => v !== undefined), 'empty condition (it would always match)'),
);

const findingSpec = z.strictObject({
  id: nonEmpty,
  codes: z.array(nonEmpty).optional(),
  synonyms: phraseList,
});

const common = {
  id: z
    .string()
    .trim()
    .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'use letters, digits, ".", "_" and "-" (it appears in bucket keys and case ids)'),
  enabled: z.boolean().default(true),
  description: z.string().optional(),
  priority: z.enum(PRIORITIES),
  slaHours: z.number().positive().optional(),
  destination: nonEmpty.optional(),
  readerGroup: nonEmpty.optional(),
  blinded: z.boolean().default(true),
  deidentify: z.boolean().optional(),
  /** Overrides the gateway's `priors` settings for cases this rule opens (keys left out keep the gateway's). */
  priors: z
    .strictObject({
      maxStudies: z.number().int().min(0).optional(),
      lookbackDays: z.number().int().positive().optional(),
      sameModality: z.boolean().optional(),
    })
    .optional(),
  when: conditionSchema.optional(),
  arbitration: z
    .strictObject({
      // YAML reads `when: [1, 2b]` with 1 as a number.
      when: z
        .array(z.preprocess((v) => (typeof v === 'number' ? String(v) : v), z.enum(RADPEER_SCORES)))
        .min(1, 'must not be empty')
        .transform((l) => [...new Set(l)]),
      readerGroup: nonEmpty.optional(),
    })
    .optional(),
};

const keywordSources = z.array(z.enum(TEXT_SOURCES)).min(1, 'must not be empty');

const oncology = z.strictObject({
  ...common,
  kind: z.literal('oncology'),
  prospective: z.boolean().default(false),
  codes: z
    .strictObject({
      include: z.array(icdPattern).optional(),
      exclude: z.array(icdPattern).optional(),
      personalHistory: z.boolean().default(false),
      sources: z.array(z.enum(DIAGNOSIS_SOURCES)).default([...DIAGNOSIS_SOURCES]),
    })
    .default({ personalHistory: false, sources: [...DIAGNOSIS_SOURCES] }),
  keywords: z.array(phrase).optional(),
  extraKeywords: phraseList.optional(),
  keywordSources: keywordSources.default(['indication', 'report']),
  uncertainCountsAsPositive: z.boolean().default(true),
});

const discordance = z.strictObject({
  ...common,
  kind: z.literal('discordance'),
  checks: z
    .strictObject({
      aiFinding: z.boolean().default(true),
      indicationNegative: z.boolean().default(true),
      correctedReport: z.boolean().default(true),
    })
    .default({ aiFinding: true, indicationNegative: true, correctedReport: true }),
  aiFindings: z.array(findingSpec).optional(),
  extraAiFindings: z.array(findingSpec).min(1).optional(),
  indicationConditions: z.array(findingSpec).optional(),
  extraIndicationConditions: z.array(findingSpec).min(1).optional(),
  unmappedAiFindings: z.enum(['literal', 'ignore']).default('literal'),
  uncertainCountsAsPositive: z.boolean().default(true),
});

const sampling = z
  .strictObject({
    ...common,
    kind: z.literal('sampling'),
    rate: z.number().gt(0, 'must be greater than 0').max(1, 'must be at most 1'),
    period: z.enum(SAMPLING_PERIODS),
    minimum: z.number().int().nonnegative().default(0),
    maximum: z.number().int().positive().optional(),
    excludeRadiologists: z.array(nonEmpty).default([]),
    mode: z.enum(['quota', 'precision']).optional(),
    targetHalfWidth: z.number().gt(0, 'must be greater than 0').max(0.5, 'must be at most 0.5').optional(),
    confidence: z.number().min(0.5, 'must be at least 0.5').max(0.999, 'must be at most 0.999').optional(),
  })
  .superRefine((r, ctx) => {
    if (r.mode === 'precision' && r.targetHalfWidth === undefined) {
      ctx.addIssue({ code: 'custom', path: ['targetHalfWidth'], message: 'required with mode: precision (e.g. 0.02 for +/- 2 percentage points)' });
    }
    if (r.mode !== 'precision' && (r.targetHalfWidth !== undefined || r.confidence !== undefined)) {
      ctx.addIssue({ code: 'custom', path: ['mode'], message: 'targetHalfWidth and confidence need mode: precision' });
    }
    if (r.maximum !== undefined && r.maximum < r.minimum) {
      ctx.addIssue({ code: 'custom', path: ['maximum'], message: `maximum ${r.maximum} is below minimum ${r.minimum}` });
    }
  });

const highStakes = z.strictObject({
  ...common,
  kind: z.literal('high-stakes'),
  prospective: z.boolean().default(false),
  procedureCodes: z.array(nonEmpty).default([]),
  keywords: z.array(phrase).optional(),
  extraKeywords: phraseList.optional(),
  keywordSources: keywordSources.default(['procedure', 'indication']),
  uncertainCountsAsPositive: z.boolean().default(true),
});

const manual = z.strictObject({
  ...common,
  kind: z.literal('manual'),
  sources: z.strictObject({ api: z.boolean().default(true), orderFlag: z.boolean().default(true) }).default({ api: true, orderFlag: true }),
});

const ruleSchema = z.discriminatedUnion('kind', [oncology, discordance, sampling, highStakes, manual]);
const ruleListSchema = z.array(ruleSchema);

// Compile-time check that the schema produces exactly the documented types.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const schemaMatchesTypes: Same<z.output<typeof ruleSchema>, Rule> = true;
void schemaMatchesTypes;

export interface RuleSetError {
  /** e.g. `rules[3].when.modality` */
  path: string;
  message: string;
}

export type RuleSetValidation = { ok: true; rules: Rule[] } | { ok: false; errors: RuleSetError[] };

export interface ValidateOptions {
  /** destination ids of the gateway config; when given, a rule naming another id is an error */
  knownDestinations?: readonly string[];
}

/**
 * Validates a parsed rule set: a list of rules, or `{rules: [...]}` as in
 * `config/rules.yaml`. Returns every problem, each with the path of the
 * offending field, never just the first.
 */
/**
 * Deeper than any real rule set (a condition adds one or two levels). The condition schema is
 * recursive: a body nested a few thousand levels deep overflowed the stack inside zod and came
 * back as a 500 (found by the HTTP fuzzer), so depth is checked first, without recursion.
 */
export const MAX_RULE_NESTING = 64;

function nestedDeeperThan(value: unknown, limit: number): boolean {
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (v === null || typeof v !== 'object') continue;
    if (depth > limit) return true;
    for (const child of Array.isArray(v) ? v : Object.values(v)) stack.push([child, depth + 1]);
  }
  return false;
}

export function validateRuleSet(input: unknown, options: ValidateOptions = {}): RuleSetValidation {
  let list: unknown;
  const errors: RuleSetError[] = [];
  if (nestedDeeperThan(input, MAX_RULE_NESTING)) {
    return { ok: false, errors: [{ path: 'rules', message: `nested deeper than ${MAX_RULE_NESTING} levels` }] };
  }
  if (Array.isArray(input)) {
    list = input;
  } else if (input !== null && typeof input === 'object' && 'rules' in input) {
    for (const key of Object.keys(input)) {
      if (key !== 'rules') errors.push({ path: key, message: `unknown key "${key}" (a rule file has only "rules")` });
    }
    list = (input as { rules: unknown }).rules;
  } else if (input === null || input === undefined) {
    list = [];
  } else {
    return { ok: false, errors: [{ path: 'rules', message: 'expected a list of rules or an object {rules: [...]}' }] };
  }

  const parsed = ruleListSchema.safeParse(list ?? []);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) errors.push(...formatIssue(issue));
    return { ok: false, errors };
  }
  const rules = parsed.data;
  const firstIndex = new Map<string, number>();
  rules.forEach((rule, i) => {
    const earlier = firstIndex.get(rule.id);
    if (earlier !== undefined) errors.push({ path: `rules[${i}].id`, message: `duplicate rule id "${rule.id}" (also rules[${earlier}])` });
    else firstIndex.set(rule.id, i);
    if (rule.destination !== undefined && rule.readerGroup !== undefined) {
      errors.push({ path: `rules[${i}].readerGroup`, message: 'give either destination or readerGroup, not both' });
    }
    if (options.knownDestinations && rule.destination !== undefined && !options.knownDestinations.includes(rule.destination)) {
      errors.push({
        path: `rules[${i}].destination`,
        message: `unknown destination "${rule.destination}" (known: ${options.knownDestinations.join(', ') || 'none'})`,
      });
    }
    if (rule.kind === 'discordance') checkUniqueFindingIds(rule.aiFindings, rule.extraAiFindings, `rules[${i}]`, 'aiFindings', errors);
  });
  return errors.length > 0 ? { ok: false, errors } : { ok: true, rules };
}

function checkUniqueFindingIds(base: FindingSpec[] | undefined, extra: FindingSpec[] | undefined, at: string, field: string, errors: RuleSetError[]): void {
  const seen = new Set<string>();
  for (const [list, name] of [
    [base, field],
    [extra, `extra${field[0]!.toUpperCase()}${field.slice(1)}`],
  ] as const) {
    list?.forEach((f, j) => {
      if (seen.has(f.id)) errors.push({ path: `${at}.${name}[${j}].id`, message: `duplicate finding id "${f.id}"` });
      seen.add(f.id);
    });
  }
}

function formatPath(path: readonly PropertyKey[]): string {
  let out = 'rules';
  for (const seg of path) out += typeof seg === 'number' ? `[${seg}]` : `.${String(seg)}`;
  return out;
}

function formatIssue(issue: z.core.$ZodIssue): RuleSetError[] {
  const path = formatPath(issue.path);
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => {
      const hint = closestKnownKey(key);
      return { path: `${path}.${key}`, message: `unknown key "${key}"${hint ? ` (did you mean "${hint}"?)` : ''}` };
    });
  }
  if (issue.code === 'invalid_union' && issue.path[issue.path.length - 1] === 'kind') {
    return [{ path, message: `unknown or missing rule kind; expected one of ${RULE_KINDS.join(', ')}` }];
  }
  if (issue.code === 'invalid_union') {
    // The only other unions are "string or list of strings".
    return [{ path, message: 'expected a string or a list of strings' }];
  }
  const message = issue.code === 'invalid_type' && /received undefined/.test(issue.message) ? 'required' : issue.message;
  return [{ path, message }];
}

const KNOWN_KEYS = [
  ...Object.keys(common),
  'kind',
  'prospective',
  'codes',
  'include',
  'exclude',
  'personalHistory',
  'sources',
  'keywords',
  'extraKeywords',
  'keywordSources',
  'uncertainCountsAsPositive',
  'checks',
  'aiFinding',
  'indicationNegative',
  'correctedReport',
  'aiFindings',
  'extraAiFindings',
  'indicationConditions',
  'extraIndicationConditions',
  'unmappedAiFindings',
  'synonyms',
  'rate',
  'period',
  'minimum',
  'maximum',
  'excludeRadiologists',
  'mode',
  'targetHalfWidth',
  'confidence',
  'procedureCodes',
  'api',
  'orderFlag',
  'modality',
  'bodyPart',
  'procedureCode',
  'ageYears',
  'min',
  'max',
  'referringService',
  'orderPriority',
  'primaryRadiologist',
  'callingAe',
  'timeOfDay',
  'from',
  'to',
  'timeZone',
  'all',
  'any',
  'not',
  'arbitration',
];

function closestKnownKey(key: string): string | undefined {
  let best: string | undefined;
  let bestDistance = 3;
  for (const known of KNOWN_KEYS) {
    const d = editDistance(key.toLowerCase(), known.toLowerCase());
    if (d < bestDistance) {
      bestDistance = d;
      best = known;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diag = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = row[j]!;
      row[j] = Math.min(up + 1, row[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return row[b.length]!;
}
