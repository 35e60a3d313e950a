/**
 * The HTTP API described once: each route is a `RouteSpec` (method, path,
 * roles, zod schemas for path parameters, query, body and every answer).
 * The same spec is used three ways:
 * - `mount` registers the express handler behind the role check and hands it
 *   the parsed, typed input (a 400 lists every zod issue with its path);
 * - the handler's reply and the presenters are typed from the response schemas;
 * - src/http/openapi.ts generates the OpenAPI 3.1 document from the specs
 *   listed in src/http/api-routes.ts (zod-openapi, on zod's own JSON Schema).
 */
import type { NextFunction, Request, RequestHandler, Response, Router } from 'express';
import { z } from 'zod';
import { Role } from '../config/schema.js';
import { ErrorCode, GatewayError } from '../errors.js';
import { requireRole, type Principal } from './auth.js';

export type HttpMethod = 'get' | 'put' | 'post' | 'delete' | 'patch';

export const API_TAGS = {
  operations: 'health, metrics, this document',
  studies: 'studies received over DICOM, with linked HL7',
  messages: 'received HL7 messages',
  cases: 'second-read cases, deliveries, second reports',
  rules: 'the rule set and QA sampling',
  audit: 'the audit log',
  console: 'what the web console reads',
  dicomweb: 'DICOMweb (PS3.18) under /dicom-web: QIDO-RS, WADO-RS, STOW-RS',
} as const;
export type ApiTag = keyof typeof API_TAGS;

/** An answer that is not JSON (CSV, Prometheus text, DICOM), or JSON with a description of its own. */
export interface ResponseSpec {
  description: string;
  /** JSON body; a text body is described by `text`, another media type's by `media`. */
  schema?: z.ZodType;
  text?: Record<string, string>;
  /** Bodies of other media types with their schema (DICOM JSON, multipart/related); a handler writes them itself. */
  media?: Record<string, z.ZodType>;
}

export type ResponseEntry = z.ZodType | ResponseSpec;

export interface RouteSpec {
  method: HttpMethod;
  /** Express syntax, full path (`/api/cases/:id`); the document shows `{id}`. */
  path: string;
  operationId: string;
  summary: string;
  description?: string;
  tag: ApiTag;
  /** Roles whose token passes; [] = no token needed. */
  roles: readonly Role[];
  params?: z.ZodObject;
  query?: z.ZodObject;
  /** The JSON request body. */
  body?: z.ZodType;
  /** The body may be left out (it is then `undefined`). */
  bodyOptional?: boolean;
  /** Also takes the body as YAML text (`Content-Type: application/yaml`), parsed by the handler; the description. */
  yamlBody?: string;
  responses: Readonly<Record<number, ResponseEntry>>;
  /** Error answers beyond those every route can give (400 for input, 401/403/429 with roles, 500). */
  errors?: Readonly<Record<number, string>>;
}

/** Keeps the literal types of a spec (its statuses and schemas) for `mount`. */
export function defineRoute<const S extends RouteSpec>(spec: S): S {
  return spec;
}

type Parsed<T> = T extends z.ZodType ? z.output<T> : undefined;
type SchemaOf<E> = E extends z.ZodType ? E : E extends { schema: infer T extends z.ZodType } ? T : never;
type JsonStatus<S extends RouteSpec> = {
  [K in keyof S['responses'] & number]: [SchemaOf<S['responses'][K]>] extends [never] ? never : K;
}[keyof S['responses'] & number];

/** What a handler answers: one of the spec's statuses with its JSON body, or nothing when it wrote the answer itself (CSV). */
export type Reply<S extends RouteSpec> = { [K in JsonStatus<S>]: { status: K; body: z.input<SchemaOf<S['responses'][K]>> } }[JsonStatus<S>] | void;

export interface RouteInput<S extends RouteSpec> {
  params: Parsed<S['params']>;
  query: Parsed<S['query']>;
  /** With `yamlBody`, a text body arrives as the string it is. */
  body: (S['bodyOptional'] extends true ? Parsed<S['body']> | undefined : Parsed<S['body']>) | (S['yamlBody'] extends string ? string : never);
  /** Set on every route with roles (the authenticator ran). */
  principal: Principal;
}

export type Handler<S extends RouteSpec> = (input: RouteInput<S>, req: Request, res: Response) => Promise<Reply<S>> | Reply<S>;

interface Mountable {
  get: Router['get'];
  put: Router['put'];
  post: Router['post'];
  delete: Router['delete'];
  patch: Router['patch'];
}

/**
 * Registers `handler` for `spec` on `target`, whose routes are mounted at `base`
 * (`/api` for the API routers, '' for the app itself). `before` runs ahead of
 * the role check (the app-level routes that authenticate themselves).
 */
