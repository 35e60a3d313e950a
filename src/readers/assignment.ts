import type { ReaderConfig } from '../config/schema.js';

export interface ReaderLoad extends ReaderConfig {
  /** Cases assigned to the reader and not yet reported. */
  openCases: number;
}

export interface AssignmentRequest {
  modalities: readonly string[];
  /** A rule's reader group, read as a subspecialty the reader must have (e.g. `oncology`, `neuro`). */
  subspecialty?: string | null;
  /** OBR-32 of the primary report: never the second reader. */
  firstReaderId?: string | null;
  avoidSameGroup: boolean;
  /** Readers who declined the case or already had it (reassignment). */
  exclude: readonly string[];
  /** Arbitration: the second reader too is never chosen, nor (avoidSameGroup) anyone of their group. */
  secondReaderId?: string | null;
}

export type AssignmentResult = { ok: true; readerId: string; why: string } | { ok: false; reason: string };

/**
 * Picks the second reader, purely: available; not the first reader; not of
 * the first reader's group when asked; reads one of the study's modalities;
 * has the subspecialty; below capacity; then the least loaded (by open cases,
 * then by share of capacity, then by id so the choice is reproducible).
 * When nobody fits, says which condition emptied the list.
 */
export function chooseReader(readers: readonly ReaderLoad[], req: AssignmentRequest): AssignmentResult {
  const upper = (xs: readonly string[]) => xs.map((x) => x.toUpperCase());
  const modalities = upper(req.modalities);
  const earlier = [req.firstReaderId, req.secondReaderId].filter((id): id is string => !!id);
  const earlierGroups = earlier.map((id) => readers.find((r) => r.id === id)?.group).filter((g): g is string => !!g);
  const steps: [string, (r: ReaderLoad) => boolean][] = [
    ['no reader is available', (r) => r.available],
    [
      req.secondReaderId
        ? 'only the first or second reader or readers who already had the case are left'
        : 'only the first reader or readers who already had the case are left',
      (r) => !earlier.includes(r.id) && !req.exclude.includes(r.id),
    ],
    [
      req.secondReaderId ? "no reader outside the first and second readers' groups" : "no reader outside the first reader's group",
      (r) => !req.avoidSameGroup || !r.group || !earlierGroups.includes(r.group),
    ],
    [`no reader reads ${modalities.join('/') || 'this modality'}`, (r) => r.modalities.length === 0 || upper(r.modalities).some((m) => modalities.includes(m))],
    [`no reader has the subspecialty ${req.subspecialty ?? ''}`, (r) => !req.subspecialty || upper(r.subspecialties).includes(req.subspecialty.toUpperCase())],
    ['every eligible reader is at capacity', (r) => r.openCases < r.maxOpenCases],
  ];
  let pool = [...readers];
  for (const [reason, keep] of steps) {
    pool = pool.filter(keep);
    if (pool.length === 0) return { ok: false, reason };
  }
  pool.sort((a, b) => a.openCases - b.openCases || a.openCases / a.maxOpenCases - b.openCases / b.maxOpenCases || a.id.localeCompare(b.id));
  const chosen = pool[0]!;
  return { ok: true, readerId: chosen.id, why: `least loaded eligible reader (${chosen.openCases} open of ${chosen.maxOpenCases})` };
}
