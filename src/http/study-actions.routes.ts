import { Router } from 'express';
import type { Db } from '../db/database.js';
import { seriesOfStudies } from '../studies/study.repository.js';
import type { StudyService } from '../studies/study.service.js';
import { mount } from './api-schema.js';
import { studiesRoutes as spec } from './studies.schemas.js';
import { presentStudy } from './studies.routes.js';

/**
 * QA's decision on a held study (README: Identity conflicts). `release`: the newest copies are accepted
 * and the study goes on; `reject`: the copies that caused the hold are discarded and the study goes on as
 * before them. Both need a reason and are audited; a study that is not held answers 409.
 */
export function studyActionsRouter(db: Db, studies: StudyService): Router {
  const r = Router();
  mount(r, spec.releaseStudy, async ({ params, body, principal }) => {
    const row = await studies.release(params.studyInstanceUid, principal.name, body.reason);
    return { status: 200, body: presentStudy(row, await seriesOfStudies(db, [params.studyInstanceUid])) };
  });
  mount(r, spec.rejectStudy, async ({ params, body, principal }) => {
    const row = await studies.reject(params.studyInstanceUid, principal.name, body.reason);
    return { status: 200, body: presentStudy(row, await seriesOfStudies(db, [params.studyInstanceUid])) };
  });
  return r;
}
