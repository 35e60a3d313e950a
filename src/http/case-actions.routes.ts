import { Router } from 'express';
import { recordAudit } from '../audit/audit.repository.js';
import { caseTimeline } from '../cases/case-timeline.js';
import { findCase } from '../cases/case.repository.js';
import type { Db } from '../db/database.js';
import { ErrorCode, GatewayError } from '../errors.js';
import { presentReport as presentPrimaryReport } from '../hl7/hl7.enricher.js';
import { currentReportVersion, reportVersionsOfStudy } from '../hl7/hl7.repository.js';
import type { ReaderService } from '../readers/reader.service.js';
import type { OutboundService } from '../reports/outbound.service.js';
import { requireRole } from './auth.js';
import { presentCases } from './cases.routes.js';
import { readerSeesPseudonyms } from './reader-view.js';

export interface CaseActionDeps {
  readers: ReaderService;
  outbound: OutboundService;
  newId: () => string;
  clock?: () => Date;
}

function optionalText(body: unknown, key: string, max: number): string | undefined {
  const v = (typeof body === 'object' && body !== null ? (body as Record<string, unknown>)[key] : undefined) as unknown;
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string' || v.length > max) throw new GatewayError(ErrorCode.invalidInput, `${key} must be a string of at most ${max} characters`);
  return v.trim();
}

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

  r.get('/cases/:id/timeline', requireRole('admin', 'qa'), async (req, res) => {
    const row = await findCase(db, String(req.params['id']));
    if (!row) throw new GatewayError(ErrorCode.notFound, 'no such case');
    const events = await caseTimeline(db, row);
    // Opening a case page is a PHI view.
    await audit(req.principal!.name, 'case.viewed', row.id, { role: req.principal!.role });
    res.json({ caseId: row.id, items: events });
  });

  r.get('/cases/:id/primary-report', requireRole('admin', 'qa', 'reader'), async (req, res) => {
    const p = req.principal!;
    const row = await findCase(db, String(req.params['id']));
    if (!row) throw new GatewayError(ErrorCode.notFound, 'no such case');
    if (p.role === 'reader') {
      if (row.reader_id !== p.readerId) throw new GatewayError(ErrorCode.forbidden, 'this case is not assigned to you');
      // Blinded until the reader has given their own read.
      const own = await db.selectFrom('second_reports').select('id').where('case_id', '=', row.id).where('reader_id', '=', p.readerId!).executeTakeFirst();
      if (row.blinded === 1 && !own) throw new GatewayError(ErrorCode.forbidden, 'the case is blinded: the first report is shown after your second report');
      // The first report names the patient and the accession; a reader who got the study de-identified never sees it.
      if (await readerSeesPseudonyms(db, row)) throw new GatewayError(ErrorCode.forbidden, 'this study was sent to you de-identified; its first report is not shown');
    }
    const current = currentReportVersion(await reportVersionsOfStudy(db, row.study_instance_uid));
    if (!current) throw new GatewayError(ErrorCode.notFound, 'no primary report is linked to this study');
    await audit(p.name, 'case.primary-report-revealed', row.id, { role: p.role, blinded: row.blinded === 1 });
    const report = presentPrimaryReport(current);
    // Peer review is anonymous towards the second reader.
    if (p.role === 'reader') {
      delete report['radiologistId'];
      delete report['radiologistName'];
    }
    res.json({ caseId: row.id, blinded: row.blinded === 1, report });
  });

  r.post('/cases/:id/reassign', requireRole('admin', 'qa'), async (req, res) => {
    const id = String(req.params['id']);
    const readerId = optionalText(req.body, 'readerId', 128);
    const reason = optionalText(req.body, 'reason', 2000) ?? 'reassigned by QA';
    for (const k of Object.keys((req.body as Record<string, unknown> | undefined) ?? {})) {
      if (!['readerId', 'reason'].includes(k)) throw new GatewayError(ErrorCode.invalidInput, `unknown field "${k}"`);
    }
    const result = await readers.reassign(id, req.principal!.name, { readerId, reason });
    const row = await findCase(db, id);
    res.json({ ...result, case: (await presentCases(db, [row!]))[0] });
  });

  r.post('/cases/:id/retry-write-back', requireRole('admin', 'qa'), async (req, res) => {
    const id = String(req.params['id']);
    if (!(await findCase(db, id))) throw new GatewayError(ErrorCode.notFound, 'no such case');
    const result = await outbound.retryWriteBack(id, req.principal!.name);
    const row = await findCase(db, id);
    res.json({ ...result, case: (await presentCases(db, [row!]))[0] });
  });
  return r;
}
