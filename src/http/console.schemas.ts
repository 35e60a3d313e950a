/** What the web console reads besides cases and studies: who am I, the dashboard, statistics, instances, the audit log. */
import { z } from 'zod';
import { Role } from '../config/schema.js';
import { STATS_TABLES } from '../stats/stats.js';
import { CaseState } from '../states.js';
import { ALL_ROLES, defineRoute, described, int, isoInstant, limitParam, nnum, nstr, time } from './api-schema.js';

const Me = z
  .strictObject({
    name: z.string(),
    role: z.enum(ALL_ROLES as [Role, ...Role[]]),
    readerId: nstr,
    reader: z.strictObject({ id: z.string(), name: z.string(), modalities: z.array(z.string()), subspecialties: z.array(z.string()) }).nullable(),
    readers: described(
      z.array(z.strictObject({ id: z.string(), name: z.string(), destination: nstr })),
      'every configured reader, for admin and qa; empty for the other roles',
    ),
  })
  .meta({ id: 'Me' });

const Dashboard = z
  .strictObject({
    generatedAt: time,
    todayStartsAt: described(time, "local midnight of the gateway host: where today's counts start"),
    today: z.strictObject({ studiesReceived: int, casesOpened: int, secondReports: int, writtenBack: int }),
    casesByState: z.strictObject(Object.fromEntries(Object.values(CaseState).map((state) => [state, int])) as Record<CaseState, typeof int>),
    queues: z.array(z.strictObject({ destinationId: z.string(), pending: int, sending: int, dead: int, held: int, delivered: int })),
    slaBreaches: z.strictObject({ open: int, overdue: described(int, 'past due, not yet seen by the SLA watch') }),
    writeBack: z.strictObject({ pending: int, failed: int }),
    deadLetters: int,
    heldMessages: int,
  })
  .meta({ id: 'Dashboard' });

const Percentiles = z.strictObject({ n: int, p50: nnum, p90: nnum, p95: nnum }).meta({ id: 'Percentiles', description: 'nearest-rank percentiles, in hours' });

const groupStatsShape = {
  key: z.string(),
  radiologistId: described(z.string(), 'first reader (OBR-32 of the primary report)').optional(),
  readerId: described(z.string(), 'second reader').optional(),
  modality: z.string().optional(),
  secondReads: int,
  discordant: described(int, 'RADPEER 2a and worse'),
  significant: described(int, 'RADPEER 2b, 3a, 3b'),
  discordanceRate: nnum,
  significantRate: nnum,
  weightedDiscordanceRate: described(nnum, 'RADPEER 2+ rate with inverse-probability weights (random draws 1/p, enrichment 1)'),
  weightedSignificantRate: nnum,
  discordanceCiLow: described(nnum, '95 % Wilson interval of the weighted 2+ rate at the effective sample size'),
  discordanceCiHigh: nnum,
  effectiveN: described(nnum, 'Kish effective sample size (sum w)^2 / sum w^2'),
  turnaroundHours: Percentiles,
};
const GroupStats = z.strictObject(groupStatsShape).meta({ id: 'GroupStats' });

const kappaShape = {
  n: int,
  observedAgreement: nnum,
  chanceAgreement: nnum,
  kappa: described(nnum, "Cohen's kappa; null when undefined"),
};
const AgreementTable = z
  .strictObject({ agreeAgree: int, agreeDiscrepant: int, discrepantAgree: int, discrepantDiscrepant: int })
  .meta({ id: 'AgreementTable', description: 'second reader (first word) vs third reader, RADPEER 1 (agree) vs 2+ (discrepant)' });

const Stats = z
  .strictObject({
    from: time,
    to: time,
    bucket: z.enum(['day', 'week']),
    totals: GroupStats,
    scores: described(z.record(z.string(), int), 'second reads per RADPEER score'),
    byRadiologist: z.array(GroupStats),
    byModality: z.array(GroupStats),
    byRadiologistModality: z.array(GroupStats),
    byReader: z.array(GroupStats),
    writeBackTurnaroundHours: Percentiles,
    overTime: z.array(z.strictObject({ start: time, ...groupStatsShape })),
    enrichment: z.array(
      z.strictObject({
        selection: described(z.string(), 'sampling, or the kinds of the rules that flagged the study (enrichment)'),
        secondReads: int,
        meanWeight: z.number(),
        minWeight: z.number(),
        maxWeight: z.number(),
      }),
    ),
    interReaderAgreement: described(
      z.array(z.strictObject({ radiologistId: nstr, readerId: z.string(), modality: nstr, table: AgreementTable, ...kappaShape })),
      'second vs third reader over decided arbitrations, per first reader, second reader and modality',
    ),
    interReaderAgreementTotal: z.strictObject({ table: AgreementTable, ...kappaShape }),
    arbitration: z.strictObject({
      requested: described(int, 'second reads of the period that a rule sent to arbitration'),
      decided: int,
      confirmedFirst: int,
      confirmedSecond: int,
      other: int,
      confirmedSecondShare: described(nnum, 'confirmedSecond / decided'),
    }),
  })
  .meta({ id: 'Stats' });

