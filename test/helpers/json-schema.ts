import { buildOpenApiDocument } from '../../src/http/openapi.js';

export type JsonType = 'string' | 'integer' | 'number' | 'boolean' | 'object' | 'array' | 'null';

/** The subset of JSON Schema 2020-12 that the generated document uses (zod's JSON Schema output for our schemas). */
export interface JsonSchema {
  type?: JsonType | JsonType[];
  description?: string;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  additionalProperties?: boolean | JsonSchema;
  propertyNames?: JsonSchema;
  items?: JsonSchema;
  enum?: readonly (string | number | boolean | null)[];
  const?: string | number | boolean | null;
  $ref?: string;
  anyOf?: JsonSchema[];
  format?: string;
  pattern?: string;
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  minItems?: number;
  maxItems?: number;
  default?: unknown;
}

export interface Parameter {
  name: string;
  in: 'path' | 'query';
  required?: boolean;
  description?: string;
  schema: JsonSchema;
}

export interface ResponseObject {
  description: string;
  content?: Record<string, { schema: JsonSchema }>;
  headers?: Record<string, { description: string; schema: JsonSchema }>;
}

export interface Operation {
  operationId: string;
  summary: string;
  description?: string;
  tags: string[];
  'x-roles': string[];
  security: Record<string, string[]>[];
  parameters?: Parameter[];
  requestBody?: { required?: boolean; description?: string; content: Record<string, { schema: JsonSchema }> };
  responses: Record<string, ResponseObject>;
}

export const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'patch'] as const;
export type HttpMethod = (typeof HTTP_METHODS)[number];

export interface OpenApiDocument {
  openapi: string;
  paths: Record<string, Partial<Record<HttpMethod, Operation>>>;
  components: { schemas: Record<string, JsonSchema> };
}

/** The document GET /api/openapi.json serves, as the tests read it. */
export const openApiDocument = buildOpenApiDocument() as unknown as OpenApiDocument;

/**
 * A checker for the subset of JSON Schema 2020-12 that the generated document
 * uses, independent of zod (so a schema zod accepts but describes wrongly is
 * caught). A keyword it does not know is an error rather than ignored, so the
 * document cannot grow a constraint that nothing checks.
 */
const KNOWN = new Set([
  'type',
  'description',
  'properties',
  'required',
  'additionalProperties',
  'propertyNames',
  'items',
  'enum',
  'const',
  '$ref',
  'anyOf',
  'format',
  'pattern',
  'minimum',
  'maximum',
  'minLength',
  'maxLength',
  'minItems',
  'maxItems',
  'default',
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
  if (schema.const !== undefined && value !== schema.const) errors.push(`${at}: ${short(value)} is not ${short(schema.const)}`);
  if (typeof value === 'string') {
    if (schema.minLength !== undefined && value.length < schema.minLength) errors.push(`${at}: shorter than ${schema.minLength}`);
    if (schema.maxLength !== undefined && value.length > schema.maxLength) errors.push(`${at}: longer than ${schema.maxLength}`);
    if (schema.format === 'date-time' && !/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/.test(value))
      errors.push(`${at}: ${short(value)} is not an RFC 3339 date-time`);
    if (schema.format === 'date' && !/^\d{4}-\d\d-\d\d$/.test(value)) errors.push(`${at}: ${short(value)} is not a date`);
    if (schema.pattern !== undefined && !new RegExp(schema.pattern, 'u').test(value))
      errors.push(`${at}: ${short(value)} does not match ${schema.pattern.slice(0, 40)}`);
  }
  if (typeof value === 'number') {
    if (schema.minimum !== undefined && value < schema.minimum) errors.push(`${at}: ${value} < ${schema.minimum}`);
    if (schema.maximum !== undefined && value > schema.maximum) errors.push(`${at}: ${value} > ${schema.maximum}`);
  }
  if (Array.isArray(value)) {
    if (schema.minItems !== undefined && value.length < schema.minItems) errors.push(`${at}: fewer than ${schema.minItems} items`);
    if (schema.maxItems !== undefined && value.length > schema.maxItems) errors.push(`${at}: more than ${schema.maxItems} items`);
    if (schema.items) value.forEach((v, i) => errors.push(...validateJson(schema.items!, v, defs, `${at}[${i}]`)));
  }
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    const o = value as Record<string, unknown>;
    for (const r of schema.required ?? []) if (!(r in o)) errors.push(`${at}: missing required "${r}"`);
    for (const [k, v] of Object.entries(o)) {
      if (schema.propertyNames) errors.push(...validateJson(schema.propertyNames, k, defs, `${at}[key ${JSON.stringify(k)}]`));
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
