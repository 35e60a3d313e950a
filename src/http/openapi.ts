/**
 * The OpenAPI 3.1 description of the HTTP API, served at GET /api/openapi.json
 * (no token: it holds no PHI), generated from the route specs: the same zod
 * schemas that parse each request. zod-openapi turns them into JSON Schema
 * (zod's own converter) and makes every schema with a `meta({id})` a component.
 *
 * `x-roles` on each operation lists the token roles that pass its role check;
 * an empty list means no token is needed.
 */
import { z } from 'zod';
import { createDocument, type oas31, type ZodOpenApiOperationObject, type ZodOpenApiPathsObject, type ZodOpenApiResponseObject } from 'zod-openapi';
import { API_TAGS, ErrorBody, type ResponseEntry, type RouteSpec } from './api-schema.js';
import { arbitrationRoutes } from './arbitration.schemas.js';
import { casesRoutes } from './cases.schemas.js';
import { dicomwebRoutes } from './dicomweb.schemas.js';
import { consoleRoutes } from './console.schemas.js';
import { messagesRoutes } from './messages.schemas.js';
import { operationsRoutes } from './operations.schemas.js';
import { rulesRoutes } from './rules.schemas.js';
import { studiesRoutes } from './studies.schemas.js';

/** Every route the gateway answers (the web console's static files aside). A new route's spec goes here too. */
export const API_ROUTES: readonly RouteSpec[] = [
  ...Object.values(operationsRoutes),
  ...Object.values(studiesRoutes),
  ...Object.values(messagesRoutes),
  ...Object.values(casesRoutes),
  ...Object.values(arbitrationRoutes),
  ...Object.values(consoleRoutes),
  ...Object.values(rulesRoutes),
  ...Object.values(dicomwebRoutes),
];

/** `/api/cases/:id` as OpenAPI writes it: `/api/cases/{id}`. */
export const openApiPath = (expressPath: string): string => expressPath.replace(/:([A-Za-z0-9_]+)/g, '{$1}');

const json = (schema: z.ZodType) => ({ 'application/json': { schema } });
const error = (description: string): ZodOpenApiResponseObject => ({ description, content: json(ErrorBody) });

function response(entry: ResponseEntry): ZodOpenApiResponseObject {
  if (entry instanceof z.ZodType) return { description: entry.meta()?.description ?? 'OK', content: json(entry) };
  const text = Object.fromEntries(Object.entries(entry.text ?? {}).map(([type, description]) => [type, { schema: z.string().meta({ description }) }]));
  const media = Object.fromEntries(Object.entries(entry.media ?? {}).map(([type, schema]) => [type, { schema }]));
  const content = { ...(entry.schema ? json(entry.schema) : {}), ...text, ...media };
  return { description: entry.description, ...(Object.keys(content).length > 0 ? { content } : {}) };
}

/** The operation with the answers every route can give: 400 when it takes input, 401/403/429 with roles, 500. */
function operation(spec: RouteSpec): ZodOpenApiOperationObject {
  const responses: Record<string, ZodOpenApiResponseObject> = {};
  for (const [status, entry] of Object.entries(spec.responses)) responses[status] = response(entry);
  if (spec.body || spec.query || spec.params) responses['400'] = error('invalid input: every problem listed in error.details.errors as {path, message}');
  if (spec.roles.length > 0) {
    responses['401'] = error('no bearer token, or an unknown one');
    responses['403'] = error(`the token's role is not one of ${spec.roles.join(', ')}`);
    responses['429'] = {
      ...error('too many failed logins from this address: refused until the minute is over'),
      headers: { 'Retry-After': { description: 'seconds', schema: { type: 'integer' } } },
    };
  }
  for (const [status, why] of Object.entries(spec.errors ?? {})) responses[status] = error(why);
  responses['500'] = error('internal error');
  return {
    operationId: spec.operationId,
    summary: spec.summary,
    ...(spec.description ? { description: spec.description } : {}),
    tags: [spec.tag],
    'x-roles': [...spec.roles],
    security: spec.roles.length > 0 ? [{ bearer: [] }] : [],
    ...(spec.params || spec.query ? { requestParams: { ...(spec.params ? { path: spec.params } : {}), ...(spec.query ? { query: spec.query } : {}) } } : {}),
    ...(spec.body
      ? {
          requestBody: {
            required: !spec.bodyOptional,
            content: { ...json(spec.body), ...(spec.yamlBody ? { 'application/yaml': { schema: z.string().meta({ description: spec.yamlBody }) } } : {}) },
          },
        }
      : {}),
    responses,
  };
}

export function buildOpenApiDocument(routes: readonly RouteSpec[] = API_ROUTES): oas31.OpenAPIObject {
  const paths: ZodOpenApiPathsObject = {};
  for (const spec of routes) {
    const item = (paths[openApiPath(spec.path)] ??= {});
    if (item[spec.method]) throw new Error(`two specs for ${spec.method.toUpperCase()} ${spec.path}`);
    item[spec.method] = operation(spec);
  }
  const doc = createDocument({
    openapi: '3.1.0',
    info: {
      title: 'Second-read gateway',
      version: '1',
      description: 'Radiology second-read gateway HTTP API (DESIGN.md section 3). JSON; `Authorization: Bearer <token>`; 401 without, 403 for the wrong role.',
    },
    servers: [{ url: '/' }],
    tags: Object.entries(API_TAGS).map(([name, description]) => ({ name, description })),
    paths,
    components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'a token from auth.tokens in the gateway config' } } },
  });
  return { ...doc, jsonSchemaDialect: 'https://spec.openapis.org/oas/3.1/dialect/base' } as oas31.OpenAPIObject;
}