export function mount<const S extends RouteSpec>(
  target: Mountable,
  spec: S,
  handler: Handler<NoInfer<S>>,
  o: { base?: string; before?: RequestHandler[] } = {},
): void {
  const base = o.base ?? '/api';
  if (!spec.path.startsWith(base)) throw new Error(`route ${spec.path} is not under ${base}`);
  const guards = [...(o.before ?? []), ...(spec.roles.length > 0 ? [requireRole(...spec.roles)] : [])];
  const run = async (req: Request, res: Response, next: NextFunction): Promise<void> => {
    try {
      const input = parseInput(spec, req);
      const reply = await handler(input as RouteInput<S>, req, res);
      if (reply) res.status(reply.status).json(reply.body);
    } catch (err) {
      next(err);
    }
  };
  target[spec.method](spec.path.slice(base.length) || '/', ...guards, run);
}

function parseInput(spec: RouteSpec, req: Request): RouteInput<RouteSpec> {
  const params = spec.params ? check(spec.params, req.params, 'path parameters') : undefined;
  // An empty query parameter (`?state=`) means the same as leaving it out: what a form with an empty field sends.
  const query = spec.query ? check(spec.query, withoutEmpty(req.query as Record<string, unknown>), 'query') : undefined;
  let body: unknown;
  if (spec.body) {
    // express.json leaves req.body undefined when the request has no body.
    if (spec.bodyOptional && req.body === undefined) body = undefined;
    else if (typeof req.body === 'string') {
      // A text body came in as YAML (express.text in server.ts); the handler parses it.
      if (!spec.yamlBody) throw new GatewayError(ErrorCode.invalidInput, 'this route takes a JSON body');
      body = req.body;
    } else body = check(spec.body, req.body ?? {}, 'body');
  }
  return { params, query, body, principal: req.principal! } as RouteInput<RouteSpec>;
}

function withoutEmpty(q: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(q).filter(([, v]) => v !== ''));
}

/** Parses `value`; a 400 (invalid-input) lists every issue as {path, message}, an unknown field as its own entry. */
export function check<T extends z.ZodType>(schema: T, value: unknown, what: string): z.output<T> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const errors = issuesOf(r.error);
  throw new GatewayError(ErrorCode.invalidInput, `invalid ${what}: ${errors.map((e) => (e.path ? `${e.path} ${e.message}` : e.message)).join('; ')}`, {
    details: { errors },
  });
}

export function issuesOf(error: z.ZodError): { path: string; message: string }[] {
  return error.issues.flatMap((i) => {
    const at = pathText(i.path);
    if (i.code === 'unrecognized_keys') return i.keys.map((k) => ({ path: pathText([...i.path, k]), message: 'unknown field' }));
    if (i.code === 'invalid_value') return [{ path: at, message: `must be one of ${i.values.map(String).join(', ')}` }];
    return [{ path: at, message: i.message }];
  });
}

/** `rules[2].when`: the same path style as the rule-set validator's. */
function pathText(path: readonly PropertyKey[]): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : `${i === 0 ? '' : '.'}${String(p)}`)).join('');
}

// --- schema building blocks -------------------------------------------------------------------------------

/** A timestamp as the gateway writes it (UTC, `toISOString`). */
export const time = z.iso.datetime({ offset: true });
export const nstr = z.string().nullable();
export const nint = z.number().int().nullable();
export const nnum = z.number().nullable();
export const int = z.number().int();
export const described = <T extends z.ZodType>(schema: T, description: string): T => schema.meta({ description }) as T;

/** A query parameter read as an integer within bounds. */
export const queryInt = (dflt: number, min: number, max: number) => z.coerce.number().int().min(min).max(max).default(dflt);
export const limitParam = (dflt: number, max: number) => queryInt(dflt, 1, max);
export const offsetParam = queryInt(0, 0, Number.MAX_SAFE_INTEGER);

/** An ISO-8601 date or date-time, normalised to UTC ISO text. */
export const isoInstant = z
  .string()
  .refine((v) => !Number.isNaN(Date.parse(v)), 'must be an ISO-8601 date or date-time')
  .transform((v) => new Date(Date.parse(v)).toISOString());

/** A free-text reason some actions take (kept in the audit event). */
export const optionalReason = z.string().max(2000).nullish();
export const requiredReason = z.string().trim().min(1, 'is required (a non-empty string)').max(2000);

export const ErrorBody = z
  .strictObject({
    error: z.strictObject({
      code: z.enum(Object.values(ErrorCode)),
      message: z.string(),
      details: described(z.unknown(), 'e.g. {errors: [{path, message}]} for invalid input').optional(),
    }),
  })
  .meta({ id: 'Error', description: 'Every failure, whatever the route' });

export const ALL_ROLES: readonly Role[] = [Role.admin, Role.qa, Role.reader, Role.system];
