import type { CaseState } from '../states.js';
import { ArbitrationState, type ArbitrationVerdict, type CaseArbitrationRow } from './arbitration.table.js';

type Json = Record<string, unknown>;

export interface ArbitrationStaffView {
  id: string;
  state: ArbitrationState;
  arbitratorId: string | null;
  unassignedReason: string | null;
  triggerScore: string;
  ruleIds: string[];
  readerGroup: string | null;
  verdict: ArbitrationVerdict | null;
  finalScore: string | null;
  text: string | null;
  decidedBy: string | null;
  createdAt: string;
  decidedAt: string | null;
}

export interface ArbitrationArbitratorView {
  id: string;
  caseId: string;
  state: ArbitrationState;
  arbitratorId: string | null;
  createdAt: string;
  verdict?: ArbitrationVerdict | null;
  finalScore?: string | null;
  text?: string | null;
  decidedAt?: string | null;
}

/** The arbitration's state as shown: an open one whose case was cancelled is `cancelled`. */
function shownState(a: CaseArbitrationRow, caseState: CaseState | string): ArbitrationState {
  return caseState === 'cancelled' && a.state !== ArbitrationState.done ? ArbitrationState.cancelled : a.state;
}

/** Admin, QA and system: everything, with the second read's score that asked for it. */
export function presentArbitrationForStaff(a: CaseArbitrationRow, caseState: CaseState | string): ArbitrationStaffView {
  return {
    id: a.id,
    state: shownState(a, caseState),
    arbitratorId: a.arbitrator_id,
    unassignedReason: a.unassigned_reason,
    triggerScore: a.trigger_score,
    ruleIds: JSON.parse(a.rule_ids) as string[],
    readerGroup: a.reader_group,
    verdict: a.verdict,
    finalScore: a.final_score,
    text: a.text,
    decidedBy: a.decided_by,
    createdAt: a.created_at,
    decidedAt: a.decided_at,
  };
}

/**
 * The third reader: blinded to both earlier reads. No score that asked for arbitration, no rule, no
 * reader of either read; their own verdict once given.
 */
export function presentArbitrationForArbitrator(a: CaseArbitrationRow, caseState: CaseState | string): ArbitrationArbitratorView {
  return {
    id: a.id,
    caseId: a.case_id,
    state: shownState(a, caseState),
    arbitratorId: a.arbitrator_id,
    createdAt: a.created_at,
    ...(a.state === ArbitrationState.done ? { verdict: a.verdict, finalScore: a.final_score, text: a.text, decidedAt: a.decided_at } : {}),
  };
}

/** The case fields a blinded third reader sees: what identifies the study to read, and the case's progress. Nothing of either read. */
const ARBITRATOR_CASE_FIELDS = [
  'id',
  'studyInstanceUid',
  'accessionNumber',
  'patientId',
  'deidentified',
  'state',
  'priority',
  'dueAt',
  'destinationId',
  'deliveries',
  'createdAt',
  'updatedAt',
];

export function blindCaseForArbitrator(view: Json, a: CaseArbitrationRow): Json {
  const out: Json = {};
  for (const k of ARBITRATOR_CASE_FIELDS) if (k in view) out[k] = view[k];
  out['arbitration'] = presentArbitrationForArbitrator(a, String(view['state']));
  return out;
}
