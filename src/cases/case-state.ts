import { recordAudit } from '../audit/audit.repository.js';
import type { Db } from '../db/database.js';
import { ErrorCode, GatewayError } from '../errors.js';
import { CaseState } from '../states.js';
import { endCaseWork } from './case-end.repository.js';
import { caseState, compareAndSetState } from './case.repository.js';

/**
 * The case life cycle, in one place. Every change goes through
 * `transitionCase`, which refuses a move not listed here and writes the audit
 * event in the same transaction as the change.
 *
 *   flagged -> forwarding -> awaiting-read -> reported -> written-back
 *   any open state -> held (needs review) -> back to where it can resume
 *   forwarding -> failed (delivery dead-lettered) -> forwarding (retry)
 *   reported -> failed (write-back refused) -> reported (retry)
 *   written-back -> reported (an addendum, written back in turn)
 *   reported -> arbitration (a discrepant read a rule sends to a third reader) -> reported (the verdict; written back)
 *   any open state -> cancelled
 *
 * A move to `cancelled` also stops the case's work in the same transaction
 * (case-end.repository.ts), whoever cancels (API, console, an ORC-1 CA/DC/OC
 * from the RIS): nothing of it is sent once the cancel commits but the one
 * instance or message already on the wire.
 */
export const CASE_TRANSITIONS: Readonly<Record<CaseState, readonly CaseState[]>> = {
  [CaseState.flagged]: [CaseState.forwarding, CaseState.held, CaseState.cancelled],
  [CaseState.forwarding]: [CaseState.awaitingRead, CaseState.held, CaseState.failed, CaseState.cancelled],
  [CaseState.awaitingRead]: [CaseState.reported, CaseState.forwarding, CaseState.held, CaseState.failed, CaseState.cancelled],
  [CaseState.reported]: [CaseState.writtenBack, CaseState.arbitration, CaseState.failed, CaseState.cancelled],
  // The verdict closes the discrepancy; the write-back that waited for it is queued in the same transaction.
  [CaseState.arbitration]: [CaseState.reported, CaseState.cancelled],
  [CaseState.held]: [CaseState.flagged, CaseState.forwarding, CaseState.cancelled],
  [CaseState.failed]: [CaseState.forwarding, CaseState.reported, CaseState.cancelled],
  // An addendum re-opens the loop: it is written back as a new version.
  [CaseState.writtenBack]: [CaseState.reported],
  [CaseState.cancelled]: [],
};

export function canTransition(from: CaseState, to: CaseState): boolean {
  return CASE_TRANSITIONS[from].includes(to);
}

/**
 * Moves a case from one of `from` to `to`; the row is only changed when it is
 * still in an expected state (compare-and-set), so two workers cannot both move it.
 * Returns false when the case had already moved on (nothing written).
 */
export async function transitionCase(
  db: Db,
  o: { caseId: string; from: readonly CaseState[]; to: CaseState; actor: string; now: string; auditId: string; details?: Record<string, unknown> },
): Promise<boolean> {
  for (const f of o.from) {
    if (!canTransition(f, o.to)) throw new GatewayError(ErrorCode.conflict, `a case cannot go from ${f} to ${o.to}`);
  }
  const state = await caseState(db, o.caseId);
  if (!state) throw new GatewayError(ErrorCode.notFound, 'no such case');
  if (!o.from.includes(state)) return false;
  if (!(await compareAndSetState(db, o.caseId, state, o.to, o.now))) return false;
  const ended = o.to === CaseState.cancelled ? await endCaseWork(db, o.caseId, o.now, `case cancelled by ${o.actor}`) : undefined;
  await recordAudit(db, o.auditId, o.now, {
    actor: o.actor,
    action: `case.${o.to}`,
    entityType: 'case',
    entityId: o.caseId,
    details: { from: state, ...o.details, ...(ended ? { stopped: ended } : {}) },
  });
  return true;
}
