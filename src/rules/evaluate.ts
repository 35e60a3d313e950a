/**
 * The rule engine: `compileRuleSet` once per rule-set version (all phrase
 * matching, ICD ranges and condition trees are compiled there), then
 * `evaluate(compiled, input)` per study. `evaluate` is pure: no I/O, no
 * clock, no randomness beyond the keyed hash of the StudyInstanceUID; the
 * sampling counters come in as input and the counter increments go out as
 * `samplingSlots` for the caller to persist.
 */
import { createSecretKey, type KeyObject } from 'node:crypto';
import { formatIcd10, Icd10Matcher, normalizeIcd10 } from './icd10.js';
import { defaultLists, type DefaultLists } from './rule.schema.js';
import {
  PRIORITY_RANK,
  type Condition,
  type Decision,
  type DiagnosisSource,
  type DiscordanceRule,
  type EvaluationInput,
  type FindingSpec,
  type HighStakesRule,
  type ManualRule,
  type OncologyRule,
  type Priority,
  type PriorDecision,
  type Reason,
  type ReportVersion,
  type Rule,
  type SamplingPeriod,
  type SamplingRule,
  type SamplingSlot,
  type TextSource,
} from './rule.types.js';
import { bucketKey, decideSampling, periodKey, precisionDrawProbability, previousPeriodKey, samplingDraw, selectionProbability } from './sampling.js';
import {
  analyzeText,
  classOfHit,
  defaultCues,
  findHit,
  findWords,
  HitClass,
  hitClass,
  LexiconBuilder,
  phraseWords,
  snippet,
  TokenFlag,
  type AnalyzedText,
  type Lexicon,
} from './text-match.js';

export interface CompileOptions {
  /** HMAC key of the sampling draw; required when the set has an enabled sampling rule */
  samplingSecret?: string | Buffer;
  /** lists used where a rule leaves one out; `defaultLists()` when absent */
  defaults?: DefaultLists;
}

/** Evidence items kept per rule: enough to explain, bounded so a long report cannot bloat a reason. */
const MAX_EVIDENCE = 5;

/** Modalities that carry no images of their own and so do not name the sampling bucket. */
const NON_IMAGE_MODALITIES: ReadonlySet<string> = new Set([
  'SR',
  'KO',
  'PR',
  'DOC',
  'SEG',
  'REG',
  'RTSTRUCT',
  'RTPLAN',
  'RTRECORD',
  'PLAN',
  'FID',
  'REGISTRATION',
]);

type Pred = (ctx: EvalContext) => boolean;

/** A text span to search, with the name a reason uses for it. */
interface View {
  readonly at: AnalyzedText;
  readonly from: number;
  readonly to: number;
  readonly label: string;
}

interface KeywordSet {
  readonly mask: Uint8Array;
  readonly sources: readonly TextSource[];
  readonly accept: number;
}

interface CompiledFinding {
  readonly id: string;
  readonly codes: ReadonlySet<string>;
  readonly mask: Uint8Array;
}

type Check = (ctx: EvalContext, evidence: string[]) => void;

interface CompiledRule {
  readonly rule: Rule;
  readonly when: Pred | undefined;
  /** may fire without a final report */
  readonly prospective: boolean;
  readonly check: Check;
}

interface CompiledSampling {
  readonly rule: SamplingRule;
  readonly when: Pred | undefined;
  readonly excluded: ListMatcher;
}

/** The compiled, immutable form of a rule set; safe to share between concurrent evaluations. */
export class CompiledRuleSet {
  /** @internal */ readonly lexicon: Lexicon;
  /** @internal */ readonly checks: readonly CompiledRule[];
  /** @internal */ readonly sampling: readonly CompiledSampling[];
  /** @internal */ readonly secret: KeyObject | undefined;
  /** @internal phrases that head the impression section ("IMPRESSION:") */
  readonly impressionHeaders: Uint8Array;

  /** @internal use `compileRuleSet` */
  constructor(
    readonly rules: readonly Rule[],
    parts: { lexicon: Lexicon; checks: CompiledRule[]; sampling: CompiledSampling[]; secret: KeyObject | undefined; impressionHeaders: Uint8Array },
  ) {
    this.lexicon = parts.lexicon;
    this.checks = parts.checks;
    this.sampling = parts.sampling;
    this.secret = parts.secret;
    this.impressionHeaders = parts.impressionHeaders;
  }
}