const leaseTime = time.nullable();
const GatewayInstance = z
  .strictObject({
    instanceId: z.string(),
    host: z.string(),
    pid: int,
    version: nstr,
    startedAt: time,
    heartbeatAt: time,
    stoppedAt: time.nullable(),
    alive: described(z.boolean(), 'heartbeat within the lease period and not stopped'),
    self: described(z.boolean(), 'the instance that answered'),
    claims: z.strictObject({
      leases: z.array(z.strictObject({ name: z.string(), acquiredAt: leaseTime, expiresAt: leaseTime, expired: z.boolean() })),
      deliveries: z.array(
        z.strictObject({
          id: z.string(),
          caseId: z.string(),
          destinationId: z.string(),
          leaseExpiresAt: leaseTime,
          expired: z.boolean(),
          instancesSent: int,
          instancesTotal: int,
        }),
      ),
      outbound: z.array(
        z.strictObject({ id: z.string(), caseId: z.string(), kind: z.string(), leaseExpiresAt: leaseTime, expired: z.boolean(), attempts: int }),
      ),
    }),
  })
  .meta({ id: 'GatewayInstance' });

const AuditEvent = z
  .strictObject({ id: z.string(), at: time, actor: z.string(), action: z.string(), entityType: z.string(), entityId: nstr, details: z.unknown() })
  .meta({ id: 'AuditEvent' });

const qa = [Role.admin, Role.qa] as const;

export const consoleRoutes = {
  getMe: defineRoute({
    method: 'get',
    path: '/api/me',
    operationId: 'getMe',
    summary: 'Who the token is (name, role, reader), for the console',
    tag: 'console',
    roles: ALL_ROLES,
    responses: { 200: { description: 'the principal', schema: Me } },
  }),
  getDashboard: defineRoute({
    method: 'get',
    path: '/api/dashboard',
    operationId: 'getDashboard',
    summary: "Live counts for the console: today's activity, cases by state, queues, SLA breaches, write-backs, held messages",
    tag: 'console',
    roles: qa,
    responses: { 200: { description: 'the counts', schema: Dashboard } },
  }),
  getStats: defineRoute({
    method: 'get',
    path: '/api/stats',
    operationId: 'getStats',
    summary: 'Second reads and discordance per first reader, modality and second reader, turnaround percentiles, over time',
    tag: 'console',
    roles: qa,
    query: z.object({
      from: described(isoInstant, 'ISO-8601; default: 30 days before `to`').optional(),
      to: described(isoInstant, 'ISO-8601; default: now. At most three years after `from`').optional(),
      bucket: described(z.enum(['day', 'week']), 'default: week for periods over 92 days, else day').optional(),
      format: z.enum(['json', 'csv']).default('json'),
      table: described(z.enum(STATS_TABLES), 'with format=csv: which table (default radiologist-modality); peer-review: one row per second read').default(
        'radiologist-modality',
      ),
      radiologist: described(z.string(), "one first reader's statistics (their page)").optional(),
    }),
    responses: { 200: { description: 'the statistics (JSON), or one table as CSV', schema: Stats, text: { 'text/csv': 'one table' } } },
  }),
  listGatewayInstances: defineRoute({
    method: 'get',
    path: '/api/instances',
    operationId: 'listGatewayInstances',
    summary: 'Every gateway instance on this database: heartbeat, liveness and what it has claimed',
    tag: 'console',
    roles: qa,
    responses: {
      200: {
        description: 'instances',
        schema: z.strictObject({ self: described(z.string(), 'the id of the instance that answered'), items: z.array(GatewayInstance) }),
      },
    },
  }),
  listAudit: defineRoute({
    method: 'get',
    path: '/api/audit',
    operationId: 'listAudit',
    summary: 'Who did what, when',
    tag: 'audit',
    roles: qa,
    query: z.object({
      entityType: z.string().optional(),
      entityId: z.string().optional(),
      actor: z.string().optional(),
      action: z.string().optional(),
      from: described(isoInstant, 'ISO-8601 date or date-time').optional(),
      to: described(isoInstant, 'ISO-8601 date or date-time').optional(),
      limit: limitParam(200, 5000),
    }),
    responses: { 200: { description: 'audit events', schema: z.strictObject({ items: z.array(AuditEvent) }) } },
  }),
};
