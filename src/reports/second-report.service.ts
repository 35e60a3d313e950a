import { recordAudit } from '../audit/audit.repository.js';
import { transitionCase } from '../cases/case-state.js';
import type { GatewayConfig } from '../config/schema.js';
import type { Db } from '../db/database.js';
import { ErrorCode, GatewayError } from '../errors.js';
import type { Logger } from '../logger.js';
import { CaseState, OutboundKind } from '../states.js';
import { buildSecondReportOru, concordanceOf, radpeerScores, type RadpeerScore } from './oru-builder.js';
import type { OutboundService } from './outbound.service.js';
import type { SecondReportRow } from './report.table.js';
import type { CaseRow } from '../cases/case.table.js';
import { PseudonymKind, resolvePseudonym } from '../forwarding/pseudonym.service.js';
import type { PatientRef, SecondReportItem } from '../hl7/hl7-parse.js';
import { samePatient, survivingPatientId } from '../studies/reconcile.js';
import { keyImagesProblem } from '../outputs/outputs.service.js';
import { arbitrationOf } from './arbitration.service.js';
import { findCase, latestUncancelledCaseId, markCaseDiscrepant } from '../cases/case.repository.js';
import { endOpenAssignments } from '../readers/reader.repository.js';
import {
  failWriteBack,
  findSecondReport,
  hasSecondReport,
  insertSecondReport,
  latestSecondReportVersion,
  primaryReportOf,
  studyPatientByUid,
  studyPatientsByAccession,
} from './second-report.repository.js';

/** Opens an arbitration when the case's rules ask for one at the report's score (reports/arbitration.service.ts); true: the write-back waits for the verdict. */
export type ArbitrationStarter = (trx: Db, c: CaseRow, report: SecondReportRow, actor: string, now: string) => Promise<boolean>;

/** RADPEER 2b, 3a, 3b: a discrepancy likely to matter, reviewed by QA (DESIGN.md section 2). */
export const DISCREPANT_SCORES: readonly RadpeerScore[] = ['2b', '3a', '3b'];

export interface SecondReportInput {
  text: string;
  radpeerScore: RadpeerScore;
  readerId?: string;
  impression?: string;
  findings?: string;
  addendum?: boolean;
  /** SOP Instance UIDs of the study the reader marked: sent as a Key Object Selection (src/outputs). */
  keyImages?: string[];
}

export interface Submitter {
  role: string;
  readerId?: string;
  name: string;
}

export interface SecondReportServiceOptions {
  db: Db;
  logger: Logger;
  config: Pick<GatewayConfig, 'hl7' | 'writeBack' | 'readers' | 'destinations'>;
  outbound: OutboundService;
  newId: () => string;
  newControlId: () => string;
  clock?: () => Date;
  /** Checks and keeps the key images and enqueues the outputs (SR, KOS, FHIR) in the report's transaction. */
  outputs?: { onReportStored(trx: Db, c: CaseRow, report: SecondReportRow, keyImages: readonly string[]): Promise<void> };
}

const FIRST_REPORT_STATES: readonly CaseState[] = [CaseState.awaitingRead];
const ADDENDUM_STATES: readonly CaseState[] = [CaseState.reported, CaseState.writtenBack, CaseState.failed];

/**
 * Takes the second report (HTTP from a reader or the pool's system, or HL7
 * from the pool), stores it as a new version, marks discrepant reads, and
 * queues the ORU^R01 write-back and the QA notification in the same transaction.
 */
export class SecondReportService {
  private readonly log: Logger;
  private readonly clock: () => Date;
  private startArbitration: ArbitrationStarter = async () => false;

  constructor(private readonly o: SecondReportServiceOptions) {
    this.log = o.logger.child({ component: 'second-reports' });
    this.clock = o.clock ?? (() => new Date());
    // A write-back that waited for its primary report is built by the same code as one built at once.
    o.outbound.useWriteBackBuilder(async (trx, m) => {
      const c = await findCase(trx, m.case_id);
      const report = m.report_id ? await findSecondReport(trx, m.report_id) : undefined;
      if (!c || !report || !m.control_id) return { problem: 'the case or second report of this write-back is gone' };
      return this.buildWriteBackFor(trx, c, report, m.control_id);
    });
  }

  useArbitration(start: ArbitrationStarter): void {
    this.startArbitration = start;
  }