/** Compiles validated rules (from `validateRuleSet`). Disabled rules are dropped here. */
export function compileRuleSet(rules: readonly Rule[], options: CompileOptions = {}): CompiledRuleSet {
  const defaults = options.defaults ?? defaultLists();
  const builder = new LexiconBuilder();
  for (const [p, flags] of defaultCues()) builder.cue(p, flags);
  // Masks need the final lexicon size: rules register their phrases first and get their masks after the build.
  const deferred: Array<() => void> = [];
  const lazyMask = (phrases: readonly string[]): { get: () => Uint8Array } => {
    const ids = phrases.map((p) => builder.term(p));
    let mask = new Uint8Array(0);
    deferred.push(() => {
      mask = new Uint8Array(builder.size);
      for (const id of ids) mask[id] = 1;
    });
    return { get: () => mask };
  };

  const headers = lazyMask(IMPRESSION_HEADERS);
  const checks: CompiledRule[] = [];
  const sampling: CompiledSampling[] = [];
  const builders: Array<() => CompiledRule> = [];

  for (const rule of rules) {
    if (!rule.enabled) continue;
    const when = rule.when ? compileCondition(rule.when) : undefined;
    switch (rule.kind) {
      case 'oncology': {
        const kw = lazyMask([...(rule.keywords ?? defaults.oncologyKeywords), ...(rule.extraKeywords ?? [])]);
        builders.push(() => ({ rule, when, prospective: rule.prospective, check: oncologyCheck(rule, defaults, kw.get()) }));
        break;
      }
      case 'high-stakes': {
        const kw = lazyMask([...(rule.keywords ?? defaults.highStakesKeywords), ...(rule.extraKeywords ?? [])]);
        builders.push(() => ({ rule, when, prospective: rule.prospective, check: highStakesCheck(rule, kw.get()) }));
        break;
      }
      case 'discordance': {
        const ai = [...(rule.aiFindings ?? defaults.aiFindings), ...(rule.extraAiFindings ?? [])];
        const asked = [...(rule.indicationConditions ?? defaults.indicationConditions), ...(rule.extraIndicationConditions ?? [])];
        const aiMasks = ai.map((f) => ({ spec: f, mask: lazyMask(f.synonyms) }));
        const askedMasks = asked.map((f) => ({ spec: f, mask: lazyMask(f.synonyms) }));
        builders.push(() => ({
          rule,
          when,
          prospective: false,
          check: discordanceCheck(
            rule,
            aiMasks.map(({ spec, mask }) => compileFinding(spec, mask.get())),
            askedMasks.map(({ spec, mask }) => compileFinding(spec, mask.get())),
          ),
        }));
        break;
      }
      case 'manual':
        builders.push(() => ({ rule, when, prospective: true, check: manualCheck(rule) }));
        break;
      case 'sampling':
        sampling.push({ rule, when, excluded: new ListMatcher(rule.excludeRadiologists) });
        break;
    }
  }
  if (sampling.length > 0 && (options.samplingSecret === undefined || options.samplingSecret.length === 0)) {
    // Without a secret anyone could predict which studies get sampled.
    throw new Error(`sampling rule "${sampling[0]!.rule.id}" needs a non-empty sampling secret (CompileOptions.samplingSecret)`);
  }
  const lexicon = builder.build();
  for (const d of deferred) d();
  for (const b of builders) checks.push(b());
  const raw = options.samplingSecret;
  const secret = raw === undefined ? undefined : createSecretKey(typeof raw === 'string' ? Buffer.from(raw, 'utf8') : raw);
  return new CompiledRuleSet(rules, { lexicon, checks, sampling, secret, impressionHeaders: headers.get() });
}

// ---------------------------------------------------------------------------
// Conditions

/** Case-insensitive list with `*` wildcards; exact entries go through a Set. */
class ListMatcher {
  private readonly exact: ReadonlySet<string>;
  private readonly globs: readonly RegExp[];

  constructor(items: readonly string[]) {
    const exact = new Set<string>();
    const globs: RegExp[] = [];
    for (const raw of items) {
      const item = raw.toUpperCase();
      if (item.includes('*')) globs.push(new RegExp(`^${item.split('*').map(escapeRegExp).join('.*')}$`));
      else exact.add(item);
    }
    this.exact = exact;
    this.globs = globs;
  }

  /** `value` must already be upper case. */
  test(value: string | undefined): boolean {
    if (value === undefined) return false;
    if (this.exact.has(value)) return true;
    for (const g of this.globs) if (g.test(value)) return true;
    return false;
  }

  testAny(values: readonly string[]): boolean {
    for (const v of values) if (this.test(v)) return true;
    return false;
  }
}

