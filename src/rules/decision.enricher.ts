import type { Db } from '../db/database.js';
import { latestCaseOfStudy } from '../cases/case.repository.js';
import { decisionsOfStudies, parseDecisionRow } from './rules.repository.js';

/** Adds `decision` (the latest, with every reason) and `caseId` to the study resource. */
export async function decisionStudyEnricher(db: Db, studyInstanceUid: string): Promise<Record<string, unknown>> {
  const last = (await decisionsOfStudies(db, [studyInstanceUid])).at(-1);
  const c = await latestCaseOfStudy(db, studyInstanceUid);
  const parsed = last ? parseDecisionRow(last) : undefined;
  return {
    decision: last
      ? {
          flagged: parsed!.flagged,
          reasons: parsed!.reasons,
          priority: last.priority,
          basis: last.basis,
          trigger: last.trigger,
          ruleSetVersion: last.rule_set_version,
          evaluatedAt: last.evaluated_at,
        }
      : null,
    caseId: c?.id ?? null,
  };
}
