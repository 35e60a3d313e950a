import { Router } from 'express';
import { recordAudit } from '../audit/audit.repository.js';
import { findCase } from '../cases/case.repository.js';
import type { Db } from '../db/database.js';
import { ErrorCode, GatewayError } from '../errors.js';
import { latestArbitration, listArbitrations, primaryReportText, secondReportText } from '../reports/arbitration.repository.js';
import type { ArbitrationService } from '../reports/arbitration.service.js';
import { ArbitrationState } from '../reports/arbitration.table.js';
import { presentArbitrationForArbitrator, presentArbitrationForStaff } from '../reports/arbitration.view.js';
import { mount } from './api-schema.js';
import { arbitrationRoutes as spec } from './arbitration.schemas.js';
import type { ArbitratorCaseView } from './cases.schemas.js';
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
    if (p.role === 'reader' && !(a ? a.arbitrator_id === p.readerId : row.reader_id === p.readerId))
      throw new GatewayError(ErrorCode.forbidden, 'this arbitration is not assigned to you');
    if (!a) throw new GatewayError(ErrorCode.notFound, 'this case has no arbitration');
    return { row, a };
  };

  mount(r, spec.listArbitrations, async ({ query: { state, limit }, principal: p }) => {
    if (p.role === 'reader') {
      // A third reader's worklist: their open arbitrations (or the state asked for), blinded.
      const rows = await listArbitrations(db, { arbitratorId: p.readerId!, states: [state ?? ArbitrationState.open], limit });
      const open = rows.filter((a) => state !== undefined || a.case_state === 'arbitration');
      return { status: 200, body: { items: open.map((a) => presentArbitrationForArbitrator(a, a.case_state)) } };
    }
    const rows = await listArbitrations(db, { states: state ? [state] : undefined, limit });
    return { status: 200, body: { items: rows.map((a) => ({ caseId: a.case_id, caseState: a.case_state, ...presentArbitrationForStaff(a, a.case_state) })) } };
  });

  mount(r, spec.getCaseArbitration, async ({ params, principal: p }) => {
    const { row, a } = await forCaller(params.id, p);
    if (p.role === 'reader') {
      // The caller is its third reader (forCaller): presentCasesFor gives them the blinded case.
      const blinded = (await presentCasesFor(db, p, [row]))[0] as ArbitratorCaseView;
      return { status: 200, body: { ...presentArbitrationForArbitrator(a, row.state), case: blinded } };
    }
    return { status: 200, body: { caseId: row.id, caseState: row.state, ...presentArbitrationForStaff(a, row.state) } };
  });

  /**
   * The two reads, as text only (no score, no reader), for the arbitrator to decide between: shown on
   * request and audited, as the first report is to a blinded second reader.
   */
  mount(r, spec.getArbitrationReadings, async ({ params, principal: p }) => {
    const { row, a } = await forCaller(params.id, p);
    if (p.role === 'reader' && a.state !== ArbitrationState.open) throw new GatewayError(ErrorCode.conflict, `the arbitration is ${a.state}`);
    const second = await secondReportText(db, a.report_id);
    // The first report names the patient; a reader who got the study de-identified never sees it (as GET /cases/{id}/primary-report).
    const hidden = p.role === 'reader' && (await readerSeesPseudonyms(db, row));
    const first = hidden ? undefined : await primaryReportText(db, row.study_instance_uid);
    await recordAudit(db, newId(), new Date().toISOString(), {
      actor: p.name,
      action: 'case.arbitration-readings-revealed',
      entityType: 'case',
      entityId: row.id,
      details: { role: p.role },
    });
    return {
      status: 200,
      body: {
        caseId: row.id,
        first: first !== undefined ? { text: first } : null,
        ...(hidden ? { firstWithheld: 'this study was sent to you de-identified; its first report is not shown' } : {}),
        second: second ? { text: second.text, impression: second.impression } : null,
      },
    };
  });

  mount(r, spec.decideCaseArbitration, async ({ params: { id }, body, principal: p }) => {
    // The service's own check (its cross-field rules, shared with its other callers) turns the parsed body into its input.
    const input = arbitration.parse(body);
    const a = await arbitration.decide(id, input, { role: p.role, readerId: p.readerId, name: p.name });
    const row = await findCase(db, id);
    return {
      status: 200,
      body:
        p.role === 'reader'
          ? presentArbitrationForArbitrator(a, row!.state)
          : { caseId: id, caseState: row!.state, ...presentArbitrationForStaff(a, row!.state) },
    };
  });

  mount(r, spec.assignCaseArbitration, async ({ params: { id }, body, principal: p }) => {
    const readerId = body?.readerId || undefined;
    const reason = body?.reason?.trim() || 'assigned by QA';
    const a = await arbitration.assign(id, p.name, readerId, reason);
    const row = await findCase(db, id);
    return { status: 200, body: { caseId: id, caseState: row!.state, ...presentArbitrationForStaff(a, row!.state) } };
  });
  return r;
}
