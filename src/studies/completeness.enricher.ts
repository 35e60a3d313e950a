import type { Db } from '../db/database.js';
import { StudyState } from '../states.js';
import { decideCompleteness } from './completeness.js';
import { completenessInputs } from './mpps.repository.js';
import { findStudy } from './study.repository.js';

/**
 * Adds `completeness` to the study resource: the modality's performed procedure steps (MPPS) and how many
 * of the instances they list have arrived. `null` without MPPS (the quiet period alone decides).
 */
export async function completenessStudyEnricher(db: Db, studyInstanceUid: string): Promise<Record<string, unknown>> {
  const { steps, arrived } = await completenessInputs(db, studyInstanceUid);
  if (steps.length === 0) return { completeness: null };
  const study = await findStudy(db, studyInstanceUid);
  const c = decideCompleteness(steps, arrived, study !== undefined && study.state !== StudyState.receiving);
  return {
    completeness: {
      verdict: c.verdict,
      referenced: c.referenced,
      arrived: c.arrived,
      missing: c.missing.length,
      mpps: steps.map((s) => ({ sopInstanceUid: s.sopInstanceUid, status: s.status, referenced: s.referenced.length })),
    },
  };
}
