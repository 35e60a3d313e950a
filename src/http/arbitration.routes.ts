import { Router } from 'express';
import { recordAudit } from '../audit/audit.repository.js';
import { findCase } from '../cases/case.repository.js';
import type { Db } from '../db/database.js';
import { ErrorCode, GatewayError } from '../errors.js';
import { latestArbitration, listArbitrations, primaryReportText, secondReportText } from '../reports/arbitration.repository.js';
import type { ArbitrationService } from '../reports/arbitration.service.js';
import { ArbitrationState } from '../reports/arbitration.table.js';
import { presentArbitrationForArbitrator, presentArbitrationForStaff } from '../reports/arbitration.view.js';
import { requireRole } from './auth.js';
import { oneOf, queryInt } from './query.js';
import { presentCasesFor, readerSeesPseudonyms } from './reader-view.js';

/**
 * Arbitration of a discrepant second read by a third reader. The arbitrator (a reader token) sees the
 * arbitration and the case blinded: neither read, score nor reader; admin/QA see everything.
 */
export function arbitrationRouter(db: Db, arbitration: ArbitrationService, newId: () => string): Router {
  const r = Router();

  const forCaller = async (caseId: string, p: { role: string; readerId?: string }) => {
    const row = await findCase(db, caseId);
    if (!row) throw new GatewayError(ErrorCode.notFound, 'no such case');
    const a = await latestArbitration(db, caseId);
    // A reader learns that there is no arbitration only of a case that is theirs.
    if (p.role === 'reader' && !(a ? a.arbitrator_id === p.readerId : row.reader_id === p.readerId)) throw new GatewayError(ErrorCode.forbidden, 'this arbitration is not assigned to you');
    if (!a) throw new GatewayError(ErrorCode.notFound, 'this case has no arbitration');
    return { row, a };
  };

  r.get('/arbitrations', requireRole('admin', 'qa', 'reader'), async (req, res) => {
    const p = req.principal!;
    const state = oneOf(req.query['state'], Object.values(ArbitrationState), 'state');
    const limit = queryInt(req.query['limit'], 100, 1, 1000, 'limit');
    if (p.role === 'reader') {
      // A third reader's worklist: their open arbitrations (or the state asked for), blinded.
      const rows = await listArbitrations(db, { arbitratorId: p.readerId!, states: [state ?? ArbitrationState.open], limit });
      const open = rows.filter((a) => state !== undefined || a.case_state === 'arbitration');
      res.json({ items: open.map((a) => presentArbitrationForArbitrator(a, a.case_state)) });
      return;
    }
    const rows = await listArbitrations(db, { states: state ? [state] : undefined, limit });
    res.json({ items: rows.map((a) => ({ caseId: a.case_id, caseState: a.case_state, ...presentArbitrationForStaff(a, a.case_state) })) });
  });

  r.get('/cases/:id/arbitration', requireRole('admin', 'qa', 'reader'), async (req, res) => {
    const p = req.principal!;
    const { row, a } = await forCaller(String(req.params['id']), p);
    if (p.role === 'reader') {
      res.json({ ...presentArbitrationForArbitrator(a, row.state), case: (await presentCasesFor(db, p, [row]))[0] });
      return;
    }
    res.json({ caseId: row.id, caseState: row.state, ...presentArbitrationForStaff(a, row.state) });
  });

  /**
   * The two reads, as text only (no score, no reader), for the arbitrator to decide between: shown on
   * request and audited, as the first report is to a blinded second reader.
   */
  r.get('/cases/:id/arbitration/readings', requireRole('admin', 'qa', 'reader'), async (req, res) => {
    const p = req.principal!;
    const { row, a } = await forCaller(String(req.params['id']), p);
    if (p.role === 'reader' && a.state !== ArbitrationState.open) throw new GatewayError(ErrorCode.conflict, `the arbitration is ${a.state}`);
    const second = await secondReportText(db, a.report_id);
    // The first report names the patient; a reader who got the study de-identified never sees it (as GET /cases/{id}/primary-report).
    const hidden = p.role === 'reader' && (await readerSeesPseudonyms(db, row));
    const first = hidden ? undefined : await primaryReportText(db, row.study_instance_uid);
    await recordAudit(db, newId(), new Date().toISOString(), { actor: p.name, action: 'case.arbitration-readings-revealed', entityType: 'case', entityId: row.id, details: { role: p.role } });
    res.json({
      caseId: row.id,
      first: first !== undefined ? { text: first } : null,
      ...(hidden ? { firstWithheld: 'this study was sent to you de-identified; its first report is not shown' } : {}),
      second: second ? { text: second.text, impression: second.impression } : null,
    });
  });

  r.post('/cases/:id/arbitration', requireRole('admin', 'qa', 'reader'), async (req, res) => {
    const p = req.principal!;
    const id = String(req.params['id']);
    const input = arbitration.parse(req.body);
    const a = await arbitration.decide(id, input, { role: p.role, readerId: p.readerId, name: p.name });
    const row = await findCase(db, id);
    res.json(p.role === 'reader' ? presentArbitrationForArbitrator(a, row!.state) : { caseId: id, caseState: row!.state, ...presentArbitrationForStaff(a, row!.state) });
  });

  r.post('/cases/:id/arbitration/assign', requireRole('admin', 'qa'), async (req, res) => {
    const id = String(req.params['id']);
    const b = (typeof req.body === 'object' && req.body !== null && !Array.isArray(req.body) ? req.body : {}) as Record<string, unknown>;
    for (const k of Object.keys(b)) if (!['readerId', 'reason'].includes(k)) throw new GatewayError(ErrorCode.invalidInput, `unknown field "${k}"`);
    const text = (k: string, max: number) => {
      const v = b[k];
      if (v === undefined || v === null || v === '') return undefined;
      if (typeof v !== 'string' || v.length > max) throw new GatewayError(ErrorCode.invalidInput, `${k} must be a string of at most ${max} characters`);
      return v.trim();
    };
    const a = await arbitration.assign(id, req.principal!.name, text('readerId', 128), text('reason', 2000) ?? 'assigned by QA');
    const row = await findCase(db, id);
    res.json({ caseId: id, caseState: row!.state, ...presentArbitrationForStaff(a, row!.state) });
  });
  return r;
}
