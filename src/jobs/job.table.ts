import type { Selectable } from 'kysely';

/** pending: waits for `run_at`; running: claimed until `locked_until`; dead: out of attempts or refused for good. Completed jobs are deleted. */
export type JobState = 'pending' | 'running' | 'dead';

export interface JobTable {
  id: string;
  kind: string;
  key: string | null;
  /** `key` while unfinished, null when dead: the unique (kind, active_key) index de-duplicates unfinished jobs only. */
  active_key: string | null;
  queue: string | null;
  /** JSON. */
  payload: string;
  state: JobState;
  run_at: string;
  attempts: number;
  max_attempts: number;
  locked_by: string | null;
  /** Fresh per claim: completion and every fenced write match it, so a worker that lost its claim cannot write. */
  lock_token: string | null;
  locked_until: string | null;
  last_error: string | null;
  created_at: string;
  updated_at: string;
}

export type JobRow = Selectable<JobTable>;

/**
 * Every column, named: the claim returns these rather than `*`, so that its text can be a named statement on
 * PostgreSQL (db/pg-named-statements.ts names no `*` text). `satisfies` fails the build when a column is missing here.
 */
export const JOB_COLUMNS = Object.keys({
  id: true,
  kind: true,
  key: true,
  active_key: true,
  queue: true,
  payload: true,
  state: true,
  run_at: true,
  attempts: true,
  max_attempts: true,
  locked_by: true,
  lock_token: true,
  locked_until: true,
  last_error: true,
  created_at: true,
  updated_at: true,
} satisfies Record<keyof JobTable, true>) as (keyof JobTable)[];