/** "HH:MM" -> minutes after midnight. */
function minutesOf(hhmm: string): number {
  const [h, m] = hhmm.split(':');
  return Number(h) * 60 + Number(m);
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function compileCondition(c: Condition): Pred {
  const preds: Pred[] = [];
  const list = (items: string[] | undefined, pick: (ctx: EvalContext) => string | undefined): void => {
    if (!items) return;
    const m = new ListMatcher(items);
    preds.push((ctx) => m.test(pick(ctx)));
  };
  if (c.modality) {
    const m = new ListMatcher(c.modality);
    preds.push((ctx) => m.testAny(ctx.modalities));
  }
  if (c.bodyPart) {
    const m = new ListMatcher(c.bodyPart);
    preds.push((ctx) => m.testAny(ctx.bodyParts));
  }
  list(c.procedureCode, (ctx) => ctx.procedureCode);
  list(c.referringService, (ctx) => ctx.referringService);
  list(c.orderPriority, (ctx) => ctx.orderPriority);
  list(c.primaryRadiologist, (ctx) => ctx.primaryRadiologistUpper);
  list(c.callingAe, (ctx) => ctx.callingAe);
  if (c.timeOfDay) {
    const from = minutesOf(c.timeOfDay.from);
    const to = minutesOf(c.timeOfDay.to);
    // One formatter per condition, built at compile time.
    const fmt = new Intl.DateTimeFormat('en-GB', { timeZone: c.timeOfDay.timeZone ?? 'UTC', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
    preds.push((ctx) => {
      const t = minutesOf(fmt.format(ctx.firstFinal?.observedAt ?? ctx.input.now));
      return from < to ? t >= from && t < to : t >= from || t < to;
    });
  }
  if (c.ageYears) {
    const min = c.ageYears.min ?? -Infinity;
    const max = c.ageYears.max ?? Infinity;
    preds.push((ctx) => {
      const age = ctx.input.study.patientAgeYears;
      return age !== undefined && age >= min && age <= max;
    });
  }
  if (c.all) {
    const all = c.all.map(compileCondition);
    preds.push((ctx) => {
      for (const p of all) if (!p(ctx)) return false;
      return true;
    });
  }
  if (c.any) {
    const any = c.any.map(compileCondition);
    preds.push((ctx) => {
      for (const p of any) if (p(ctx)) return true;
      return false;
    });
  }
  if (c.not) {
    const inner = compileCondition(c.not);
    preds.push((ctx) => !inner(ctx));
  }
  if (preds.length === 1) return preds[0]!;
  return (ctx) => {
    for (const p of preds) if (!p(ctx)) return false;
    return true;
  };
}

// ---------------------------------------------------------------------------
// Per-evaluation context: derived values computed once and shared by every rule.

interface NormalizedDiagnosis {
  readonly code: string;
  readonly source: DiagnosisSource;
}

class EvalContext {
  /** the report the decision is about: the latest F or C, unless a later X cancelled it */
  readonly report: ReportVersion | undefined;
  readonly corrected: boolean;
  readonly primaryRadiologist: string | undefined;
  readonly primaryRadiologistUpper: string | undefined;
  /** first final (or corrected) version: whose work is sampled, and when it was signed */
  readonly firstFinal: ReportVersion | undefined;
  readonly modalities: readonly string[];
  readonly bodyParts: readonly string[];
  readonly procedureCode: string | undefined;
  readonly referringService: string | undefined;
  readonly orderPriority: string | undefined;
  readonly callingAe: string | undefined;

  private indicationViews: readonly View[] | undefined;
  private procedureViews: readonly View[] | undefined;
  private reportViews: readonly View[] | undefined;
  private impressionViews: readonly View[] | undefined;
  private diagnoses: readonly NormalizedDiagnosis[] | undefined;
  private draw: number | undefined;
  private aiTexts: Map<string, AnalyzedText> | undefined;

  constructor(
    readonly set: CompiledRuleSet,
    readonly input: EvaluationInput,
  ) {
    const reports = input.reports;
    let report: ReportVersion | undefined;
    let reportIndex = -1;
    for (let i = reports.length - 1; i >= 0; i--) {
      const r = reports[i]!;
      if (r.status === 'X') break;
      if (r.status === 'F' || r.status === 'C') {
        report = r;
        reportIndex = i;
        break;
      }
    }
    this.report = report;
    let firstFinal: ReportVersion | undefined;
    let corrected = false;
    for (let i = 0; i < reports.length; i++) {
      const r = reports[i]!;
      if (firstFinal === undefined && (r.status === 'F' || r.status === 'C')) firstFinal = r;
      if (report?.status === 'C' && i < reportIndex && r.status === 'F') corrected = true;
    }
    this.firstFinal = firstFinal;
    this.corrected = corrected;
    let radiologist = firstFinal?.radiologistId;
    for (let i = reports.length - 1; radiologist === undefined && i >= 0; i--) radiologist = reports[i]!.radiologistId;
    this.primaryRadiologist = radiologist;
    this.primaryRadiologistUpper = radiologist?.toUpperCase();
    const study = input.study;
    this.modalities = upperAll(study.modalities);
    this.bodyParts = upperAll(study.bodyParts);
    this.procedureCode = input.order?.procedureCode?.toUpperCase();
    this.referringService = input.order?.referringService?.toUpperCase();
    this.orderPriority = input.order?.priority?.toUpperCase();
    this.callingAe = study.callingAe?.toUpperCase();
  }

  views(source: TextSource): readonly View[] {
    switch (source) {
      case 'indication':
        return (this.indicationViews ??= this.analyzeJoined('indication', this.input.order?.indication, this.input.order?.reasonForStudy?.text));
      case 'procedure':
        return (this.procedureViews ??= this.analyzeJoined('procedure', this.input.order?.procedureText, this.input.study.studyDescription));
      case 'report':
        if (this.reportViews === undefined) this.buildReportViews();
        return this.reportViews!;
      case 'impression':
        if (this.impressionViews === undefined) this.buildReportViews();
        return this.impressionViews!;
    }
  }

  private analyzeJoined(label: string, a: string | undefined, b: string | undefined): View[] {
    const text = a && b ? `${a}\n\n${b}` : (a ?? b);
    if (!text) return [];
    const at = analyzeText(this.set.lexicon, text);
    return [{ at, from: 0, to: at.wordCount, label }];
  }

  private buildReportViews(): void {
    const r = this.report;
    if (!r) {
      this.reportViews = [];
      this.impressionViews = [];
      return;
    }
    const body = analyzeText(this.set.lexicon, r.text);
    const bodyView: View = { at: body, from: 0, to: body.wordCount, label: 'report' };
    if (r.impression) {
      const imp = analyzeText(this.set.lexicon, r.impression);
      const impView: View = { at: imp, from: 0, to: imp.wordCount, label: 'impression' };
      this.reportViews = [bodyView, impView];
      this.impressionViews = [impView];
      return;
    }
    this.reportViews = [bodyView];
    // Without a separate impression, the part after an "IMPRESSION:" header; a report without one is all impression.
    const from = impressionStartWord(body, this.set.impressionHeaders);
    if (from < 0) {
      this.impressionViews = [{ ...bodyView, label: 'report' }];
      return;
    }
    this.impressionViews = [{ at: body, from, to: body.wordCount, label: 'impression' }];
  }

  normalizedDiagnoses(): readonly NormalizedDiagnosis[] {
    if (this.diagnoses) return this.diagnoses;
    const out: NormalizedDiagnosis[] = [];
    const order = this.input.order;
    if (order) {
      for (const d of order.diagnoses) {
        const code = normalizeIcd10(d.code);
        if (code) out.push({ code, source: d.source });
      }
      const r = order.reasonForStudy?.code;
      if (r) {
        const code = normalizeIcd10(r);
        if (code) out.push({ code, source: 'OBR-31' });
      }
    }
    return (this.diagnoses = out);
  }

  /** AI finding texts, analysed once per evaluation however many discordance rules look at them. */
  analyzeAiText(text: string): AnalyzedText {
    this.aiTexts ??= new Map();
    let at = this.aiTexts.get(text);
    if (!at) {
      at = analyzeText(this.set.lexicon, text);
      this.aiTexts.set(text, at);
    }
    return at;
  }

  samplingDraw(): number {
    return (this.draw ??= samplingDraw(this.set.secret!, this.input.study.studyInstanceUid));
  }
}

const IMPRESSION_HEADERS = ['impression', 'impressions', 'conclusion', 'conclusions', 'summary', 'opinion'];

/** The first word after the first header word followed by ":" ("IMPRESSION:"), or -1; found among the lexicon hits. */
function impressionStartWord(at: AnalyzedText, headers: Uint8Array): number {
  for (let h = 0; h < at.hitPhrase.length; h++) {
    if (headers[at.hitPhrase[h]!] !== 1) continue;
    const w = at.hitWord[h]!;
    let j = at.wordEnd[w]!;
    while (at.lower.charCodeAt(j) === 32 || at.lower.charCodeAt(j) === 9) j++;
    if (at.lower.charCodeAt(j) === 58 /* : */) return w + 1;
  }
  return -1;
}

function upperAll(values: readonly string[]): string[] {
  const out = new Array<string>(values.length);
  for (let i = 0; i < values.length; i++) out[i] = values[i]!.toUpperCase();
  return out;
}

// ---------------------------------------------------------------------------
// Rule checks. Each pushes human-readable evidence; any evidence means the rule fired.

function acceptPositive(uncertainCountsAsPositive: boolean): number {
  return HitClass.affirmed | (uncertainCountsAsPositive ? HitClass.uncertain | HitClass.questioned : 0);
}

function keywordEvidence(ctx: EvalContext, kw: KeywordSet, evidence: string[], reportAvailable: boolean): void {
  for (const source of kw.sources) {
    if (!reportAvailable && (source === 'report' || source === 'impression')) continue;
    for (const v of ctx.views(source)) {
      let from = v.from;
      while (evidence.length < MAX_EVIDENCE) {
        const h = findHit(v.at, kw.mask, kw.accept, from, v.to);
        if (h < 0) break;
        const cls = classOfHit(v.at, h);
        const qualifier = cls === HitClass.uncertain ? ' (uncertain)' : cls === HitClass.questioned ? ' (asked)' : '';
        const line = `keyword "${snippet(v.at, v.at.hitWord[h]!, v.at.hitWordEnd[h]!)}" in ${v.label}${qualifier}`;
        if (!evidence.includes(line)) evidence.push(line);
        from = v.at.hitWord[h]! + 1;
      }
    }
  }
}

function oncologyCheck(rule: OncologyRule, defaults: DefaultLists, mask: Uint8Array): Check {
  const include = [...(rule.codes.include ?? defaults.oncologyCodes.include), ...(rule.codes.personalHistory ? defaults.oncologyCodes.personalHistory : [])];
  const icd = new Icd10Matcher(include, rule.codes.exclude ?? defaults.oncologyCodes.exclude);
  const sources = new Set<DiagnosisSource>(rule.codes.sources);
  const kw: KeywordSet = { mask, sources: rule.keywordSources, accept: acceptPositive(rule.uncertainCountsAsPositive) };
  return (ctx, evidence) => {
    for (const d of ctx.normalizedDiagnoses()) {
      if (evidence.length >= MAX_EVIDENCE) return;
      if (!sources.has(d.source) || !icd.matches(d.code)) continue;
      const line = `ICD-10 ${formatIcd10(d.code)} in ${d.source}`;
      if (!evidence.includes(line)) evidence.push(line);
    }
    keywordEvidence(ctx, kw, evidence, ctx.report !== undefined);
  };
}

function highStakesCheck(rule: HighStakesRule, mask: Uint8Array): Check {
  const codes = new ListMatcher(rule.procedureCodes);
  const kw: KeywordSet = { mask, sources: rule.keywordSources, accept: acceptPositive(rule.uncertainCountsAsPositive) };
  return (ctx, evidence) => {
    if (codes.test(ctx.procedureCode)) evidence.push(`procedure code ${ctx.input.order?.procedureCode ?? ''}`);
    keywordEvidence(ctx, kw, evidence, ctx.report !== undefined);
  };
}

function compileFinding(spec: FindingSpec, mask: Uint8Array): CompiledFinding {
  return { id: spec.id, codes: new Set([spec.id, ...(spec.codes ?? [])].map((c) => c.toUpperCase())), mask };
}

function discordanceCheck(rule: DiscordanceRule, aiFindings: readonly CompiledFinding[], asked: readonly CompiledFinding[]): Check {
  const affirm = HitClass.affirmed | (rule.uncertainCountsAsPositive ? HitClass.uncertain : 0);
  const { aiFinding, indicationNegative, correctedReport } = rule.checks;
  return (ctx, evidence) => {
    if (aiFinding && ctx.input.aiResults.length > 0) checkAiResults(ctx, rule, aiFindings, affirm, evidence);
    if (indicationNegative && asked.length > 0) checkIndication(ctx, asked, affirm, evidence);
    if (correctedReport && ctx.corrected) evidence.push('corrected report (C) after a final (F)');
  };
}

function checkAiResults(ctx: EvalContext, rule: DiscordanceRule, findings: readonly CompiledFinding[], affirm: number, evidence: string[]): void {
  const reportViews = ctx.views('report');
  const done = new Set<string>();
  for (const ai of ctx.input.aiResults) {
    if (!ai.positive || evidence.length >= MAX_EVIDENCE) continue;
    const label = ai.findingText ?? ai.findingCode ?? 'unnamed';
    const finding = mapAiFinding(ctx, findings, ai.findingCode, ai.findingText);
    if (finding) {
      if (done.has(finding.id)) continue;
      done.add(finding.id);
      let affirmed = false;
      let negatedAt = '';
      for (const v of reportViews) {
        if (findHit(v.at, finding.mask, affirm, v.from, v.to) >= 0) {
          affirmed = true;
          break;
        }
        const n = findHit(v.at, finding.mask, HitClass.negated, v.from, v.to);
        if (n >= 0 && !negatedAt) negatedAt = snippet(v.at, v.at.hitWord[n]!, v.at.hitWordEnd[n]!);
      }
      if (!affirmed) {
        const how = negatedAt ? `report negates it ("${negatedAt}")` : 'report does not mention it';
        evidence.push(`AI finding "${label}" (${finding.id}) positive, report does not affirm it: ${how}`);
      }
    } else if (rule.unmappedAiFindings === 'literal' && ai.findingText) {
      let words: string[];
      try {
        words = phraseWords(ai.findingText).words;
      } catch {
        continue;
      }
      const key = words.join(' ');
      if (done.has(key)) continue;
      done.add(key);
      let affirmed = false;
      for (const v of reportViews) if (findWords(v.at, words, affirm, v.from, v.to) >= 0) affirmed = true;
      if (!affirmed) evidence.push(`AI finding "${label}" positive, report does not affirm it (no synonyms configured; looked for the text itself)`);
    }
  }
}

/** An AI result names a finding by code (OBX-3.1, or the finding id) or by text containing a synonym. */
function mapAiFinding(ctx: EvalContext, findings: readonly CompiledFinding[], code: string | undefined, text: string | undefined): CompiledFinding | undefined {
  if (code) {
    const c = code.split('^')[0]!.trim().toUpperCase();
    for (const f of findings) if (f.codes.has(c)) return f;
  }
  if (text) {
    if (findings.length === 0) return undefined;
    const at = ctx.analyzeAiText(text);
    for (const f of findings) {
      for (let h = 0; h < at.hitPhrase.length; h++) if (f.mask[at.hitPhrase[h]!] === 1) return f;
    }
  }
  return undefined;
}

function checkIndication(ctx: EvalContext, conditions: readonly CompiledFinding[], affirm: number, evidence: string[]): void {
  const indication = ctx.views('indication');
  if (indication.length === 0) return;
  const impression = ctx.views('impression');
  for (const c of conditions) {
    if (evidence.length >= MAX_EVIDENCE) return;
    let askedAs = '';
    for (const v of indication) {
      const { at } = v;
      for (let h = 0; h < at.hitPhrase.length && !askedAs; h++) {
        if (c.mask[at.hitPhrase[h]!] !== 1) continue;
        const flags = at.flags[at.hitWord[h]!]!;
        if (flags & TokenFlag.questioned && hitClass(flags) !== HitClass.negated) askedAs = snippet(at, at.hitWord[h]!, at.hitWordEnd[h]!);
      }
    }
    if (!askedAs) continue;
    let positive = false;
    let negatedAs = '';
    for (const v of impression) {
      if (findHit(v.at, c.mask, affirm, v.from, v.to) >= 0) {
        positive = true;
        break;
      }
      const n = findHit(v.at, c.mask, HitClass.negated, v.from, v.to);
      if (n >= 0 && !negatedAs) negatedAs = `${v.label}: "${snippet(v.at, v.at.hitWord[n]!, v.at.hitWordEnd[n]!)}"`;
    }
    if (!positive && negatedAs) evidence.push(`indication asks about ${c.id} ("${askedAs}"), report is negative for it (${negatedAs} negated)`);
  }
}

function manualCheck(rule: ManualRule): Check {
  return (ctx, evidence) => {
    if (rule.sources.api) {
      for (const m of ctx.input.manualRequests) {
        if (evidence.length >= MAX_EVIDENCE) break;
        evidence.push(`manual request by ${m.requestedBy}: ${m.reason}`);
      }
    }
    if (rule.sources.orderFlag && ctx.input.order?.secondOpinionRequested) evidence.push('order requests a second opinion');
  };
}

// ---------------------------------------------------------------------------
// evaluate

interface Fired {
  readonly rule: Rule;
  readonly priority: Priority;
  readonly destination: string | undefined;
  /** a destination a person chose (manual request) beats any rule's */
  readonly explicitDestination: boolean;
}

/**
 * Decides one study. Rules other than `manual` and `prospective` ones only
 * decide on a final (F) or corrected (C) current report; sampling rules run
 * last so they can skip studies another rule already flagged.
 */
export function evaluate(compiled: CompiledRuleSet, input: EvaluationInput): Decision {
  const ctx = new EvalContext(compiled, input);
  const final = ctx.report !== undefined;
  const reasons: Reason[] = [];
  const fired: Fired[] = [];
  const evidence: string[] = [];

  for (const c of compiled.checks) {
    if (!final && !c.prospective) continue;
    if (c.when && !c.when(ctx)) continue;
    evidence.length = 0;
    c.check(ctx, evidence);
    if (evidence.length === 0) continue;
    reasons.push({ ruleId: c.rule.id, kind: c.rule.kind, detail: evidence.join('; ') });
    fired.push(firedFor(c.rule, input));
  }

  const samplingSlots: SamplingSlot[] = [];
  if (final && compiled.sampling.length > 0) runSampling(ctx, compiled, reasons, fired, samplingSlots);

  return decide(reasons, fired, samplingSlots, final);
}

function firedFor(rule: Rule, input: EvaluationInput): Fired {
  if (rule.kind === 'manual' && input.manualRequests.length > 0 && rule.sources.api) {
    let priority: Priority | undefined;
    let destination: string | undefined;
    for (const m of input.manualRequests) {
      if (m.priority && (priority === undefined || PRIORITY_RANK[m.priority] < PRIORITY_RANK[priority])) priority = m.priority;
      destination ??= m.destinationId;
    }
    return { rule, priority: priority ?? rule.priority, destination: destination ?? rule.destination, explicitDestination: destination !== undefined };
  }
  return { rule, priority: rule.priority, destination: rule.destination, explicitDestination: false };
}

/**
 * Whose work, which modality and when, for sampling buckets: the radiologist
 * of the first final report ("unknown" without one), the first modality that
 * carries images (PT+CT counts once, as PT), and the time that report was
 * signed (else `now`), so a study counts in the period its read was done.
 */
function bucketParts(ctx: EvalContext): { radiologist: string; modality: string; when: Date } {
  return {
    radiologist: ctx.primaryRadiologist ?? 'unknown',
    modality: primaryModality(ctx.modalities),
    when: ctx.firstFinal?.observedAt ?? ctx.input.now,
  };
}

/**
 * The bucket keys `evaluate` may read from `samplingState` for this input
 * (current and previous period of every sampling rule), so the caller can
 * load just those counters before the synchronous evaluation.
 */
export function samplingBucketKeys(compiled: CompiledRuleSet, input: EvaluationInput): string[] {
  if (compiled.sampling.length === 0) return [];
  const { radiologist, modality, when } = bucketParts(new EvalContext(compiled, input));
  const keys: string[] = [];
  for (const { rule } of compiled.sampling) {
    keys.push(bucketKey(rule.id, radiologist, modality, periodKey(when, rule.period)));
    if (rule.minimum > 0 || rule.mode === 'precision') keys.push(bucketKey(rule.id, radiologist, modality, previousPeriodKey(when, rule.period)));
  }
  return keys;
}

function runSampling(ctx: EvalContext, compiled: CompiledRuleSet, reasons: Reason[], fired: Fired[], slots: SamplingSlot[]): void {
  const input = ctx.input;
  const prior = input.priorDecisions ?? [];
  const state = input.samplingState;
  const { radiologist, modality, when } = bucketParts(ctx);
  const radiologistUpper = radiologist.toUpperCase();
  const periodKeys: Partial<Record<SamplingPeriod, string>> = {};

  for (const s of compiled.sampling) {
    const rule = s.rule;
    if (s.when && !s.when(ctx)) continue;
    const earlier = findPriorSlot(prior, rule.id);
    if (earlier) {
      // Counted once per study: a re-evaluation (corrected report) keeps the earlier draw.
      if (earlier.selected) {
        reasons.push({ ruleId: rule.id, kind: 'sampling', detail: `selected for QA sampling earlier (bucket ${earlier.bucketKey})` });
        fired.push({ rule, priority: rule.priority, destination: rule.destination, explicitDestination: false });
      }
      continue;
    }
    if (reasons.length > 0 || flaggedBefore(prior, rule.id)) continue;
    if (s.excluded.test(radiologistUpper)) continue;
    const pk = (periodKeys[rule.period] ??= periodKey(when, rule.period));
    const key = bucketKey(rule.id, radiologist, modality, pk);
    const counters = state?.get(key);
    const precision = rule.mode === 'precision';
    // The previous period's volume only matters while the minimum is not met, or to spread a precision cell's sample.
    const needsHistory = precision || (rule.minimum > 0 && (counters?.selected ?? 0) < rule.minimum);
    const previous = needsHistory ? state?.get(bucketKey(rule.id, radiologist, modality, previousPeriodKey(when, rule.period))) : undefined;
    let rate = rule.rate;
    let planned = '';
    if (precision) {
      // The planning rate pools this period's and the previous period's reviews of the cell.
      const outcomes = {
        reviewed: (counters?.reviewed ?? 0) + (previous?.reviewed ?? 0),
        discrepant: (counters?.discrepant ?? 0) + (previous?.discrepant ?? 0),
      };
      const p = precisionDrawProbability(
        { targetHalfWidth: rule.targetHalfWidth!, confidence: rule.confidence ?? 0.95, rate: rule.rate },
        counters,
        previous?.seen,
        outcomes,
      );
      rate = p.probability;
      planned = ` (precision: ${p.needed} reviews needed, draw probability ${rate.toFixed(4)})`;
    }
    const quota = { rate, minimum: rule.minimum, maximum: rule.maximum };
    const draw = ctx.samplingDraw();
    const outcome = decideSampling(quota, counters, previous?.seen, draw);
    const probability = selectionProbability(quota, counters, previous?.seen);
    slots.push({ ruleId: rule.id, bucketKey: key, selected: outcome.selected, radiologistId: radiologist, modality, periodKey: pk, probability });
    if (!outcome.selected) continue;
    const where = `${radiologist} ${modality} ${pk}`;
    const detail =
      outcome.why === 'rate'
        ? `QA random sample for ${where}: draw ${draw.toFixed(4)} < rate ${precision ? rate.toFixed(4) : rule.rate}${planned}`
        : `QA minimum for ${where}: ${counters?.selected ?? 0} of minimum ${rule.minimum} selected after ${counters?.seen ?? 0} studies`;
    reasons.push({ ruleId: rule.id, kind: 'sampling', detail });
    fired.push({ rule, priority: rule.priority, destination: rule.destination, explicitDestination: false });
  }
}

function primaryModality(modalities: readonly string[]): string {
  for (const m of modalities) if (!NON_IMAGE_MODALITIES.has(m)) return m;
  return modalities[0] ?? 'UNKNOWN';
}

function findPriorSlot(prior: readonly PriorDecision[], ruleId: string): SamplingSlot | undefined {
  for (const d of prior) for (const s of d.samplingSlots) if (s.ruleId === ruleId) return s;
  return undefined;
}

function flaggedBefore(prior: readonly PriorDecision[], ruleId: string): boolean {
  for (const d of prior) for (const r of d.reasons) if (r.ruleId !== ruleId) return true;
  return false;
}

/**
 * Merges the fired rules into one decision: the most urgent priority; the
 * destination and reader group of the most urgent rule naming one (a manual
 * request's explicit destination first); blinded if any rule wants blinding
 * (a blinded read can serve an unblinded purpose, not the reverse);
 * de-identified if any rule asks for it, and not if rules only opt out.
 */
function decide(reasons: Reason[], fired: Fired[], samplingSlots: SamplingSlot[], final: boolean): Decision {
  const decision: Decision = {
    flagged: reasons.length > 0,
    reasons,
    priority: null,
    blinded: true,
    samplingSlots,
    basis: final ? 'final-report' : 'order-only',
  };
  if (fired.length === 0) return decision;
  let best = 3;
  let destRank = 4;
  let groupRank = 3;
  let blinded = false;
  let deidentify: boolean | undefined;
  for (const f of fired) {
    const rank = PRIORITY_RANK[f.priority];
    if (rank < best) best = rank;
    if (f.destination !== undefined) {
      const r = f.explicitDestination ? -1 : rank;
      if (r < destRank) {
        destRank = r;
        decision.destinationId = f.destination;
      }
    }
    if (f.rule.readerGroup !== undefined && rank < groupRank) {
      groupRank = rank;
      decision.readerGroup = f.rule.readerGroup;
    }
    if (f.rule.blinded) blinded = true;
    if (f.rule.deidentify === true) deidentify = true;
    else if (f.rule.deidentify === false && deidentify === undefined) deidentify = false;
    const sla = f.rule.slaHours;
    if (sla !== undefined && (decision.slaHours === undefined || sla < decision.slaHours)) decision.slaHours = sla;
  }
  decision.priority = (['stat', 'urgent', 'routine'] as const)[best]!;
  decision.blinded = blinded;
  if (deidentify !== undefined) decision.deidentify = deidentify;
  return decision;
}
