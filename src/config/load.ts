import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { tlsConfigProblems } from '../tls.js';
import { configSchema, defaultConfig, type GatewayConfig } from './schema.js';

export interface ConfigProblem {
  path: string;
  message: string;
}

/** Thrown with every problem found, so an operator fixes the file once, not once per restart. */
export class ConfigError extends Error {
  constructor(
    readonly problems: ConfigProblem[],
    readonly source: string,
  ) {
    super(`invalid configuration (${source}):\n${problems.map((p) => `  - ${p.path || '(root)'}: ${p.message}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

export interface LoadOptions {
  argv?: readonly string[];
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

export interface LoadedConfig {
  config: Readonly<GatewayConfig>;
  /** The file read, for the start-up log line. */
  source: string;
}

export const DEFAULT_CONFIG_FILE = 'config/gateway.yaml';

export function configFileFrom(argv: readonly string[], env: NodeJS.ProcessEnv): string {
  const i = argv.indexOf('--config');
  if (i >= 0) {
    const file = argv[i + 1];
    if (!file || file.startsWith('--')) throw new ConfigError([{ path: '--config', message: 'expects a file path' }], 'command line');
    return file;
  }
  const eq = argv.find((a) => a.startsWith('--config='));
  if (eq) return eq.slice('--config='.length);
  return env['GATEWAY_CONFIG'] || DEFAULT_CONFIG_FILE;
}

/** Reads the YAML file, applies GATEWAY_<SECTION>_<KEY> overrides, validates, resolves paths, freezes. */
export function loadConfig(options: LoadOptions = {}): LoadedConfig {
  const argv = options.argv ?? process.argv.slice(2);
  const env = options.env ?? process.env;
  const cwd = options.cwd ?? process.cwd();
  const file = path.resolve(cwd, configFileFrom(argv, env));

  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError([{ path: '', message: `cannot read ${file}: ${(err as Error).message}` }], file);
  }
  const doc = YAML.parseDocument(text, { prettyErrors: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      doc.errors.map((e) => ({ path: `line ${e.linePos?.[0]?.line ?? '?'}`, message: e.message.split('\n')[0] ?? e.message })),
      file,
    );
  }
  const raw: unknown = doc.toJS() ?? {};
  const { value, problems: envProblems } = applyEnvOverrides(raw, env);
  const config = parseConfig(value, file, envProblems);
  return { config: finalize(config, cwd, file), source: file };
}

/** Validates an in-memory config object (tests build theirs this way); same rules as the file path. */
export function parseConfig(raw: unknown, source = 'inline', extraProblems: ConfigProblem[] = []): GatewayConfig {
  const result = configSchema.safeParse(raw);
  const problems = [...extraProblems];
  if (!result.success) {
    for (const issue of result.error.issues) problems.push({ path: formatPath(issue.path), message: issue.message });
  }
  if (problems.length > 0 || !result.success) throw new ConfigError(problems, source);
  return result.data;
}

export function buildConfig(raw: unknown, cwd = process.cwd()): Readonly<GatewayConfig> {
  return finalize(parseConfig(raw), cwd, 'inline');
}

function finalize(config: GatewayConfig, cwd: string, source: string): Readonly<GatewayConfig> {
  // Certificates and keys are read now, so a missing or mismatched file stops the start like any other config error.
  const tlsProblems = tlsConfigProblems(config, cwd);
  if (tlsProblems.length > 0) throw new ConfigError(tlsProblems, source);
  config.storage.dir = path.resolve(cwd, config.storage.dir);
  if (config.database.url.startsWith('sqlite:')) {
    const p = config.database.url.slice('sqlite:'.length);
    config.database.url = p === ':memory:' ? 'sqlite::memory:' : `sqlite:${path.resolve(cwd, p)}`;
  }
  if (typeof config.rules === 'string') config.rules = path.resolve(cwd, config.rules);
  config.instanceId ??= `${hostname()}-${process.pid}`;
  return deepFreeze(config);
}

function formatPath(p: readonly PropertyKey[]): string {
  return p.reduce<string>((acc, seg) => (typeof seg === 'number' ? `${acc}[${seg}]` : acc ? `${acc}.${String(seg)}` : String(seg)), '');
}

/**
 * GATEWAY_HTTP_PORT=9090 sets http.port; GATEWAY_HL7_RIS_PORT sets hl7.ris.port;
 * GATEWAY_DICOM_STABLE_AFTER_SECONDS and GATEWAY_DICOM_STABLEAFTERSECONDS both set
 * dicom.stableAfterSeconds. Keys are matched case-insensitively against the
 * keys the schema knows (its defaults) and those already in the file.
 */
export function applyEnvOverrides(raw: unknown, env: NodeJS.ProcessEnv): { value: Record<string, unknown>; problems: ConfigProblem[] } {
  const value: Record<string, unknown> = isRecord(raw) ? structuredClone(raw) : {};
  const defaults = defaultConfig() as unknown as Record<string, unknown>;
  const problems: ConfigProblem[] = [];
  for (const [name, text] of Object.entries(env)) {
    // GATEWAY_TEST_* belong to the test suite (e.g. GATEWAY_TEST_DATABASE_URL), not to the gateway's configuration.
    if (!name.startsWith('GATEWAY_') || name === 'GATEWAY_CONFIG' || name.startsWith('GATEWAY_TEST_') || text === undefined) continue;
    const segments = name.slice('GATEWAY_'.length).toLowerCase().split('_').filter(Boolean);
    const target = resolveEnvPath(segments, value, defaults);
    if (!target) {
      problems.push({ path: name, message: 'environment override names no known configuration key' });
      continue;
    }
    const { parent, key, template } = target;
    // Keep strings as typed for keys that are strings (an AE title "1234" stays a string).
    parent[key] = typeof template === 'string' ? text : parseScalar(text);
  }
  return { value, problems };
}

function resolveEnvPath(
  segments: string[],
  root: Record<string, unknown>,
  defaults: Record<string, unknown>,
): { parent: Record<string, unknown>; key: string; template: unknown } | undefined {
  // Resolve the whole key path read-only first: an override that names nothing must change nothing.
  const keys: string[] = [];
  let node: Record<string, unknown> | undefined = root;
  let template: Record<string, unknown> | undefined = defaults;
  let leafTemplate: unknown;
  let i = 0;
  while (i < segments.length) {
    const candidates = new Set([...Object.keys(node ?? {}), ...Object.keys(template ?? {})]);
    let matched: { key: string; used: number } | undefined;
    // Longest match first so GATEWAY_DICOM_STABLE_AFTER_SECONDS finds stableAfterSeconds.
    for (let n = segments.length - i; n >= 1 && !matched; n--) {
      const joined = segments.slice(i, i + n).join('');
      for (const k of candidates) if (k.toLowerCase() === joined) matched = { key: k, used: n };
    }
    if (!matched) return undefined;
    i += matched.used;
    keys.push(matched.key);
    const existing: unknown = node?.[matched.key];
    const t: unknown = template?.[matched.key];
    leafTemplate = t ?? existing;
    if (i < segments.length) {
      if (existing !== undefined && !isRecord(existing)) return undefined;
      node = existing as Record<string, unknown> | undefined;
      template = isRecord(t) ? t : undefined;
      if (!node && !template) return undefined;
    }
  }
  let parent = root;
  for (const k of keys.slice(0, -1)) {
    if (!isRecord(parent[k])) parent[k] = {};
    parent = parent[k] as Record<string, unknown>;
  }
  return { parent, key: keys[keys.length - 1]!, template: leafTemplate };
}

function parseScalar(text: string): unknown {
  try {
    return YAML.parse(text) as unknown;
  } catch {
    return text;
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function deepFreeze<T>(o: T): T {
  if (typeof o === 'object' && o !== null && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o)) deepFreeze(v);
  }
  return o;
}
