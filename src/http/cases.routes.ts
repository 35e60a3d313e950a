import { Router } from 'express';
import type { Db } from '../db/database.js';
import { caseReasons, findCase, listCases } from '../cases/case.repository.js';
import type { CaseService } from '../cases/case.service.js';
import type { CaseRow } from '../cases/case.table.js';
import { ErrorCode, GatewayError } from '../errors.js';
import { CaseState } from '../states.js';
import { requireRole } from './auth.js';
import { oneOf, queryInt, queryString } from './query.js';

export function casesRouter(db: Db, cases: CaseService): Router {
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
    res.json({ items: rows.map(presentCase) });
  });

  r.get('/cases/:id', requireRole('admin', 'qa', 'system', 'reader'), async (req, res) => {
    const row = await findCase(db, String(req.params['id']));
    const p = req.principal!;
    if (!row) throw new GatewayError(ErrorCode.notFound, 'no such case');
    if (p.role === 'reader' && row.reader_id !== p.readerId) throw new GatewayError(ErrorCode.forbidden, 'this case is not assigned to you');
    res.json(presentCase(row));
  });

  r.post('/cases', requireRole('admin', 'qa', 'system'), async (req, res) => {
    const request = cases.parseManualRequest(req.body);
    const { case: row, created } = await cases.requestManual(request, req.principal!.name);
    res.status(created ? 201 : 200).json(presentCase(row));
  });
  return r;
}

export function presentCase(c: CaseRow): Record<string, unknown> {
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
    // Forwarding, the second report and the write-back arrive with their issues; the shape is fixed now.
    deliveries: [],
    secondReport: null,
    writeBack: null,
    createdBy: c.created_by,
    createdAt: c.created_at,
    updatedAt: c.updated_at,
  };
}
