import type { JsonSchema } from '../../src/http/openapi.js';

/**
 * A checker for the subset of JSON Schema 2020-12 that src/http/openapi.ts
 * uses. A keyword it does not know is an error rather than ignored, so the
 * spec cannot grow a constraint that nothing checks.
 */
const KNOWN = new Set([
  'type', 'description', 'properties', 'required', 'additionalProperties', 'items', 'enum', '$ref', 'anyOf',
  'format', 'minimum', 'maximum', 'minLength', 'maxLength', 'minItems', 'default',
]);

export function validateJson(schema: JsonSchema, value: unknown, defs: Record<string, JsonSchema>, at = '$'): string[] {
  const errors: string[] = [];
  for (const k of Object.keys(schema)) if (!KNOWN.has(k)) throw new Error(`schema at ${at} uses "${k}", which the checker does not implement`);
  if (schema.$ref !== undefined) {
    const name = /^#\/components\/schemas\/(.+)$/.exec(schema.$ref)?.[1];
    const target = name === undefined ? undefined : defs[name];
    if (!target) throw new Error(`unresolved $ref ${schema.$ref} at ${at}`);
    errors.push(...validateJson(target, value, defs, at));
  }
  if (schema.anyOf) {
    const results = schema.anyOf.map((s) => validateJson(s, value, defs, at));
    if (!results.some((r) => r.length === 0)) errors.push(`${at}: matches none of anyOf (${results.map((r) => r.join('; ')).join(' | ')})`);
  }
  if (schema.type !== undefined) {
    const types = Array.isArray(schema.type) ? schema.type : [schema.type];
    if (!types.some((t) => hasType(value, t))) {
      errors.push(`${at}: expected ${types.join(' or ')}, got ${value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value} ${short(value)}`);
      return errors;
    }
  }
  if (schema.enum && !schema.enum.includes(value as string)) errors.push(`${at}: ${short(value)} is not one of ${schema.enum.join(', ')}`);
  if (typeof value === 'string') {
    if (schema.minLength !== undefined && value.length < schema.minLength) errors.push(`${at}: shorter than ${schema.minLength}`);
    if (schema.maxLength !== undefined && value.length > schema.maxLength) errors.push(`${at}: longer than ${schema.maxLength}`);
    if (schema.format === 'date-time' && !/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/.test(value)) errors.push(`${at}: ${short(value)} is not an RFC 3339 date-time`);
    if (schema.format === 'date' && !/^\d{4}-\d\d-\d\d$/.test(value)) errors.push(`${at}: ${short(value)} is not a date`);
  }
  if (typeof value === 'number') {
    if (schema.minimum !== undefined && value < schema.minimum) errors.push(`${at}: ${value} < ${schema.minimum}`);
    if (schema.maximum !== undefined && value > schema.maximum) errors.push(`${at}: ${value} > ${schema.maximum}`);
  }
  if (Array.isArray(value)) {
    if (schema.minItems !== undefined && value.length < schema.minItems) errors.push(`${at}: fewer than ${schema.minItems} items`);
    if (schema.items) value.forEach((v, i) => errors.push(...validateJson(schema.items!, v, defs, `${at}[${i}]`)));
  }
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    const o = value as Record<string, unknown>;
    for (const r of schema.required ?? []) if (!(r in o)) errors.push(`${at}: missing required "${r}"`);
    for (const [k, v] of Object.entries(o)) {
      const prop = schema.properties?.[k];
      if (prop) errors.push(...validateJson(prop, v, defs, `${at}.${k}`));
      else if (schema.additionalProperties === false) errors.push(`${at}: "${k}" is not in the schema`);
      else if (typeof schema.additionalProperties === 'object') errors.push(...validateJson(schema.additionalProperties, v, defs, `${at}.${k}`));
    }
  }
  return errors;
}

function hasType(v: unknown, t: string): boolean {
  switch (t) {
    case 'null':
      return v === null;
    case 'array':
      return Array.isArray(v);
    case 'object':
      return v !== null && typeof v === 'object' && !Array.isArray(v);
    case 'integer':
      return Number.isInteger(v);
    case 'number':
      return typeof v === 'number' && Number.isFinite(v);
    default:
      return typeof v === t;
  }
}

function short(v: unknown): string {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}
