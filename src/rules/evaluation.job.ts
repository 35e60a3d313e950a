import type { Db } from '../db/database.js';
import type { JobQueue } from '../jobs/job.types.js';
import type { EvaluationTrigger } from '../states.js';

/** The job kind under which the rules run for a study. */
export const EVALUATE_JOB = 'rules.evaluate';

export interface EvaluationJobPayload {
  studyUid: string;
  trigger: EvaluationTrigger;
}

/**
 * Asks for the rules to run on a study, in the transaction of the change that
 * calls for it (the study became stable, an order/report/AI result linked): the
 * evaluation exists if and only if that change commits, and runs until it
 * succeeds. One study's evaluations run one at a time, in order (its queue),
 * across instances; each is cheap to repeat (the same verdict records nothing).
 */
export async function enqueueEvaluation(jobs: JobQueue, trx: Db, studyUid: string, trigger: EvaluationTrigger): Promise<void> {
  const payload: EvaluationJobPayload = { studyUid, trigger };
  await jobs.enqueue(trx, EVALUATE_JOB, payload, { queue: `study:${studyUid}` });
}
