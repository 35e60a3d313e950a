import { Router } from 'express';
import type { Db } from '../db/database.js';
import { caseReasons, findCase, listCases } from '../cases/case.repository.js';
import type { CaseService } from '../cases/case.service.js';
import type { CaseRow } from '../cases/case.table.js';
import { ErrorCode, GatewayError } from '../errors.js';
import type { DeliveryRow } from '../forwarding/delivery.table.js';
import type { ForwardingService } from '../forwarding/forwarding.service.js';
import { deliveriesOfCases, listDeliveries } from '../forwarding/outbox.repository.js';
import { priorsViewOfCases } from '../priors/prior.presenter.js';
import { openExclusionsOfCases } from '../forwarding/exclusion.repository.js';
import type { DeliveryExclusionRow } from '../forwarding/delivery.table.js';
import { canTransition, transitionCase } from '../cases/case-state.js';
import type { ReaderService } from '../readers/reader.service.js';
import type { OutboundMessageRow, SecondReportRow } from '../reports/report.table.js';
import type { SecondReportService } from '../reports/second-report.service.js';
import { CaseState, DeliveryState, OutboundKind } from '../states.js';
import { requireRole } from './auth.js';
import { presentCasesFor } from './reader-view.js';
import { oneOf, queryInt, queryString, queryTime } from './query.js';

export interface CaseRouteDeps {
  cases: CaseService;
  forwarding: ForwardingService;
  reports: SecondReportService;
  readers: ReaderService;
}

