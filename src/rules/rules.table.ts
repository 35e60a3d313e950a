import type { Selectable } from 'kysely';

export interface RuleSetTable {
  version: number;
  /** The validated rule list as JSON: what evaluation used, exactly. */
  rules_json: string;
  /** SHA-256 of the source text, so a config file that did not change is not versioned again. */
  content_hash: string;
  /** `config` (the rules file at start-up) or `api` (PUT /api/rules). */
  source: string;
  created_by: string;
  comment: string | null;
  created_at: string;
  /** The YAML text as written (comments kept); null when the version came as JSON. */
  source_text: string | null;
}

export interface DecisionTable {
  id: string;
  study_instance_uid: string;
  rule_set_version: number;
  /** What asked for the evaluation: stable, report, corrected-report, order, manual. */
  trigger: string;
  basis: string;
  flagged: number;
  priority: string | null;
  /** JSON [{ruleId, kind, detail}] */
  reasons: string;
  /** JSON [{ruleId, bucketKey, selected}] */
  sampling_slots: string;
  case_id: string | null;
  evaluated_at: string;
}

export interface SamplingBucketTable {
  bucket_key: string;
  rule_id: string;
  radiologist_id: string;
  modality: string;
  period_key: string;
  seen: number;
  selected: number;
  updated_at: string;
}

export type RuleSetRow = Selectable<RuleSetTable>;
export type DecisionRow = Selectable<DecisionTable>;
export type SamplingBucketRow = Selectable<SamplingBucketTable>;

/** Values the gateway generates once and keeps (e.g. the sampling secret when the config gives none). */
export interface SettingTable {
  key: string;
  value: string;
  created_at: string;
}
