import { Router } from 'express';
import YAML from 'yaml';
import type { z } from 'zod';
import type { Db } from '../db/database.js';
import { ErrorCode, GatewayError } from '../errors.js';
import { dryRun, flaggedDiff } from '../rules/dry-run.js';
import { defaultLists } from '../rules/rule.schema.js';
import { listRuleSets, listSamplingBuckets, samplingOutcomes } from '../rules/rules.repository.js';
import { samplingCells } from '../rules/sampling-cells.js';
import { keywordPreview } from '../rules/keyword-preview.js';
import type { RulesService } from '../rules/rules.service.js';
import type { Rule } from '../rules/rule.types.js';
import { mount } from './api-schema.js';
import { rulesRoutes as spec, type RuleSetInput } from './rules.schemas.js';

/**
 * The rule set: read it, replace it (validated, versioned, audited), try a
 * candidate against stored studies first, and see the sampling quotas.
 * PUT accepts JSON (`{rules, comment}` or a list) or the YAML of a rules file.
 */
/** `aiSenders`: hl7.aiSenders, the MSH-3 applications whose results discordance rules read (shown in the rule builder). */
export function rulesRouter(db: Db, rules: RulesService, o: { aiSenders?: readonly string[] } = {}): Router {
  const r = Router();

  mount(r, spec.getRules, async () => {
    const active = await rules.current();
    return {
      status: 200,
      body: {
        version: active.version,
        createdAt: active.createdAt,
        createdBy: active.createdBy,
        source: source(active.source),
        rules: active.rules.map(asJson),
        yaml: active.yaml,
        defaults: { ...defaultLists(), aiSenders: [...(o.aiSenders ?? [])] },
      },
    };
  });

  mount(r, spec.putRules, async ({ body: input, principal }) => {
    const { value, comment, yaml } = ruleSetFromBody(input);
    const { active, change, created } = await rules.update(value, principal.name, comment, yaml);
    const body = { version: active.version, created, change, rules: active.rules.map(asJson) };
    return created ? { status: 201, body } : { status: 200, body };
  });

  mount(r, spec.listRuleVersions, async () => {
    const rows = await listRuleSets(db);
    return {
      status: 200,
      body: {
        items: rows.map((v) => ({ version: v.version, source: source(v.source), createdBy: v.created_by, createdAt: v.created_at, comment: v.comment })),
      },
    };
  });

  mount(r, spec.getRuleVersion, async ({ params }) => {
    const found = await rules.version(params.version);
    if (!found) throw new GatewayError(ErrorCode.notFound, `no rule-set version ${params.version}`);
    return { status: 200, body: { ...found, source: source(found.source), rules: found.rules.map(asJson) } };
  });

  mount(r, spec.dryRunRules, async ({ body }) => {
    const { rules: candidateInput, maxItems } = body ?? { maxItems: 500 };
    const from = body?.from ?? undefined;
    const to = body?.to ?? undefined;
    const active = await rules.current();
    const candidate = candidateInput === undefined ? active.rules : rules.validate(candidateInput);
    const compiled = rules.compile(candidate);
    if (from && to && from >= to) throw new GatewayError(ErrorCode.invalidInput, 'from must be before to');
    const started = Date.now();
    const { flaggedUids, ...result } = await dryRun(db, compiled, { from, to, maxItems }, rules.forecastContext(candidate));
    // The difference from the version in force, over the same studies (none when the candidate is that version).
    const activeFlagged = candidateInput === undefined ? flaggedUids : (await dryRun(db, active.compiled, { from, to, maxItems: 0 })).flaggedUids;
    const diff = { activeVersion: active.version, ...flaggedDiff(flaggedUids, activeFlagged, Math.max(maxItems, 100)) };
    return { status: 200, body: { ...result, diff, from: from ?? null, to: to ?? null, ruleCount: candidate.length, elapsedMs: Date.now() - started } };
  });

  // What a keyword list makes of a sentence: affirmed, uncertain, questioned, negated or absent (the negation preview of the rule builder).
  mount(r, spec.previewKeywords, ({ body }) => ({ status: 200, body: { items: keywordPreview(body) } }));

  mount(r, spec.listSamplingBuckets, async ({ query: { period: periodKey, ruleId } }) => {
    const active = await rules.current();
    const rows = await listSamplingBuckets(db, { periodKey, ruleId });
    const byId = new Map(active.rules.map((x) => [x.id, x]));
    // The previous period's buckets plan the current one, so cells are computed over every bucket and then filtered.
    const all = periodKey ? await listSamplingBuckets(db, { ruleId }) : rows;
    const buckets = all.map((b) => ({
      ruleId: b.rule_id,
      radiologistId: b.radiologist_id,
      modality: b.modality,
      periodKey: b.period_key,
      seen: b.seen,
      selected: b.selected,
    }));
    const cells = samplingCells(buckets, await samplingOutcomes(db), active.rules).filter((c) => !periodKey || c.period === periodKey);
    return {
      status: 200,
      body: {
        cells,
        items: rows.map((b) => {
          const rule = byId.get(b.rule_id);
          const quota = rule?.kind === 'sampling' ? { rate: rule.rate, minimum: rule.minimum, maximum: rule.maximum ?? null, period: rule.period } : null;
          return {
            ruleId: b.rule_id,
            radiologistId: b.radiologist_id,
            modality: b.modality,
            period: b.period_key,
            seen: b.seen,
            selected: b.selected,
            quota,
            updatedAt: b.updated_at,
          };
        }),
      },
    };
  });
  return r;
}

/** Where a stored version came from (the column is text; the service writes only these two). */
const source = (s: string): 'config' | 'api' => (s === 'config' ? 'config' : 'api');

function parseYaml(text: string): unknown {
  const doc = YAML.parseDocument(text);
  if (doc.errors.length > 0) {
    const errors = doc.errors.map((e) => ({ path: `line ${e.linePos?.[0]?.line ?? '?'}`, message: e.message.split('\n')[0] ?? e.message }));
    throw new GatewayError(ErrorCode.invalidInput, 'rule set is not valid YAML', { details: { errors } });
  }
  return doc.toJS() as unknown;
}

/** The rule set of a PUT body; YAML text (a text body, or `{yaml, comment}`) is stored as written, comments kept. */
function ruleSetFromBody(body: z.output<typeof RuleSetInput> | string): { value: unknown; comment: string | null; yaml: string | null } {
  if (typeof body === 'string') return { value: parseYaml(body), comment: null, yaml: body };
  if (Array.isArray(body)) return { value: body, comment: null, yaml: null };
  if ('yaml' in body) return { value: parseYaml(body.yaml), comment: body.comment ?? null, yaml: body.yaml };
  return { value: { rules: body.rules }, comment: body.comment ?? null, yaml: null };
}

/** A rule as the answer's plain JSON object (the Rule interfaces have no index signature). */
const asJson = (rule: Rule): { [k: string]: unknown } & Rule => ({ ...rule });