export function casesRouter(db: Db, deps: CaseRouteDeps): Router {
  const { cases, forwarding, reports, readers } = deps;
  const r = Router();

  r.get('/cases', requireRole('admin', 'qa', 'system', 'reader'), async (req, res) => {
    const p = req.principal!;
    const state = oneOf(req.query['state'], Object.values(CaseState), 'state');
    // A reader sees only the cases assigned to them, whatever filter they ask for.
    const readerId = p.role === 'reader' ? p.readerId : queryString(req.query['readerId']);
    const rows = await listCases(db, {
      state,
      readerId,
      studyInstanceUid: queryString(req.query['studyInstanceUid']),
      ruleId: queryString(req.query['ruleId']),
      priority: queryString(req.query['priority']),
      modality: queryString(req.query['modality']),
      dueBefore: queryTime(req.query['dueBefore'], 'dueBefore'),
      limit: queryInt(req.query['limit'], 100, 1, 1000, 'limit'),
      offset: queryInt(req.query['offset'], 0, 0, Number.MAX_SAFE_INTEGER, 'offset'),
    });
    res.json({ items: await presentCasesFor(db, p, rows) });
  });

  r.get('/cases/:id', requireRole('admin', 'qa', 'system', 'reader'), async (req, res) => {
    const row = await findCase(db, String(req.params['id']));
    const p = req.principal!;
    if (!row) throw new GatewayError(ErrorCode.notFound, 'no such case');
    if (p.role === 'reader' && row.reader_id !== p.readerId) throw new GatewayError(ErrorCode.forbidden, 'this case is not assigned to you');
    res.json((await presentCasesFor(db, p, [row]))[0]);
  });

  r.post('/cases/:id/report', requireRole('reader', 'system'), async (req, res) => {
    const id = String(req.params['id']);
    const input = reports.parse(req.body);
    const p = req.principal!;
    const report = await reports.submit(id, input, { role: p.role, readerId: p.readerId, name: p.name }, 'api');
    const row = await findCase(db, id);
    res.status(201).json({ report: presentReport(report), case: (await presentCasesFor(db, p, [row!]))[0] });
  });

  r.post('/cases/:id/decline', requireRole('reader'), async (req, res) => {
    const id = String(req.params['id']);
    const why = typeof (req.body as { reason?: unknown } | undefined)?.reason === 'string' ? String((req.body as { reason: string }).reason).slice(0, 2000) : 'declined';
    const outcome = await readers.decline(id, req.principal!.readerId!, req.principal!.name, why);
    res.json(outcome);
  });

  // Stops deliveries, deltas and write-backs in the cancel's own transaction (case-state.ts); the pool is told by the outbound worker.
  r.post('/cases/:id/cancel', requireRole('admin', 'qa'), async (req, res) => {
    const id = String(req.params['id']);
    const reason = cancelReason(req.body);
    if (!(await findCase(db, id))) throw new GatewayError(ErrorCode.notFound, 'no such case');
    const now = new Date().toISOString();
    const moved = await db.transaction().execute((trx) =>
      transitionCase(trx, { caseId: id, from: CANCELLABLE, to: CaseState.cancelled, actor: req.principal!.name, now, auditId: cases.newAuditId(), details: reason ? { reason } : {} }),
    );
    if (!moved) throw new GatewayError(ErrorCode.conflict, 'the case is no longer open');
    reports.kickOutbound();
    const row = await findCase(db, id);
    res.json((await presentCases(db, [row!]))[0]);
  });

  r.post('/cases/:id/retry', requireRole('admin', 'qa', 'system'), async (req, res) => {
    const id = String(req.params['id']);
    await forwarding.retryCase(id, req.principal!.name);
    const row = await findCase(db, id);
    res.json((await presentCases(db, [row!]))[0]);
  });

  r.post('/cases/:id/excluded/:sopInstanceUid/release', requireRole('admin', 'qa'), async (req, res) => {
    const id = String(req.params['id']);
    const body = (req.body ?? {}) as Record<string, unknown>;
    if (typeof body !== 'object' || Array.isArray(body)) throw new GatewayError(ErrorCode.invalidInput, 'the body must be a JSON object');
    for (const k of Object.keys(body)) if (k !== 'reason') throw new GatewayError(ErrorCode.invalidInput, `unknown field "${k}"`);
    const reason = body['reason'];
    if (reason !== undefined && reason !== null && (typeof reason !== 'string' || reason.length > 2000)) {
      throw new GatewayError(ErrorCode.invalidInput, 'reason must be a string of at most 2000 characters');
    }
    await forwarding.releaseExcluded(id, String(req.params['sopInstanceUid']), req.principal!.name, typeof reason === 'string' && reason.trim() ? reason.trim() : null);
    const row = await findCase(db, id);
    res.json((await presentCases(db, [row!]))[0]);
  });

  r.get('/deliveries', requireRole('admin', 'qa', 'system'), async (req, res) => {
    const rows = await listDeliveries(db, {
      state: oneOf(req.query['state'], Object.values(DeliveryState), 'state'),
      destinationId: queryString(req.query['destinationId']),
      limit: queryInt(req.query['limit'], 100, 1, 1000, 'limit'),
      offset: queryInt(req.query['offset'], 0, 0, Number.MAX_SAFE_INTEGER, 'offset'),
    });
    res.json({ items: rows.map((d) => ({ caseId: d.case_id, studyInstanceUid: d.study_instance_uid, ...presentDelivery(d) })) });
  });

  r.post('/cases', requireRole('admin', 'qa', 'system'), async (req, res) => {
    const request = cases.parseManualRequest(req.body);
    const { case: row, created } = await cases.requestManual(request, req.principal!.name);
    forwarding.kick();
    res.status(created ? 201 : 200).json((await presentCases(db, [row]))[0]);
  });
  return r;
}

/** Every state a case can be cancelled from: the open ones, and failed (a stuck case is ended too). */
const CANCELLABLE: readonly CaseState[] = Object.values(CaseState).filter((st) => canTransition(st, CaseState.cancelled));

function cancelReason(body: unknown): string | undefined {
  const b = (typeof body === 'object' && body !== null && !Array.isArray(body) ? body : {}) as Record<string, unknown>;
  const errors: { path: string; message: string }[] = [];
  for (const k of Object.keys(b)) if (k !== 'reason') errors.push({ path: k, message: 'unknown field' });
  const v = b['reason'];
  if (v !== undefined && v !== null && (typeof v !== 'string' || v.length > 2000)) errors.push({ path: 'reason', message: 'must be a string of at most 2000 characters' });
  if (errors.length > 0) throw new GatewayError(ErrorCode.invalidInput, 'invalid cancel request', { details: { errors } });
  return typeof v === 'string' && v.trim() !== '' ? v.trim() : undefined;
}

