/** The routes the app answers outside /api's routers: health, metrics and the API description itself. */
import { z } from 'zod';
import { Role } from '../config/schema.js';
import { defineRoute, nstr } from './api-schema.js';

const Health = z
  .looseObject({
    status: z.enum(['ok', 'starting']),
    instanceId: nstr.optional(),
    destinations: z.record(z.string(), z.strictObject({ ok: z.boolean(), detail: z.string() })).optional(),
  })
  .meta({ id: 'Health' });
export type HealthView = z.input<typeof Health>;

export const operationsRoutes = {
  getHealth: defineRoute({
    method: 'get',
    path: '/healthz',
    operationId: 'getHealth',
    summary: 'Liveness and readiness',
    description: '200 once listeners and database are up; 503 while starting or stopping.',
    tag: 'operations',
    roles: [],
    responses: { 200: { description: 'up', schema: Health }, 503: { description: 'starting or stopping', schema: Health } },
  }),
  getMetrics: defineRoute({
    method: 'get',
    path: '/metrics',
    operationId: 'getMetrics',
    summary: 'Prometheus metrics',
    description:
      'Prometheus text exposition format, every sample labelled instance_id. Families include gateway_instances_received, gateway_hl7_messages_received{type,status}, gateway_studies{state}, gateway_cases{state} (every state, zeros included), gateway_delivery_queue{destination,state}, gateway_delivery_queue_depth{destination}, gateway_delivery_seconds (histogram per destination), gateway_delivered_instances_total, gateway_delivery_failures_total{destination,kind}, gateway_outbound_messages{kind,state}, gateway_sla_breached_cases, resource guards (gateway_limit, gateway_in_use, gateway_guard_rejections_total) and process metrics.',
    tag: 'operations',
    roles: [Role.admin, Role.qa, Role.system],
    responses: { 200: { description: 'metrics', text: { 'text/plain': 'Prometheus text exposition format' } } },
    errors: { 404: 'metrics are not enabled' },
  }),
  getOpenApi: defineRoute({
    method: 'get',
    path: '/api/openapi.json',
    operationId: 'getOpenApi',
    summary: 'This document',
    tag: 'operations',
    roles: [],
    responses: { 200: { description: 'OpenAPI 3.1 document', schema: z.looseObject({ openapi: z.string(), paths: z.record(z.string(), z.unknown()) }) } },
  }),
};
