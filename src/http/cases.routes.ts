import { Router } from 'express';
import type { Db } from '../db/database.js';
import { caseReasons, findCase, listCases } from '../cases/case.repository.js';
import type { CaseService } from '../cases/case.service.js';
import type { CaseRow } from '../cases/case.table.js';
import { ErrorCode, GatewayError } from '../errors.js';
import type { DeliveryRow } from '../forwarding/delivery.table.js';
import type { ForwardingService } from '../forwarding/forwarding.service.js';
import { deliveriesOfCases, listDeliveries } from '../forwarding/outbox.repository.js';
import { CaseState, DeliveryState } from '../states.js';
import { requireRole } from './auth.js';
import { oneOf, queryInt, queryString } from './query.js';

export function casesRouter(db: Db, cases: CaseService, forwarding: ForwardingService): Router {
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
      limit: queryInt(req.query['limit'], 100, 1, 1000, 'limit'),
      offset: queryInt(req.query['offset'], 0, 0, Number.MAX_SAFE_INTEGER, 'offset'),
    });
    const deliveries = await deliveriesOfCases(db, rows.map((c) => c.id));
    res.json({ items: rows.map((c) => presentCase(c, deliveries.filter((d) => d.case_id === c.id))) });
  });

  r.get('/cases/:id', requireRole('admin', 'qa', 'system', 'reader'), async (req, res) => {
    const row = await findCase(db, String(req.params['id']));
    const p = req.principal!;
    if (!row) throw new GatewayError(ErrorCode.notFound, 'no such case');
    if (p.role === 'reader' && row.reader_id !== p.readerId) throw new GatewayError(ErrorCode.forbidden, 'this case is not assigned to you');
    res.json(presentCase(row, await deliveriesOfCases(db, [row.id])));
  });

  r.post('/cases/:id/retry', requireRole('admin', 'qa', 'system'), async (req, res) => {
    const id = String(req.params['id']);
    await forwarding.retryCase(id, req.principal!.name);
    const row = await findCase(db, id);
    res.json(presentCase(row!, await deliveriesOfCases(db, [id])));
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
    res.status(created ? 201 : 200).json(presentCase(row, await deliveriesOfCases(db, [row.id])));
  });
  return r;
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

export function presentCase(c: CaseRow, deliveries: readonly DeliveryRow[] = []): Record<string, unknown> {
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
    deliveries: deliveries.map(presentDelivery),
    // The second report and the write-back arrive with their issue; the shape is fixed now.
    secondReport: null,
    writeBack: null,
    createdBy: c.created_by,
    createdAt: c.created_at,
    updatedAt: c.updated_at,
  };
}
