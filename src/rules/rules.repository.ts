import type { Db } from '../db/database.js';
import { lockKey } from '../db/dialect.js';
import type { BucketCounters, Decision, Reason, SamplingSlot } from './rule.types.js';
import type { DecisionRow, RuleSetRow, SamplingBucketRow } from './rules.table.js';

export async function latestRuleSet(db: Db, source?: string): Promise<RuleSetRow | undefined> {
  let q = db.selectFrom('rule_sets').selectAll();
  if (source) q = q.where('source', '=', source);
  return q.orderBy('version', 'desc').limit(1).executeTakeFirst();
}

export async function latestRuleSetVersion(db: Db): Promise<number> {
  const row = await db
    .selectFrom('rule_sets')
    .select((eb) => eb.fn.max<number>('version').as('v'))
    .executeTakeFirst();
  return row?.v ?? 0;
}

export async function getRuleSet(db: Db, version: number): Promise<RuleSetRow | undefined> {
  return db.selectFrom('rule_sets').selectAll().where('version', '=', version).executeTakeFirst();
}

export async function listRuleSets(db: Db): Promise<Omit<RuleSetRow, 'rules_json' | 'source_text'>[]> {
  return db.selectFrom('rule_sets').select(['version', 'content_hash', 'source', 'created_by', 'comment', 'created_at']).orderBy('version', 'desc').execute();
}

/** Inserts the next version; run it in a transaction so two writers cannot take the same number. */
export async function insertRuleSet(
  db: Db,
  r: { rulesJson: string; contentHash: string; source: string; createdBy: string; comment: string | null; createdAt: string; sourceText?: string | null },
): Promise<number> {
  // Two instances importing or saving at once would both take max + 1.
  await lockKey(db, 'rule-sets');
  const version = (await latestRuleSetVersion(db)) + 1;
  await db
    .insertInto('rule_sets')
    .values({
      version,
      rules_json: r.rulesJson,
      content_hash: r.contentHash,
      source: r.source,
      created_by: r.createdBy,
      comment: r.comment,
      created_at: r.createdAt,
      source_text: r.sourceText ?? null,
    })
    .execute();
  return version;
}

export async function getSetting(db: Db, key: string): Promise<string | undefined> {
  const row = await db.selectFrom('settings').select('value').where('key', '=', key).executeTakeFirst();
  return row?.value;
}

/** Stores `value` unless the key exists; returns what is stored (first writer wins). */
export async function ensureSetting(db: Db, key: string, value: string, now: string): Promise<string> {
  await db
    .insertInto('settings')
    .values({ key, value, created_at: now })
    .onConflict((oc) => oc.column('key').doNothing())
    .execute();
  return (await getSetting(db, key)) ?? value;
}

export async function insertDecision(
  db: Db,
  d: { id: string; studyInstanceUid: string; ruleSetVersion: number; trigger: string; decision: Decision; caseId: string | null; evaluatedAt: string },
): Promise<void> {
  await db
    .insertInto('decisions')
    .values({
      id: d.id,
      study_instance_uid: d.studyInstanceUid,
      rule_set_version: d.ruleSetVersion,
      trigger: d.trigger,
      basis: d.decision.basis,
      flagged: d.decision.flagged ? 1 : 0,
      priority: d.decision.priority,
      reasons: JSON.stringify(d.decision.reasons),
      sampling_slots: JSON.stringify(d.decision.samplingSlots),
      case_id: d.caseId,
      evaluated_at: d.evaluatedAt,
    })
    .execute();
}

export async function decisionsOfStudies(db: Db, studyUids: readonly string[]): Promise<DecisionRow[]> {
  if (studyUids.length === 0) return [];
  return db.selectFrom('decisions').selectAll().where('study_instance_uid', 'in', studyUids).orderBy('id').execute();
}

export function parseDecisionRow(r: DecisionRow): { flagged: boolean; reasons: Reason[]; samplingSlots: SamplingSlot[] } {
  return {
    flagged: r.flagged === 1,
    reasons: JSON.parse(r.reasons) as Reason[],
    samplingSlots: JSON.parse(r.sampling_slots) as SamplingSlot[],
  };
}

/**
 * Applies counter increments atomically in the database (`seen = seen + 1`),
 * so two evaluations never both take the last slot from a stale read.
 */