export function presentDelivery(d: DeliveryRow): Record<string, unknown> {
  return {
    id: d.id,
    destinationId: d.destination_id,
    state: d.state,
    attempts: d.attempts,
    lastError: d.last_error,
    deidentified: d.deidentify === 1,
    instancesTotal: d.instances_total,
    instancesSent: d.instances_sent,
    nextAttemptAt: d.state === 'pending' ? d.next_attempt_at : null,
    deliveredAt: d.delivered_at,
    updatedAt: d.updated_at,
  };
}

/** An instance kept back from a de-identified delivery: what a person needs to decide on a release (no values). */
export function presentExclusion(e: DeliveryExclusionRow & { destination_id: string }): Record<string, unknown> {
  return {
    sopInstanceUid: e.sop_instance_uid,
    sopClassUid: e.sop_class_uid,
    seriesDescription: e.series_description,
    reason: e.reason,
    detail: e.detail,
    destinationId: e.destination_id,
    excludedAt: e.excluded_at,
  };
}

export function presentReport(r: SecondReportRow): Record<string, unknown> {
  return {
    id: r.id,
    version: r.version,
    readerId: r.reader_id,
    text: r.text,
    impression: r.impression,
    radpeerScore: r.radpeer_score,
    concordance: r.radpeer_score === '1' ? 'CONCORDANT' : 'DISCORDANT',
    discrepant: r.discrepant === 1,
    addendum: r.addendum === 1,
    source: r.source,
    createdAt: r.created_at,
  };
}

/** Cases with their deliveries, latest second report and latest write-back, in a few queries. */
export async function presentCases(db: Db, rows: readonly CaseRow[]): Promise<Record<string, unknown>[]> {
  const ids = rows.map((c) => c.id);
  if (ids.length === 0) return [];
  const deliveries = await deliveriesOfCases(db, ids);
  const exclusions = await openExclusionsOfCases(db, ids);
  const reports = await db.selectFrom('second_reports').selectAll().where('case_id', 'in', ids).orderBy('version').execute();
  const writeBacks = await db.selectFrom('outbound_messages').selectAll().where('case_id', 'in', ids).where('kind', '=', OutboundKind.writeBack).orderBy('created_at').execute();
  const priors = await priorsViewOfCases(db, ids);
  return rows.map((c) => {
    const mine = reports.filter((r) => r.case_id === c.id);
    const wb = writeBacks.filter((w) => w.case_id === c.id).at(-1);
    const presented = presentCase(
      c,
      deliveries.filter((d) => d.case_id === c.id),
      mine.at(-1),
      mine.length,
      wb,
      exclusions.filter((e) => e.case_id === c.id),
    );
    presented['priors'] = priors.get(c.id) ?? [];
    return presented;
  });
}

export function presentCase(
  c: CaseRow,
  deliveries: readonly DeliveryRow[] = [],
  report?: SecondReportRow,
  reportVersions = 0,
  writeBack?: OutboundMessageRow,
  exclusions: readonly (DeliveryExclusionRow & { destination_id: string })[] = [],
): Record<string, unknown> {
  const reasons = caseReasons(c);
  return {
    id: c.id,
    studyInstanceUid: c.study_instance_uid,
    accessionNumber: c.accession_number,
    state: c.state,
    ruleIds: [...new Set(reasons.map((r) => r.ruleId))],
    reasons,
    priority: c.priority,
    slaHours: c.sla_hours,
    dueAt: c.due_at,
    readerId: c.reader_id,
    destinationId: c.destination_id,
    readerGroup: c.reader_group,
    blinded: c.blinded === 1,
    deidentify: c.deidentify === null ? null : c.deidentify === 1,
    discrepant: c.discrepant === 1,
    ruleSetVersion: c.rule_set_version,
    slaBreachedAt: c.sla_breached_at,
    escalationLevel: c.escalation_level,
    deliveries: deliveries.map(presentDelivery),
    excludedInstances: exclusions.map(presentExclusion),
    secondReport: report ? { ...presentReport(report), versions: reportVersions } : null,
    writeBack: writeBack
      ? { state: writeBack.state, attempts: writeBack.attempts, lastError: writeBack.last_error, controlId: writeBack.control_id, response: writeBack.response, updatedAt: writeBack.updated_at }
      : null,
    createdBy: c.created_by,
    createdAt: c.created_at,
    updatedAt: c.updated_at,
  };
}
