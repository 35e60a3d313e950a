import { Router } from 'express';
import type { Db } from '../db/database.js';
import { ErrorCode, GatewayError } from '../errors.js';
import { seriesOfStudies } from '../studies/study.repository.js';
import type { StudyService } from '../studies/study.service.js';
import { requireRole } from './auth.js';
import { presentStudy } from './studies.routes.js';

function reasonOf(body: unknown): string {
  const reason = (typeof body === 'object' && body !== null ? (body as Record<string, unknown>)['reason'] : undefined) as unknown;
  if (typeof reason !== 'string' || reason.trim() === '' || reason.length > 2000) {
    throw new GatewayError(ErrorCode.invalidInput, 'reason is required (a non-empty string of at most 2000 characters)');
  }
  return reason.trim();
}

/**
 * QA's decision on a held study (README: Identity conflicts). `release`: the newest copies are accepted
 * and the study goes on; `reject`: the copies that caused the hold are discarded and the study goes on as
 * before them. Both need a reason and are audited; a study that is not held answers 409.
 */
export function studyActionsRouter(db: Db, studies: StudyService): Router {
  const r = Router();
  const canDecide = requireRole('admin', 'qa');
  for (const action of ['release', 'reject'] as const) {
    r.post(`/studies/:uid/${action}`, canDecide, async (req, res) => {
      const uid = String(req.params['uid']);
      const reason = reasonOf(req.body);
      const actor = req.principal!.name;
      const row = action === 'release' ? await studies.release(uid, actor, reason) : await studies.reject(uid, actor, reason);
      res.json(presentStudy(row, await seriesOfStudies(db, [uid])));
    });
  }
  return r;
}
