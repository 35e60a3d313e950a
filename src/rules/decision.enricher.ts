import type { Db } from '../db/database.js';
import { latestCaseOfStudy } from '../cases/case.repository.js';
import { decisionsOfStudies, parseDecisionRow } from './rules.repository.js';

/** Adds `decision` (the latest, with every reason) and `caseId` to the study resource. */
export async function decisionStudyEnricher(db: Db, studyInstanceUid: string): Promise<Record<string, unknown>> {
  // The case first: it commits with its decision, so once a case is read the decision that opened it is there to
  // read too (two reads, two snapshots on PostgreSQL: the other order could show a case without its decision).
  const c = await latestCaseOfStudy(db, studyInstanceUid);
  const last = (await decisionsOfStudies(db, [studyInstanceUid])).at(-1);
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
