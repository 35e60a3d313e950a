/**
 * Types of the rule engine: the rule set as validated from YAML/JSON, the
 * evaluation input the database layer maps its rows to, and the decision.
 * Everything here is plain data so it can cross the HTTP API and be stored.
 */

export const PRIORITIES = ['stat', 'urgent', 'routine'] as const;
export type Priority = (typeof PRIORITIES)[number];

/** Lower is more urgent. */
export const PRIORITY_RANK: Readonly<Record<Priority, number>> = { stat: 0, urgent: 1, routine: 2 };

export const RULE_KINDS = ['oncology', 'discordance', 'sampling', 'high-stakes', 'manual'] as const;
export type RuleKind = (typeof RULE_KINDS)[number];

export const SAMPLING_PERIODS = ['day', 'week', 'month', 'quarter'] as const;
export type SamplingPeriod = (typeof SAMPLING_PERIODS)[number];

/** Where keyword rules look. `procedure` is the order's procedure text plus the study description. */
export const TEXT_SOURCES = ['indication', 'report', 'impression', 'procedure'] as const;
export type TextSource = (typeof TEXT_SOURCES)[number];

export const DIAGNOSIS_SOURCES = ['DG1', 'OBR-31', 'OBR-13'] as const;
export type DiagnosisSource = (typeof DIAGNOSIS_SOURCES)[number];

/**
 * A condition holds when every key present holds (keys are ANDed), so
 * `{modality: [CT], bodyPart: [CHEST]}` means a chest CT. String lists match
 * case-insensitively and may use `*` as a wildcard (`procedureCode: ["CT*"]`).
 * A list field holds when any of the study's values is in the list.
 */
export interface Condition {
  modality?: string[];
  bodyPart?: string[];
  procedureCode?: string[];
  /** inclusive bounds; a study without a known age does not match */
  ageYears?: { min?: number; max?: number };
  referringService?: string[];
  orderPriority?: string[];
  primaryRadiologist?: string[];
  callingAe?: string[];
  /**
   * When the first final report was signed (else when the study is evaluated), as a local
   * time of day in `timeZone` (IANA, default UTC): `from` inclusive, `to` exclusive, "HH:MM";
   * `from` after `to` spans midnight (overnight reads: 22:00 to 07:00).
   */
  timeOfDay?: { from: string; to: string; timeZone?: string };
  all?: Condition[];
  any?: Condition[];
  not?: Condition;
}

/** RADPEER 2016 scores (the second reader's), as a rule's `arbitration.when` lists them. */
export const RADPEER_SCORES = ['1', '2a', '2b', '3a', '3b'] as const;
export type RadpeerScoreOption = (typeof RADPEER_SCORES)[number];

/**
 * Sends a case whose second read scores one of `when` to a third reader, blinded
 * to both reads, whose verdict closes the discrepancy (reports/arbitration.service.ts).
 */
export interface ArbitrationOption {
  when: RadpeerScoreOption[];
  /** the third reader must have this subspecialty (as a rule's readerGroup) */
  readerGroup?: string;
}

interface RuleCommon {
  id: string;
  enabled: boolean;
  description?: string;
  priority: Priority;
  /** overrides the SLA of the priority */
  slaHours?: number;
  /** a destination id from the gateway config; absent = the default destination */
  destination?: string;
  readerGroup?: string;
  /** true: the pool does not see the first report */
  blinded: boolean;
  /** overrides the destination's de-identification setting */
  deidentify?: boolean;
  /** overrides the gateway's `priors` settings for cases this rule opens */
  priors?: { maxStudies?: number; lookbackDays?: number; sameModality?: boolean };
  when?: Condition;
  arbitration?: ArbitrationOption;
}

/** Lists left undefined use the defaults from `defaultLists()`; `extra*` lists add to them. */
export interface OncologyRule extends RuleCommon {
  kind: 'oncology';
  /** may decide on the order alone, before a final report */
  prospective: boolean;
  codes: {
    include?: string[];
    exclude?: string[];
    /** Z85 personal history of malignant neoplasm */
    personalHistory: boolean;
    sources: DiagnosisSource[];
  };
  keywords?: string[];
  extraKeywords?: string[];
  keywordSources: TextSource[];
  uncertainCountsAsPositive: boolean;
}

export interface FindingSpec {
  id: string;
  /** AI OBX-3 identifiers that mean this finding */
  codes?: string[];
  synonyms: string[];
}

export interface DiscordanceRule extends RuleCommon {
  kind: 'discordance';
  checks: { aiFinding: boolean; indicationNegative: boolean; correctedReport: boolean };
  aiFindings?: FindingSpec[];
  extraAiFindings?: FindingSpec[];
  /** conditions an indication may ask about ("r/o PE") */
  indicationConditions?: FindingSpec[];
  extraIndicationConditions?: FindingSpec[];
  /** what to do with a positive AI finding no `aiFindings` entry knows: look for its text literally, or ignore it */
  unmappedAiFindings: 'literal' | 'ignore';
  uncertainCountsAsPositive: boolean;
}