  /**
   * The ORU^R01 of one second report version, with PID and OBR copied from
   * the study's latest final (or corrected) primary report: `waiting` while
   * none is linked (never an ORU without them). Version 1 goes as `F`; an
   * addendum (version 2+) corrects what was written back: OBR-25 and OBX-11 `C`.
   */
  async buildWriteBackFor(
    trx: Db,
    c: CaseRow,
    report: SecondReportRow,
    controlId: string,
  ): Promise<{ payload: string } | { waiting: true } | { problem: string }> {
    const primary = await primaryReportOf(trx, c.study_instance_uid);
    if (!primary) return { waiting: true };
    const reader = this.o.config.readers.find((r) => r.id === report.reader_id);
    const [family, given] = (reader?.name ?? '').split(/\s+/).reverse();
    const arbitration = await arbitrationOf(trx, c.id, this.o.config.readers);
    try {
      const payload = buildSecondReportOru({
        controlId,
        sendingApplication: this.o.config.hl7.sendingApplication,
        sendingFacility: this.o.config.hl7.sendingFacility,
        receivingApplication: this.o.config.writeBack.receivingApplication,
        receivingFacility: this.o.config.writeBack.receivingFacility,
        primaryReport: primary.raw,
        // Built when sent, so a merge (A40/A34) that happened while the case was open is in the PID.
        survivingPatient: primary.patient_id ? await survivingPatientId(trx, primary.patient_id, primary.patient_id_authority) : undefined,
        accessionNumber: c.accession_number ?? undefined,
        studyInstanceUid: c.study_instance_uid,
        secondReader: { id: report.reader_id, familyName: family, givenName: given },
        text: report.text,
        radpeerScore: report.radpeer_score as RadpeerScore,
        impression: report.impression ?? undefined,
        resultStatus: report.version > 1 ? 'C' : 'F',
        ...(arbitration
          ? {
              arbitration: {
                verdict: arbitration.verdict,
                finalScore: arbitration.finalScore,
                arbitratorId: arbitration.arbitratorId ?? undefined,
                text: arbitration.text,
              },
            }
          : {}),
        now: this.clock(),
      });
      return { payload };
    } catch (err) {
      return { problem: (err as Error).message };
    }
  }

  /** Queues the write-back of a report version (built now when it can be), in the caller's transaction. */
  async queueWriteBack(trx: Db, c: CaseRow, report: SecondReportRow, now: string): Promise<void> {
    const caseId = c.id;
    const controlId = this.o.newControlId();
    const built = await this.buildWriteBackFor(trx, c, report, controlId);
    if ('payload' in built) {
      await this.o.outbound.enqueue(trx, { kind: OutboundKind.writeBack, caseId, reportId: report.id, controlId, payload: built.payload });
    } else if ('waiting' in built) {
      // No final primary report yet (a manual case forwarded before it): the ORU is built when it is linked.
      await this.o.outbound.enqueue(trx, { kind: OutboundKind.writeBack, caseId, reportId: report.id, controlId, payload: '', waiting: true });
    } else {
      // Visible rather than silent: the report is kept, the write-back shows why it cannot be sent.
      const id = await this.o.outbound.enqueue(trx, { kind: OutboundKind.writeBack, caseId, reportId: report.id, controlId, payload: '' });
      await failWriteBack(trx, id, built.problem);
      await transitionCase(trx, {
        caseId,
        from: [CaseState.reported],
        to: CaseState.failed,
        actor: 'write-back',
        now,
        auditId: this.o.newId(),
        details: { error: built.problem },
      });
    }
  }

  /** Something for the write-back queue to look at now (a cancel, a report): rather than at its next poll. */
  kickOutbound(): void {
    this.o.outbound.kick();
  }

