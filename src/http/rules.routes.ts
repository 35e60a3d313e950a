import { Router } from 'express';
import YAML from 'yaml';
import type { Db } from '../db/database.js';
import { ErrorCode, GatewayError } from '../errors.js';
import { dryRun, flaggedDiff } from '../rules/dry-run.js';
import { defaultLists } from '../rules/rule.schema.js';
import { listRuleSets, listSamplingBuckets, samplingOutcomes } from '../rules/rules.repository.js';
import { samplingCells } from '../rules/sampling-cells.js';
import { keywordPreview } from '../rules/keyword-preview.js';
import type { RulesService } from '../rules/rules.service.js';
import { requireRole } from './auth.js';
import { queryInt, queryString, queryTime } from './query.js';

/**
 * The rule set: read it, replace it (validated, versioned, audited), try a
 * candidate against stored studies first, and see the sampling quotas.
 * PUT accepts JSON (`{rules, comment}` or a list) or the YAML of a rules file.
 */
/** `aiSenders`: hl7.aiSenders, the MSH-3 applications whose results discordance rules read (shown in the rule builder). */
export function rulesRouter(db: Db, rules: RulesService, o: { aiSenders?: readonly string[] } = {}): Router {
  const r = Router();
  const qa = requireRole('admin', 'qa');

  r.get('/rules', requireRole('admin', 'qa', 'system'), async (_req, res) => {
    const active = await rules.current();
    res.json({
      version: active.version,
      createdAt: active.createdAt,
      createdBy: active.createdBy,
      source: active.source,
      rules: active.rules,
      yaml: active.yaml,
      defaults: { ...defaultLists(), aiSenders: [...(o.aiSenders ?? [])] },
    });
  });

  r.put('/rules', qa, async (req, res) => {
    const { value, comment, yaml } = ruleSetFromBody(req.body);
    const { active, change, created } = await rules.update(value, req.principal!.name, comment, yaml);
    res.status(created ? 201 : 200).json({ version: active.version, created, change, rules: active.rules });
  });

  r.get('/rules/versions', qa, async (_req, res) => {
    const rows = await listRuleSets(db);
    res.json({
      items: rows.map((v) => ({ version: v.version, source: v.source, createdBy: v.created_by, createdAt: v.created_at, comment: v.comment })),
    });
  });

  r.get('/rules/versions/:version', qa, async (req, res) => {
    const v = queryInt(String(req.params['version']), 0, 1, Number.MAX_SAFE_INTEGER, 'version');
    const found = await rules.version(v);
    if (!found) throw new GatewayError(ErrorCode.notFound, `no rule-set version ${v}`);
    res.json(found);
  });

  r.post('/rules/dry-run', qa, async (req, res) => {
    const body = (typeof req.body === 'object' && req.body !== null ? req.body : {}) as Record<string, unknown>;
    for (const k of Object.keys(body)) {
      if (!['rules', 'from', 'to', 'maxItems'].includes(k)) throw new GatewayError(ErrorCode.invalidInput, `unknown field "${k}"`);
    }
    const active = await rules.current();
    const candidate = body['rules'] === undefined ? active.rules : rules.validate(body['rules']);
    const compiled = rules.compile(candidate);
    const from = queryTime(body['from'], 'from');
    const to = queryTime(body['to'], 'to');
    if (from && to && from >= to) throw new GatewayError(ErrorCode.invalidInput, 'from must be before to');
    const maxItems = body['maxItems'] === undefined ? 500 : queryInt(String(body['maxItems']), 500, 0, 10_000, 'maxItems');
    const started = Date.now();
    const { flaggedUids, ...result } = await dryRun(db, compiled, { from, to, maxItems }, rules.forecastContext(candidate));
    // The difference from the version in force, over the same studies (none when the candidate is that version).
    const activeFlagged = body['rules'] === undefined ? flaggedUids : (await dryRun(db, active.compiled, { from, to, maxItems: 0 })).flaggedUids;
    const diff = { activeVersion: active.version, ...flaggedDiff(flaggedUids, activeFlagged, Math.max(maxItems, 100)) };
    res.json({ ...result, diff, from: from ?? null, to: to ?? null, ruleCount: candidate.length, elapsedMs: Date.now() - started });
  });

  // What a keyword list makes of a sentence: affirmed, uncertain, questioned, negated or absent (the negation preview of the rule builder).
  r.post('/rules/keyword-preview', qa, (req, res) => {
    res.json({ items: keywordPreview(req.body) });
  });

  r.get('/sampling', qa, async (req, res) => {
    const active = await rules.current();
    const periodKey = queryString(req.query['period']);
    const ruleId = queryString(req.query['ruleId']);
    const rows = await listSamplingBuckets(db, { periodKey, ruleId });
    const byId = new Map(active.rules.map((x) => [x.id, x]));
    // The previous period's buckets plan the current one, so cells are computed over every bucket and then filtered.
    const all = periodKey ? await listSamplingBuckets(db, { ruleId }) : rows;
    const buckets = all.map((b) => ({ ruleId: b.rule_id, radiologistId: b.radiologist_id, modality: b.modality, periodKey: b.period_key, seen: b.seen, selected: b.selected }));
    const cells = samplingCells(buckets, await samplingOutcomes(db), active.rules).filter((c) => !periodKey || c.period === periodKey);
    res.json({
      cells,
      items: rows.map((b) => {
        const rule = byId.get(b.rule_id);
        const quota = rule?.kind === 'sampling' ? { rate: rule.rate, minimum: rule.minimum, maximum: rule.maximum ?? null, period: rule.period } : null;
        return { ruleId: b.rule_id, radiologistId: b.radiologist_id, modality: b.modality, period: b.period_key, seen: b.seen, selected: b.selected, quota, updatedAt: b.updated_at };
      }),
    });
  });
  return r;
}

function parseYaml(text: string): unknown {
  const doc = YAML.parseDocument(text);
  if (doc.errors.length > 0) {
    const errors = doc.errors.map((e) => ({ path: `line ${e.linePos?.[0]?.line ?? '?'}`, message: e.message.split('\n')[0] ?? e.message }));
    throw new GatewayError(ErrorCode.invalidInput, 'rule set is not valid YAML', { details: { errors } });
  }
  return doc.toJS() as unknown;
}

/** The rule set of a PUT body; YAML text (a text body, or `{yaml, comment}`) is stored as written, comments kept. */
function ruleSetFromBody(body: unknown): { value: unknown; comment: string | null; yaml: string | null } {
  if (typeof body === 'string') return { value: parseYaml(body), comment: null, yaml: body };
  if (Array.isArray(body)) return { value: body, comment: null, yaml: null };
  if (typeof body === 'object' && body !== null && ('rules' in body || 'yaml' in body)) {
    const { comment, yaml, ...rest } = body as { comment?: unknown; yaml?: unknown };
    if (comment !== undefined && typeof comment !== 'string') throw new GatewayError(ErrorCode.invalidInput, 'comment must be a string');
    if (yaml !== undefined) {
      if (typeof yaml !== 'string') throw new GatewayError(ErrorCode.invalidInput, 'yaml must be a string');
      if ('rules' in rest) throw new GatewayError(ErrorCode.invalidInput, 'give either rules or yaml, not both');
      return { value: parseYaml(yaml), comment: comment ?? null, yaml };
    }
    return { value: rest, comment: comment ?? null, yaml: null };
  }
  throw new GatewayError(ErrorCode.invalidInput, 'expected {rules: [...], comment?}, {yaml, comment?}, a list of rules, or a YAML rules file');
}
