import type { Db } from '../db/database.js';
import { ErrorCode, GatewayError } from '../errors.js';
import { PRIORITIES, type Priority } from '../rules/rule.types.js';
import type { DecisionService } from '../rules/decision.service.js';
import { EvaluationTrigger } from '../states.js';
import { findCase, findOpenCase, insertManualRequest, linkManualRequest, receivedStudyUid, receivedStudyUidsByAccession } from './case.repository.js';
import type { CaseRow } from './case.table.js';

export interface ManualRequest {
  studyInstanceUid?: string;
  accessionNumber?: string;
  reason: string;
  destinationId?: string;
  priority?: Priority;
}

export interface CaseServiceOptions {
  db: Db;
  decisions: DecisionService;
  knownDestinations: readonly string[];
  newId: () => string;
  clock?: () => Date;
}

/** Manual second-read requests (POST /api/cases); the rest of the case life cycle comes with forwarding and readers. */
export class CaseService {
  private readonly clock: () => Date;

  constructor(private readonly o: CaseServiceOptions) {
    this.clock = o.clock ?? (() => new Date());
  }

  /** Ids for audit events written by routes on this service's behalf. */
  newAuditId(): string {
    return this.o.newId();
  }

  /** Validates a request body into a ManualRequest, listing every problem. */
  parseManualRequest(body: unknown): ManualRequest {
    const b = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>;
    const errors: { path: string; message: string }[] = [];
    const str = (k: string, max: number): string | undefined => {
      const v = b[k];
      if (v === undefined || v === null) return undefined;
      if (typeof v !== 'string' || v.trim() === '' || v.length > max) {
        errors.push({ path: k, message: `must be a non-empty string of at most ${max} characters` });
        return undefined;
      }
      return v.trim();
    };
    const known = new Set(['studyInstanceUid', 'accessionNumber', 'reason', 'destinationId', 'priority']);
    for (const k of Object.keys(b)) if (!known.has(k)) errors.push({ path: k, message: 'unknown field' });
    const req: ManualRequest = {
      studyInstanceUid: str('studyInstanceUid', 64),
      accessionNumber: str('accessionNumber', 64),
      reason: str('reason', 2000) ?? '',
      destinationId: str('destinationId', 128),
    };
    if (!req.studyInstanceUid && !req.accessionNumber) errors.push({ path: 'studyInstanceUid', message: 'give studyInstanceUid or accessionNumber' });
    if (!req.reason && !errors.some((e) => e.path === 'reason')) errors.push({ path: 'reason', message: 'required' });
    if (req.destinationId && !this.o.knownDestinations.includes(req.destinationId))
      errors.push({ path: 'destinationId', message: `unknown destination "${req.destinationId}"` });
    if (b['priority'] !== undefined) {
      if (typeof b['priority'] === 'string' && (PRIORITIES as readonly string[]).includes(b['priority'])) req.priority = b['priority'] as Priority;
      else errors.push({ path: 'priority', message: `must be one of ${PRIORITIES.join(', ')}` });
    }
    if (errors.length > 0) throw new GatewayError(ErrorCode.invalidInput, 'invalid manual request', { details: { errors } });
    return req;
  }

  /**
   * Records the request and evaluates the study with it: the result is a new
   * case, or the study's open case with this reason added.
   */
  async requestManual(req: ManualRequest, requestedBy: string): Promise<{ case: CaseRow; created: boolean }> {
    const uid = await this.resolveStudy(req);
    // Created means: no open case when the request came. Another evaluation of the study (it just became
    // stable, an HL7 result linked) may pick this request up and open the case before ours runs.
    const openBefore = await findOpenCase(this.o.db, uid);
    const requestId = this.o.newId();
    await insertManualRequest(this.o.db, {
      id: requestId,
      study_instance_uid: uid,
      reason: req.reason,
      requested_by: requestedBy,
      priority: req.priority ?? null,
      destination_id: req.destinationId ?? null,
      case_id: null,
      created_at: this.clock().toISOString(),
    });
    const outcome = await this.o.decisions.evaluateStudy(uid, EvaluationTrigger.manual, requestedBy);
    if (!outcome?.caseId) throw new GatewayError(ErrorCode.internal, 'manual request did not open a case');
    await linkManualRequest(this.o.db, requestId, outcome.caseId);
    const row = await findCase(this.o.db, outcome.caseId);
    if (!row) throw new GatewayError(ErrorCode.internal, 'case vanished');
    return { case: row, created: !openBefore };
  }

  private async resolveStudy(req: ManualRequest): Promise<string> {
    if (req.studyInstanceUid) {
      const uid = await receivedStudyUid(this.o.db, req.studyInstanceUid);
      if (!uid) throw new GatewayError(ErrorCode.notFound, 'no study with that StudyInstanceUID has been received');
      return uid;
    }
    const rows = await receivedStudyUidsByAccession(this.o.db, req.accessionNumber!, 2);
    if (rows.length === 0) throw new GatewayError(ErrorCode.notFound, 'no study with that accession number has been received');
    if (rows.length > 1) throw new GatewayError(ErrorCode.conflict, 'several studies share that accession number: give studyInstanceUid');
    return rows[0]!;
  }
}