  /** Validates a request body, listing every problem. */
  parse(body: unknown): SecondReportInput {
    const b = (typeof body === 'object' && body !== null && !Array.isArray(body) ? body : {}) as Record<string, unknown>;
    const errors: { path: string; message: string }[] = [];
    const known = ['text', 'radpeerScore', 'readerId', 'impression', 'findings', 'addendum', 'keyImages'];
    for (const k of Object.keys(b)) if (!known.includes(k)) errors.push({ path: k, message: 'unknown field' });
    const text = (k: string, required: boolean, max: number): string | undefined => {
      const v = b[k];
      if (v === undefined || v === null) {
        if (required) errors.push({ path: k, message: 'required' });
        return undefined;
      }
      if (typeof v !== 'string' || v.trim() === '' || v.length > max) {
        errors.push({ path: k, message: `must be a non-empty string of at most ${max} characters` });
        return undefined;
      }
      return v;
    };
    const input = {
      text: text('text', true, 200_000) ?? '',
      impression: text('impression', false, 50_000),
      findings: text('findings', false, 200_000),
      readerId: text('readerId', false, 128),
    } as SecondReportInput;
    const score = b['radpeerScore'];
    if (typeof score === 'string' && (radpeerScores as readonly string[]).includes(score)) input.radpeerScore = score as RadpeerScore;
    else errors.push({ path: 'radpeerScore', message: `must be one of ${radpeerScores.join(', ')} (RADPEER 2016)` });
    if (b['addendum'] !== undefined) {
      if (typeof b['addendum'] === 'boolean') input.addendum = b['addendum'];
      else errors.push({ path: 'addendum', message: 'must be true or false' });
    }
    const keyImages = keyImagesProblem(b['keyImages']);
    if (keyImages) errors.push({ path: 'keyImages', message: keyImages });
    else if (Array.isArray(b['keyImages']) && b['keyImages'].length > 0) input.keyImages = [...new Set(b['keyImages'] as string[])];
    if (errors.length > 0) throw new GatewayError(ErrorCode.invalidInput, 'invalid second report', { details: { errors } });
    return input;
  }

  /** Stores the report; inside `trx` when given (the HL7 path, whose ACK waits for that transaction). */
  async submit(caseId: string, input: SecondReportInput, by: Submitter, source: 'api' | 'hl7', inTrx?: Db): Promise<SecondReportRow> {
    const now = this.clock().toISOString();
    const store = async (trx: Db): Promise<SecondReportRow> => {
      const c = await findCase(trx, caseId);
      if (!c) throw new GatewayError(ErrorCode.notFound, 'no such case');
      if (by.role === 'reader') {
        if (c.reader_id !== by.readerId) throw new GatewayError(ErrorCode.forbidden, 'this case is not assigned to you');
        if (input.readerId && input.readerId !== by.readerId) throw new GatewayError(ErrorCode.forbidden, 'a reader reports under their own id');
      }
      const readerId = by.role === 'reader' ? by.readerId! : (input.readerId ?? c.reader_id ?? by.name);
      const version = (await latestSecondReportVersion(trx, caseId)) + 1;
      if (version === 1) {
        if (!FIRST_REPORT_STATES.includes(c.state)) throw new GatewayError(ErrorCode.conflict, `a ${c.state} case takes no second report`);
        if (input.addendum) throw new GatewayError(ErrorCode.conflict, 'there is no report to add an addendum to');
      } else {
        if (!input.addendum) throw new GatewayError(ErrorCode.conflict, 'the case is already reported: send an addendum (addendum: true)');
        if (!ADDENDUM_STATES.includes(c.state)) throw new GatewayError(ErrorCode.conflict, `a ${c.state} case takes no addendum`);
      }
      const primary = await primaryReportOf(trx, c.study_instance_uid);
      if (primary?.radiologist_id && primary.radiologist_id === readerId) {
        throw new GatewayError(ErrorCode.conflict, 'the second reader cannot be the first reader');
      }
      const discrepant = DISCREPANT_SCORES.includes(input.radpeerScore);
      const text = input.findings ? `${input.findings}\n${input.text}` : input.text;
      const report: SecondReportRow = {
        id: this.o.newId(),
        case_id: caseId,
        version,
        reader_id: readerId,
        text,
        impression: input.impression ?? null,
        radpeer_score: input.radpeerScore,
        discrepant: discrepant ? 1 : 0,
        addendum: version > 1 ? 1 : 0,
        source,
        submitted_by: by.name,
        created_at: now,
      };
      await insertSecondReport(trx, report);
      await this.o.outputs?.onReportStored(trx, c, report, input.keyImages ?? []);
      await endOpenAssignments(trx, caseId, now, 'reported');
      if (discrepant && c.discrepant !== 1) await markCaseDiscrepant(trx, caseId);
      const details = { version, radpeerScore: input.radpeerScore, concordance: concordanceOf(input.radpeerScore), source };
      if (c.state === CaseState.reported) {
        // An addendum while the write-back of the report is still under way: the case is already where it belongs.
        await recordAudit(trx, this.o.newId(), now, { actor: by.name, action: 'case.addendum', entityType: 'case', entityId: caseId, details });
      } else {
        await transitionCase(trx, { caseId, from: [c.state], to: CaseState.reported, actor: by.name, now, auditId: this.o.newId(), details });
      }

      // A rule's arbitration holds the write-back of a discrepant first version until the third reader's verdict.
      const arbitrating = version === 1 && (await this.startArbitration(trx, { ...c, state: CaseState.reported }, report, by.name, now));
      if (!arbitrating) await this.queueWriteBack(trx, c, report, now);
      if (discrepant) {
        await recordAudit(trx, this.o.newId(), now, {
          actor: by.name,
          action: 'case.discrepant',
          entityType: 'case',
          entityId: caseId,
          details: { radpeerScore: input.radpeerScore, version },
        });
        await this.o.outbound.notify(trx, caseId, 'discrepant', { radpeerScore: input.radpeerScore, version, readerId });
      }
      return report;
    };
    const row = inTrx ? await store(inTrx) : await this.o.db.transaction().execute(store);
    this.log.info('second report stored', { caseId, version: row.version, radpeerScore: row.radpeer_score, discrepant: row.discrepant === 1, source });
    this.o.outbound.kick();
    return row;
  }

