import { MppsStatus } from './mpps.table.js';

/** What the modality's performed procedure steps say about one study. */
export interface StepFacts {
  readonly status: MppsStatus;
  /** SOP Instance UIDs of the step's Performed Series Sequence (images and non-image objects). */
  readonly referenced: readonly string[];
}

export const Verdict = {
  /** No MPPS for the study: the quiet period decides, as before. */
  noMpps: 'no-mpps',
  /** A COMPLETED step's every referenced instance is here (and no step is still in progress): stable now. */
  complete: 'complete',
  /** Instances may still come: keep receiving. */
  waiting: 'waiting',
  /** The quiet period is over and a COMPLETED step's instances are missing: hold for a person. */
  incomplete: 'incomplete',
  /** The quiet period is over and no completed step lists missing instances: stable as without MPPS. */
  quiet: 'quiet',
} as const;
export type Verdict = (typeof Verdict)[keyof typeof Verdict];

export interface Completeness {
  verdict: Verdict;
  /** Instances listed by COMPLETED steps. */
  referenced: number;
  /** Of those, how many are here. */
  arrived: number;
  /** Listed by a COMPLETED step and not (yet) here. */
  missing: string[];
  /** Step statuses, in the order given. */
  steps: MppsStatus[];
}

/**
 * Whether a study is complete. The modality's COMPLETED steps list what it produced: once all of that has
 * arrived the study is complete, without waiting for the quiet period; still missing when the quiet period
 * is over, the study would be forwarded short, so it is held instead. A step still IN PROGRESS means more
 * may come, so nothing completes early while one is open; if it never ends, the quiet period still applies.
 * A DISCONTINUED step is recorded, not waited for: what it lists was cut short by the modality, so its
 * missing instances are not a reason to hold. Instances nobody listed (another modality, a secondary
 * capture) never hold a study back.
 */
export function decideCompleteness(steps: readonly StepFacts[], arrived: ReadonlySet<string>, quietElapsed: boolean): Completeness {
  const listed = new Set<string>();
  for (const s of steps) if (s.status === MppsStatus.completed) for (const uid of s.referenced) listed.add(uid);
  const missing = [...listed].filter((uid) => !arrived.has(uid));
  const base = { referenced: listed.size, arrived: listed.size - missing.length, missing, steps: steps.map((s) => s.status) };
  if (steps.length === 0) return { ...base, verdict: quietElapsed ? Verdict.quiet : Verdict.noMpps };
  const completed = steps.some((s) => s.status === MppsStatus.completed);
  const open = steps.some((s) => s.status === MppsStatus.inProgress);
  if (missing.length > 0) return { ...base, verdict: quietElapsed ? Verdict.incomplete : Verdict.waiting };
  // A completed step listing nothing is no evidence of completeness: the quiet period decides.
  if (completed && !open && listed.size > 0) return { ...base, verdict: Verdict.complete };
  return { ...base, verdict: quietElapsed ? Verdict.quiet : Verdict.waiting };
}