export async function applySamplingSlots(
  db: Db,
  slots: readonly (SamplingSlot & { radiologistId: string; modality: string; periodKey: string })[],
  now: string,
): Promise<void> {
  for (const s of slots) {
    const sel = s.selected ? 1 : 0;
    await db
      .insertInto('sampling_buckets')
      .values({
        bucket_key: s.bucketKey,
        rule_id: s.ruleId,
        radiologist_id: s.radiologistId,
        modality: s.modality,
        period_key: s.periodKey,
        seen: 1,
        selected: sel,
        updated_at: now,
      })
      .onConflict((oc) =>
        oc.column('bucket_key').doUpdateSet((eb) => ({
          seen: eb('sampling_buckets.seen', '+', 1),
          selected: eb('sampling_buckets.selected', '+', sel),
          updated_at: now,
        })),
      )
      .execute();
  }
}

export async function listSamplingBuckets(db: Db, f: { periodKey?: string; ruleId?: string }): Promise<SamplingBucketRow[]> {
  let q = db.selectFrom('sampling_buckets').selectAll();
  if (f.periodKey) q = q.where('period_key', '=', f.periodKey);
  if (f.ruleId) q = q.where('rule_id', '=', f.ruleId);
  return q.orderBy('rule_id').orderBy('radiologist_id').orderBy('modality').orderBy('period_key').execute();
}

/** A precision cell plans from this and the previous period: at most two quarters of decisions are read back. */
export const OUTCOME_WINDOW_MS = 200 * 86_400_000;

/** Every counter of one radiologist: the few buckets (rules x modalities x periods) an evaluation may read. */
export async function samplingCountersOfRadiologist(db: Db, radiologistId: string, o: { outcomesSince?: string } = {}): Promise<Map<string, BucketCounters>> {
  const rows = await db.selectFrom('sampling_buckets').select(['bucket_key', 'seen', 'selected']).where('radiologist_id', '=', radiologistId).execute();
  const counters = new Map<string, BucketCounters>(rows.map((r) => [r.bucket_key, { seen: r.seen, selected: r.selected }]));
  if (o.outcomesSince === undefined) return counters;
  for (const [key, out] of await samplingOutcomes(db, radiologistId, o.outcomesSince)) {
    const c = counters.get(key);
    if (c) counters.set(key, { ...c, reviewed: out.reviewed, discrepant: out.discrepant });
  }
  return counters;
}

/**
 * Reviewed second reads of sampled studies per bucket key (the latest
 * version's score counts; RADPEER 2a and worse is discrepant). A decision's
 * slots are JSON, so the radiologist is matched with LIKE (a superset on both
 * engines) and exactly in code.
 */
export async function samplingOutcomes(db: Db, radiologistId?: string, since?: string): Promise<Map<string, { reviewed: number; discrepant: number }>> {
  let q = db
    .selectFrom('decisions as d')
    .innerJoin('second_reports as r', 'r.case_id', 'd.case_id')
    .select(['d.sampling_slots', 'r.case_id', 'r.version', 'r.radpeer_score'])
    .where('d.sampling_slots', '<>', '[]');
  if (since !== undefined) q = q.where('d.evaluated_at', '>=', since);
  if (radiologistId !== undefined) q = q.where('d.sampling_slots', 'like', `%"radiologistId":${JSON.stringify(radiologistId)}%`);
  const latest = new Map<string, { keys: string[]; version: number; score: string }>();
  for (const row of await q.execute()) {
    const keys = (JSON.parse(row.sampling_slots) as SamplingSlot[])
      .filter((s) => s.selected && (radiologistId === undefined || s.radiologistId === radiologistId))
      .map((s) => s.bucketKey);
    if (keys.length === 0) continue;
    const seen = latest.get(row.case_id);
    if (!seen || row.version > seen.version)
      latest.set(row.case_id, { keys: [...new Set([...(seen?.keys ?? []), ...keys])], version: row.version, score: row.radpeer_score });
    else seen.keys = [...new Set([...seen.keys, ...keys])];
  }
  const out = new Map<string, { reviewed: number; discrepant: number }>();
  for (const c of latest.values()) {
    for (const k of c.keys) {
      const o = out.get(k) ?? { reviewed: 0, discrepant: 0 };
      o.reviewed++;
      if (c.score !== '1') o.discrepant++;
      out.set(k, o);
    }
  }
  return out;
}