  /**
   * A second report from the pool's own system over HL7. When the pool's
   * destination de-identifies, every identifier it sends back (PID-3,
   * accession, StudyInstanceUID) is a pseudonym and must resolve through the
   * pseudonym map of that destination: one that does not resolve is never
   * taken as a real identifier, and a report without PID-3 is never matched on
   * accession alone. Such a report is not applied: it comes back as `held`
   * (with why) so the message is stored, listed among held messages and answered AR.
   */
  async applyFromHl7(
    trx: Db,
    item: SecondReportItem,
    from: { senderApplication: string; patient: PatientRef },
  ): Promise<{ studyUid: string } | { held: string; hl7Code: string }> {
    const destination = this.o.config.destinations.find((d) => d.hl7Sender === from.senderApplication);
    const pseudonymous = destination?.deidentify === true;
    const unresolved: string[] = [];
    const real = async (kind: string, value: string | null, what: string): Promise<string | null> => {
      if (!value || !destination) return value;
      const r = await resolvePseudonym(trx, destination.id, kind, value);
      if (r) return r.original;
      if (pseudonymous) {
        unresolved.push(what);
        return null;
      }
      return value;
    };
    if (!from.patient.id) return { held: 'patient-id-missing: the second report has no PID-3 to check against the study', hl7Code: '101' };
    const uid = await real(PseudonymKind.uid, item.studyInstanceUid, 'StudyInstanceUID');
    const accession = await real(PseudonymKind.accession, item.accessionNumber, 'accession number');
    const patientId = await real(PseudonymKind.patientId, from.patient.id, 'patient id (PID-3)');
    if (unresolved.length > 0) {
      return { held: `unresolved pseudonym: the ${unresolved.join(', ')} sent back matches nothing this gateway sent to ${destination!.id}`, hl7Code: '204' };
    }
    let study = uid ? await studyPatientByUid(trx, uid) : undefined;
    if (!study && accession) {
      const rows = await studyPatientsByAccession(trx, accession, 2);
      if (rows.length > 1) throw new GatewayError(ErrorCode.conflict, 'several studies share that accession number');
      study = rows[0];
    }
    if (!study) throw new GatewayError(ErrorCode.notFound, 'no study matches this second report (accession / StudyInstanceUID)');
    if (!study.patient_id) return { held: 'patient-id-missing: the study has no patient id to check the second report against', hl7Code: '101' };
    // The pool knows the patient under the id it was sent; an A40/A34 since then may have moved the study to the survivor.
    if (!patientId || !(await samePatient(trx, patientId, study.patient_id))) {
      throw new GatewayError(ErrorCode.conflict, 'the patient id of this second report differs from its study');
    }
    const caseId = await latestUncancelledCaseId(trx, study.study_instance_uid);
    if (!caseId) throw new GatewayError(ErrorCode.notFound, 'the study has no second-read case');
    const hasReport = await hasSecondReport(trx, caseId);
    const input = this.parse({
      text: item.text,
      radpeerScore: item.radpeerScore ?? undefined,
      ...(item.reader?.id ? { readerId: item.reader.id } : {}),
      ...(hasReport ? { addendum: true } : {}),
    });
    await this.submit(caseId, input, { role: 'system', name: `hl7:${from.senderApplication}` }, 'hl7', trx);
    return { studyUid: study.study_instance_uid };
  }
}
