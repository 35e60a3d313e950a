import { Router } from 'express';
import { canTransition, transitionCase } from '../cases/case-state.js';
import { findCase, listCases } from '../cases/case.repository.js';
import type { CaseService } from '../cases/case.service.js';
import type { Db } from '../db/database.js';
import { ErrorCode, GatewayError } from '../errors.js';
import type { ForwardingService } from '../forwarding/forwarding.service.js';
import { listDeliveries } from '../forwarding/outbox.repository.js';
import type { ReaderService } from '../readers/reader.service.js';
import type { SecondReportService } from '../reports/second-report.service.js';
import { CaseState } from '../states.js';
import { mount } from './api-schema.js';
import { presentCases, presentDelivery, presentReport } from './case.presenter.js';
import { casesRoutes as spec, type CaseView } from './cases.schemas.js';
import { presentCasesFor } from './reader-view.js';
import { latestArbitration } from '../reports/arbitration.repository.js';

export interface CaseRouteDeps {
  cases: CaseService;
  forwarding: ForwardingService;
  reports: SecondReportService;
  readers: ReaderService;
}

export function casesRouter(db: Db, deps: CaseRouteDeps): Router {
  const { cases, forwarding, reports, readers } = deps;
  const r = Router();
  /** The case after an action, as admin/QA/system see it. */
  const caseNow = async (id: string) => (await presentCases(db, [(await findCase(db, id))!]))[0]!;

  mount(r, spec.listCases, async ({ query, principal: p }) => {
    const rows = await listCases(db, {
      ...query,
      // A reader sees only the cases assigned to them, whatever filter they ask for.
      readerId: p.role === 'reader' ? p.readerId : query.readerId,
    });
    return { status: 200, body: { items: await presentCasesFor(db, p, rows) } };
  });

  mount(r, spec.getCase, async ({ params, principal: p }) => {
    const row = await findCase(db, params.id);
    if (!row) throw new GatewayError(ErrorCode.notFound, 'no such case');
    if (p.role === 'reader' && row.reader_id !== p.readerId && (await latestArbitration(db, row.id))?.arbitrator_id !== p.readerId) {
      throw new GatewayError(ErrorCode.forbidden, 'this case is not assigned to you');
    }
    return { status: 200, body: (await presentCasesFor(db, p, [row]))[0]! };
  });

  mount(r, spec.submitSecondReport, async ({ params, body, principal: p }) => {
    // The service's own check (shared with the HL7 path) turns the parsed body into its input.
    const input = reports.parse(body);
    const report = await reports.submit(params.id, input, { role: p.role, readerId: p.readerId, name: p.name }, 'api');
    const row = await findCase(db, params.id);
    // The submitter is the case's second reader (or a system token), never its blinded third reader: the full Case.
    return { status: 201, body: { report: presentReport(report), case: (await presentCasesFor(db, p, [row!]))[0] as CaseView } };
  });

  mount(r, spec.declineCase, async ({ params, body, principal: p }) => {
    const why = typeof body?.reason === 'string' ? body.reason : 'declined';
    return { status: 200, body: await readers.decline(params.id, p.readerId!, p.name, why) };
  });

  // Stops deliveries, deltas and write-backs in the cancel's own transaction (case-state.ts); the pool is told by the outbound worker.
  mount(r, spec.cancelCase, async ({ params, body, principal: p }) => {
    const reason = body?.reason?.trim() || undefined;
    if (!(await findCase(db, params.id))) throw new GatewayError(ErrorCode.notFound, 'no such case');
    const now = new Date().toISOString();
    const moved = await db.transaction().execute((trx) =>
      transitionCase(trx, {
        caseId: params.id,
        from: CANCELLABLE,
        to: CaseState.cancelled,
        actor: p.name,
        now,
        auditId: cases.newAuditId(),
        details: reason ? { reason } : {},
      }),
    );
    if (!moved) throw new GatewayError(ErrorCode.conflict, 'the case is no longer open');
    reports.kickOutbound();
    return { status: 200, body: await caseNow(params.id) };
  });

  mount(r, spec.retryCase, async ({ params, principal: p }) => {
    await forwarding.retryCase(params.id, p.name);
    return { status: 200, body: await caseNow(params.id) };
  });

  mount(r, spec.releaseExcludedInstance, async ({ params, body, principal: p }) => {
    await forwarding.releaseExcluded(params.id, params.sopInstanceUid, p.name, body?.reason?.trim() || null);
    return { status: 200, body: await caseNow(params.id) };
  });

  mount(r, spec.listDeliveries, async ({ query }) => {
    const rows = await listDeliveries(db, query);
    return { status: 200, body: { items: rows.map((d) => ({ caseId: d.case_id, studyInstanceUid: d.study_instance_uid, ...presentDelivery(d) })) } };
  });

  mount(r, spec.requestCase, async ({ body, principal: p }) => {
    // The service checks what the schema cannot: that the destination is configured.
    const request = cases.parseManualRequest(body);
    // A case it opens enqueues its own planning job (DecisionService.onCaseOpened).
    const { case: row, created } = await cases.requestManual(request, p.name);
    const [view] = await presentCases(db, [row]);
    return created ? { status: 201, body: view! } : { status: 200, body: view! };
  });
  return r;
}

/** Every state a case can be cancelled from: the open ones, and failed (a stuck case is ended too). */
const CANCELLABLE: readonly CaseState[] = Object.values(CaseState).filter((st) => canTransition(st, CaseState.cancelled));