export interface SamplingRule extends RuleCommon {
  kind: 'sampling';
  rate: number;
  period: SamplingPeriod;
  minimum: number;
  maximum?: number;
  /** radiologist ids (or `*` patterns) whose studies are never sampled */
  excludeRadiologists: string[];
  /**
   * `quota` (absent): draw at `rate`. `precision`: draw as often as needed to
   * estimate each cell's RADPEER 2+ rate within +/- `targetHalfWidth` at
   * `confidence` (Wilson interval); `rate` is the draw probability of a cell's first period.
   */
  mode?: 'quota' | 'precision';
  targetHalfWidth?: number;
  confidence?: number;
}

export interface HighStakesRule extends RuleCommon {
  kind: 'high-stakes';
  prospective: boolean;
  procedureCodes: string[];
  keywords?: string[];
  extraKeywords?: string[];
  keywordSources: TextSource[];
  uncertainCountsAsPositive: boolean;
}

export interface ManualRule extends RuleCommon {
  kind: 'manual';
  sources: { api: boolean; orderFlag: boolean };
}

export type Rule = OncologyRule | DiscordanceRule | SamplingRule | HighStakesRule | ManualRule;

// ---------------------------------------------------------------------------
// Evaluation input

export interface StudyInput {
  studyInstanceUid: string;
  accessionNumber?: string;
  patientId?: string;
  modalities: string[];
  bodyParts: string[];
  studyDescription?: string;
  studyDate?: Date;
  patientAgeYears?: number;
  callingAe?: string;
  referringPhysician?: string;
}

export interface DiagnosisInput {
  code: string;
  text?: string;
  source: DiagnosisSource;
}

export interface OrderInput {
  accessionNumber?: string;
  procedureCode?: string;
  procedureText?: string;
  /** OBR-31 */
  reasonForStudy?: { code?: string; text?: string };
  diagnoses: DiagnosisInput[];
  priority?: string;
  referringService?: string;
  indication?: string;
  secondOpinionRequested?: boolean;
}

export type ReportStatus = 'P' | 'F' | 'C' | 'X';

export interface ReportVersion {
  status: ReportStatus;
  text: string;
  impression?: string;
  radiologistId?: string;
  observedAt?: Date;
}

export interface AiResultInput {
  findingCode?: string;
  findingText?: string;
  positive: boolean;
}

export interface ManualRequestInput {
  reason: string;
  requestedBy: string;
  priority?: Priority;
  destinationId?: string;
}

export interface BucketCounters {
  seen: number;
  selected: number;
  /** precision sampling: second reads of this bucket's selected studies, and how many were RADPEER 2+ */
  reviewed?: number;
  discrepant?: number;
}

/** Read access to persisted sampling counters; a `Map<string, BucketCounters>` fits. */
export interface SamplingStateReader {
  get(bucketKey: string): BucketCounters | undefined;
}

/** What earlier evaluations of the same study decided (the parts that matter now). */
export interface PriorDecision {
  flagged: boolean;
  reasons: Reason[];
  samplingSlots: SamplingSlot[];
}

export interface EvaluationInput {
  study: StudyInput;
  order?: OrderInput;
  /** oldest first */
  reports: ReportVersion[];
  aiResults: AiResultInput[];
  manualRequests: ManualRequestInput[];
  priorDecisions?: PriorDecision[];
  samplingState?: SamplingStateReader;
  now: Date;
}

// ---------------------------------------------------------------------------
// Output

export interface Reason {
  ruleId: string;
  kind: RuleKind;
  detail: string;
}

/** Tells the caller to increment `seen` of `bucketKey`, and `selected` when selected. */
export interface SamplingSlot {
  ruleId: string;
  bucketKey: string;
  selected: boolean;
  /** the parts of `bucketKey`, for storing and reporting counters without parsing the key */
  radiologistId: string;
  modality: string;
  periodKey: string;
  /** the probability this study had of being selected (before the draw), for inverse-probability weights */
  probability?: number;
}

export interface Decision {
  flagged: boolean;
  reasons: Reason[];
  /** the most urgent priority of the rules that fired; null when not flagged */
  priority: Priority | null;
  /** the smallest `slaHours` override of the rules that fired */
  slaHours?: number;
  destinationId?: string;
  readerGroup?: string;
  blinded: boolean;
  deidentify?: boolean;
  samplingSlots: SamplingSlot[];
  /** `order-only`: no final/corrected report yet, only manual and prospective rules could fire */
  basis: 'final-report' | 'order-only';
}
