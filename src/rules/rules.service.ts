import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import YAML from 'yaml';
import { recordAudit } from '../audit/audit.repository.js';
import type { GatewayConfig } from '../config/schema.js';
import type { Db } from '../db/database.js';
import { ErrorCode, GatewayError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { ForecastContext } from './dry-run.js';
import { compileRuleSet, type CompiledRuleSet } from './evaluate.js';
import type { Rule } from './rule.types.js';
import { validateRuleSet, type RuleSetError } from './rule.schema.js';
import { lockKey } from '../db/dialect.js';
import { ensureSetting, getRuleSet, insertRuleSet, latestRuleSet, latestRuleSetVersion } from './rules.repository.js';

export interface ActiveRuleSet {
  version: number;
  rules: readonly Rule[];
  compiled: CompiledRuleSet;
  createdAt: string;
  createdBy: string;
  source: string;
  /** the YAML text as written, comments kept; null for a version saved as JSON */
  yaml: string | null;
}

export interface RuleChange {
  added: string[];
  removed: string[];
  changed: { id: string; fields: string[] }[];
}

export interface RulesServiceOptions {
  db: Db;
  logger: Logger;
  config: Pick<GatewayConfig, 'rules' | 'destinations' | 'sampling'> & Partial<Pick<GatewayConfig, 'readers' | 'sla'>>;
  newId: () => string;
  clock?: () => Date;
}

/** Thrown at start-up when the configured rule set is invalid: every problem, with its path. */
export class RuleSetInvalidError extends Error {
  constructor(
    readonly errors: RuleSetError[],
    source: string,
  ) {
    super(`invalid rule set (${source}):\n${errors.map((e) => `  - ${e.path}: ${e.message}`).join('\n')}`);
    this.name = 'RuleSetInvalidError';
  }
}

/**
 * The rule set in force. Versions live in the database; the configured file
 * (or inline list) is imported as a new version whenever its content differs
 * from the last version imported from it, so editing config/rules.yaml and
 * restarting works, and so does PUT /api/rules between restarts.
 */
export class RulesService {
  private readonly db: Db;
  private readonly log: Logger;
  private readonly clock: () => Date;
  private active: ActiveRuleSet | undefined;
  private secret = '';

  constructor(private readonly o: RulesServiceOptions) {
    this.db = o.db;
    this.log = o.logger.child({ component: 'rules' });
    this.clock = o.clock ?? (() => new Date());
  }

  get knownDestinations(): string[] {
    return this.o.config.destinations.map((d) => d.id);
  }

  /** The HMAC key of the sampling draw; stable across restarts (see config `sampling.secret`). */
  get samplingSecret(): string {
    return this.secret;
  }

  async init(): Promise<void> {
    const now = this.clock().toISOString();
    this.secret = this.o.config.sampling.secret ?? (await ensureSetting(this.db, 'sampling-secret', randomBytes(32).toString('hex'), now));

    const { value, source, text } = this.readConfiguredRules();
    const result = validateRuleSet(value, { knownDestinations: this.knownDestinations });
    if (!result.ok) throw new RuleSetInvalidError(result.errors, source);
    const json = JSON.stringify(result.rules);
    const hash = sha256(json);
    const lastImported = await latestRuleSet(this.db, 'config');
    if (lastImported?.content_hash !== hash) {
      const version = await this.db.transaction().execute(async (trx) => {
        // Another instance starting with the same file may have imported it while we waited for the lock.
        await lockKey(trx, 'rule-sets');
        if ((await latestRuleSet(trx, 'config'))?.content_hash === hash) return null;
        const previous = await latestRuleSet(trx);
        const v = await insertRuleSet(trx, {
          rulesJson: json,
          contentHash: hash,
          source: 'config',
          createdBy: 'config-file',
          comment: source,
          createdAt: now,
          sourceText: text,
        });
        await recordAudit(trx, this.o.newId(), now, {
          actor: 'config-file',
          action: 'rules.import',
          entityType: 'rule-set',
          entityId: String(v),
          details: { source, change: diffRules(previous ? (JSON.parse(previous.rules_json) as Rule[]) : [], result.rules) },
        });
        return v;
      });
      if (version !== null) this.log.info('rule set imported from configuration', { version, rules: result.rules.length });
    }
    await this.reload();
  }

  /** The rule set in force; re-read when another writer (PUT, another instance) has added a version. */
  async current(): Promise<ActiveRuleSet> {
    const latest = await latestRuleSetVersion(this.db);
    if (!this.active || this.active.version !== latest) await this.reload();
    return this.active!;
  }

  /** Validates without saving; throws invalid-input listing every problem. */
  validate(input: unknown): Rule[] {
    const result = validateRuleSet(input, { knownDestinations: this.knownDestinations });
    if (!result.ok) throw new GatewayError(ErrorCode.invalidInput, 'rule set is invalid', { details: { errors: result.errors } });
    return result.rules;
  }

  /** Readers and SLA hours for the dry run's forecast of reader load. */
  forecastContext(rules: readonly Rule[]): ForecastContext {
    const sla = this.o.config.sla ?? { statHours: 1, urgentHours: 4, routineHours: 72 };
    return { readers: this.o.config.readers ?? [], sla, rules };
  }

  compile(rules: readonly Rule[]): CompiledRuleSet {
    return compileRuleSet(rules, { samplingSecret: this.secret });
  }

  /** Saves a new version (audited with its diff); an unchanged set is not versioned again. */
  async update(
    input: unknown,
    actor: string,
    comment: string | null,
    sourceText: string | null = null,
  ): Promise<{ active: ActiveRuleSet; change: RuleChange; created: boolean }> {
    const rules = this.validate(input);
    const json = JSON.stringify(rules);
    // A change of comments alone is a new version too: the text is what the next editor starts from.
    const hash = sha256(sourceText === null ? json : `${json}\n${sourceText}`);
    const now = this.clock().toISOString();
    const previous = await this.current();
    if (JSON.stringify(previous.rules) === json && (sourceText === null || sourceText === previous.yaml)) {
      return { active: previous, change: { added: [], removed: [], changed: [] }, created: false };
    }
    const change = diffRules(previous.rules, rules);
    const version = await this.db.transaction().execute(async (trx) => {
      const v = await insertRuleSet(trx, { rulesJson: json, contentHash: hash, source: 'api', createdBy: actor, comment, createdAt: now, sourceText });
      await recordAudit(trx, this.o.newId(), now, { actor, action: 'rules.update', entityType: 'rule-set', entityId: String(v), details: { comment, change } });
      return v;
    });
    this.log.info('rule set updated', { version, actor, added: change.added.length, removed: change.removed.length, changed: change.changed.length });
    await this.reload();
    return { active: this.active!, change, created: version === this.active!.version };
  }

  private async reload(): Promise<void> {
    const row = await latestRuleSet(this.db);
    if (!row) throw new Error('no rule set stored');
    const rules = JSON.parse(row.rules_json) as Rule[];
    this.active = {
      version: row.version,
      rules,
      compiled: this.compile(rules),
      createdAt: row.created_at,
      createdBy: row.created_by,
      source: row.source,
      yaml: row.source_text,
    };
  }

  async version(
    v: number,
  ): Promise<
    { version: number; rules: Rule[]; createdAt: string; createdBy: string; source: string; comment: string | null; yaml: string | null } | undefined
  > {
    const row = await getRuleSet(this.db, v);
    if (!row) return undefined;
    return {
      version: row.version,
      rules: JSON.parse(row.rules_json) as Rule[],
      createdAt: row.created_at,
      createdBy: row.created_by,
      source: row.source,
      comment: row.comment,
      yaml: row.source_text,
    };
  }

  private readConfiguredRules(): { value: unknown; source: string; text: string | null } {
    const configured = this.o.config.rules;
    if (typeof configured !== 'string') return { value: configured, source: 'inline rules in the gateway config', text: null };
    let text: string;
    try {
      text = readFileSync(configured, 'utf8');
    } catch (err) {
      throw new RuleSetInvalidError([{ path: 'rules', message: `cannot read ${configured}: ${(err as Error).message}` }], configured);
    }
    const doc = YAML.parseDocument(text);
    if (doc.errors.length > 0) {
      throw new RuleSetInvalidError(
        doc.errors.map((e) => ({ path: `line ${e.linePos?.[0]?.line ?? '?'}`, message: e.message.split('\n')[0] ?? e.message })),
        configured,
      );
    }
    return { value: doc.toJS() as unknown, source: configured, text };
  }
}

/** Which rules a change adds, removes or alters (and which of their fields), for the audit trail and the console. */
export function diffRules(before: readonly Rule[], after: readonly Rule[]): RuleChange {
  const old = new Map(before.map((r) => [r.id, r]));
  const neu = new Map(after.map((r) => [r.id, r]));
  const change: RuleChange = { added: [], removed: [], changed: [] };
  for (const id of neu.keys()) if (!old.has(id)) change.added.push(id);
  for (const id of old.keys()) if (!neu.has(id)) change.removed.push(id);
  for (const [id, r] of neu) {
    const o = old.get(id);
    if (!o) continue;
    const a = o as unknown as Record<string, unknown>;
    const b = r as unknown as Record<string, unknown>;
    const fields = [...new Set([...Object.keys(a), ...Object.keys(b)])].filter((k) => JSON.stringify(a[k]) !== JSON.stringify(b[k]));
    if (fields.length > 0) change.changed.push({ id, fields: fields.sort() });
  }
  return change;
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}
