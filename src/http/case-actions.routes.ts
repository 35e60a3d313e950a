import { Router } from 'express';
import { recordAudit } from '../audit/audit.repository.js';
import { caseTimeline } from '../cases/case-timeline.js';
import { hasSecondReportBy } from '../cases/case-view.repository.js';
import { findCase } from '../cases/case.repository.js';
import type { Db } from '../db/database.js';
import { ErrorCode, GatewayError } from '../errors.js';
import { presentReport as presentPrimaryReport } from '../hl7/hl7.enricher.js';
import { currentReportVersion, reportVersionsOfStudy } from '../hl7/hl7.repository.js';
import type { ReaderService } from '../readers/reader.service.js';
import type { OutboundService } from '../reports/outbound.service.js';
import { mount } from './api-schema.js';
import { presentCases } from './case.presenter.js';
import { casesRoutes as spec, type CaseView } from './cases.schemas.js';
import { readerSeesPseudonyms } from './reader-view.js';
import type { PrimaryReportView } from './studies.schemas.js';

export interface CaseActionDeps {
  readers: ReaderService;
  outbound: OutboundService;
  newId: () => string;
  clock?: () => Date;
}

/** '' and null mean "not given"; a given text is trimmed. */
const given = (v: string | null | undefined): string | undefined => (v?.trim() ? v.trim() : undefined);

/**
 * The console's case page: the timeline, the primary report on request
 * (a PHI view, audited; refused to a reader while the case is blinded),
 * reassignment and a write-back retry.
 */
export function caseActionsRouter(db: Db, deps: CaseActionDeps): Router {
  const { readers, outbound, newId } = deps;
  const clock = deps.clock ?? (() => new Date());
  const r = Router();
  const audit = (actor: string, action: string, caseId: string, details?: Record<string, unknown>) =>
    recordAudit(db, newId(), clock().toISOString(), { actor, action, entityType: 'case', entityId: caseId, details });
  const caseNow = async (id: string): Promise<CaseView> => (await presentCases(db, [(await findCase(db, id))!]))[0]!;

  mount(r, spec.getCaseTimeline, async ({ params, principal: p }) => {
    const row = await findCase(db, params.id);
    if (!row) throw new GatewayError(ErrorCode.notFound, 'no such case');
    const events = await caseTimeline(db, row);
    // Opening a case page is a PHI view.
    await audit(p.name, 'case.viewed', row.id, { role: p.role });
    return { status: 200, body: { caseId: row.id, items: events } };
  });

  mount(r, spec.getCasePrimaryReport, async ({ params, principal: p }) => {
    const row = await findCase(db, params.id);
    if (!row) throw new GatewayError(ErrorCode.notFound, 'no such case');
    if (p.role === 'reader') {
      if (row.reader_id !== p.readerId) throw new GatewayError(ErrorCode.forbidden, 'this case is not assigned to you');
      // Blinded until the reader has given their own read.
      if (row.blinded === 1 && !(await hasSecondReportBy(db, row.id, p.readerId!))) {
        throw new GatewayError(ErrorCode.forbidden, 'the case is blinded: the first report is shown after your second report');
      }
      // The first report names the patient and the accession; a reader who got the study de-identified never sees it.
      if (await readerSeesPseudonyms(db, row))
        throw new GatewayError(ErrorCode.forbidden, 'this study was sent to you de-identified; its first report is not shown');
    }
    const current = currentReportVersion(await reportVersionsOfStudy(db, row.study_instance_uid));
    if (!current) throw new GatewayError(ErrorCode.notFound, 'no primary report is linked to this study');
    await audit(p.name, 'case.primary-report-revealed', row.id, { role: p.role, blinded: row.blinded === 1 });
    // hl7.enricher's presenter is untyped (Record<string, unknown>); its shape is the PrimaryReport schema.
    const report: Partial<PrimaryReportView> = { ...(presentPrimaryReport(current) as PrimaryReportView) };
    // Peer review is anonymous towards the second reader.
    if (p.role === 'reader') {
      delete report.radiologistId;
      delete report.radiologistName;
    }
    return { status: 200, body: { caseId: row.id, blinded: row.blinded === 1, report: report as PrimaryReportView } };
  });

  mount(r, spec.reassignCase, async ({ params, body, principal: p }) => {
    const result = await readers.reassign(params.id, p.name, { readerId: given(body?.readerId), reason: given(body?.reason) ?? 'reassigned by QA' });
    return { status: 200, body: { ...result, case: await caseNow(params.id) } };
  });

  mount(r, spec.retryCaseWriteBack, async ({ params, principal: p }) => {
    if (!(await findCase(db, params.id))) throw new GatewayError(ErrorCode.notFound, 'no such case');
    const result = await outbound.retryWriteBack(params.id, p.name);
    return { status: 200, body: { ...result, case: await caseNow(params.id) } };
  });
  return r;
}
