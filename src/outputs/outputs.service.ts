import { open } from 'node:fs/promises';
import path from 'node:path';
import dcmjs from 'dcmjs';
import { recordAudit } from '../audit/audit.repository.js';
import type { CaseRow } from '../cases/case.table.js';
import type { Destination, GatewayConfig } from '../config/schema.js';
import type { Db } from '../db/database.js';
import { TransferSyntax } from '../dicom/uids.js';
import { ErrorCode, GatewayError } from '../errors.js';
import { type DestinationSender } from '../forwarding/destination.js';
import { createDestinationSender } from '../forwarding/destination.factory.js';
import type { JobContext, JobOutcome, JobQueue } from '../jobs/job.types.js';
import { JobPermanentError } from '../jobs/job.types.js';
import { hashId, type Logger } from '../logger.js';
import type { RadpeerScore } from '../reports/oru-builder.js';
import type { SecondReportRow } from '../reports/report.table.js';
import { CaseState, StudyState } from '../states.js';
import { buildFhirBundle, patientIdentifierSystem } from './fhir-builder.js';
import { insertKeyImages, instancesOfStudy, keyImagesOf, loadOutputSource, studyInstances, type OutputSource } from './outputs.repository.js';
import { BASIC_TEXT_SR, buildKeyObjectSelection, buildSecondReadSr, KEY_OBJECT_SELECTION, outputUids, type Arbitration, type SrStudy } from './sr-builder.js';

/** The job kinds of the outputs of a second report version (one job per output and version). */
export const OutputJobKind = {
  dicomSr: 'output.dicom-sr',
  dicomKos: 'output.dicom-kos',
  fhir: 'output.fhir',
} as const;
export type OutputJobKind = (typeof OutputJobKind)[keyof typeof OutputJobKind];

export interface OutputJobPayload {
  reportId: string;
  /** The third reader's verdict, when an arbitration closed a discrepancy: rendered in the SR and the FHIR report. */
  arbitration?: Arbitration;
}

const MAX_KEY_IMAGES = 1000;

/**
 * `keyImages` of a second report request: SOP Instance UIDs (checked against
 * the study when the report is stored). A problem with it, or undefined.
 */
export function keyImagesProblem(value: unknown): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (!Array.isArray(value)) return 'must be an array of SOP Instance UIDs';
  if (value.length > MAX_KEY_IMAGES) return `at most ${MAX_KEY_IMAGES} key images`;
  if (!value.every((v) => typeof v === 'string' && v.length <= 64 && /^[0-9]+(\.[0-9]+)*$/.test(v))) {
    return 'each must be a SOP Instance UID (digits and dots, at most 64 characters)';
  }
  return undefined;
}
const MANUFACTURER = 'Second-read gateway';
/** How often an output for a held study looks again (a person releases or rejects the study). */
const HELD_RECHECK_MS = 60_000;

export interface OutputsServiceOptions {
  db: Db;
  logger: Logger;
  config: Pick<GatewayConfig, 'outputs' | 'pacs' | 'destinations' | 'readers' | 'storage' | 'dicom' | 'hl7'>;
  newId: () => string;
  clock?: () => Date;
  /** Where output jobs are enqueued (absent: key images are kept, nothing is sent). */
  jobs?: JobQueue;
  /** The gateway's senders by destination id (forwarding's): reused so one destination has one sender. */
  senders?: ReadonlyMap<string, DestinationSender>;
}

/**
 * The second read as the hospital consumes it besides the ORU: a DICOM SR
 * (and a Key Object Selection of the reader's key images) stored to the PACS
 * or a destination, and a FHIR R4 DiagnosticReport posted to a FHIR server.
 * Queued as jobs in the transaction that stores the report; sent, retried
 * and dead-lettered by the job engine; every outcome audited on the case.
 */
export class OutputsService {
  private readonly log: Logger;
  private readonly clock: () => Date;
  /** Senders this service made (the PACS; a destination the gateway has no sender for): closed on stop. */
  private readonly ownSenders = new Map<string, DestinationSender>();

  constructor(private readonly o: OutputsServiceOptions) {
    this.log = o.logger.child({ component: 'outputs' });
    this.clock = o.clock ?? (() => new Date());
  }

  /**
   * In the transaction that stores a second report version: checks its key
   * images are instances of the case's study (refused otherwise, naming
   * those that are not), keeps them, and enqueues the configured outputs.
   */
  async onReportStored(trx: Db, c: CaseRow, report: SecondReportRow, keyImageUids: readonly string[]): Promise<void> {
    if (keyImageUids.length > 0) {
      const found = await instancesOfStudy(trx, c.study_instance_uid, keyImageUids);
      const known = new Set(found.map((f) => f.sopInstanceUid));
      const unknown = keyImageUids.filter((u) => !known.has(u));
      if (unknown.length > 0) {
        throw new GatewayError(ErrorCode.invalidInput, 'invalid second report', {
          details: { errors: [{ path: 'keyImages', message: `not instances of this study: ${unknown.join(', ')}` }] },
        });
      }
      const byUid = new Map(found.map((f) => [f.sopInstanceUid, f]));
      await insertKeyImages(
        trx,
        report.id,
        keyImageUids.map((u) => byUid.get(u)!),
      );
    }
    await this.enqueue(trx, c.id, { reportId: report.id }, keyImageUids.length > 0);
  }

  /** Enqueues the configured outputs of one report version (also for an arbitration that closes it). */
  async enqueue(trx: Db, caseId: string, payload: OutputJobPayload, withKeyImages: boolean): Promise<void> {
    const jobs = this.o.jobs;
    if (!jobs) return;
    const out = this.o.config.outputs;
    const maxAttempts = out.maxAttempts;
    const key = `${payload.reportId}${payload.arbitration ? ':arbitrated' : ''}`;
    // One queue per case and output: versions (and an arbitrated re-issue) go out in the order they were made.
    if (out.dicomSr) {
      await jobs.enqueue(trx, OutputJobKind.dicomSr, payload, { key, queue: `${OutputJobKind.dicomSr}:${caseId}`, maxAttempts });
      if (withKeyImages)
        await jobs.enqueue(
          trx,
          OutputJobKind.dicomKos,
          { reportId: payload.reportId },
          { key: payload.reportId, queue: `${OutputJobKind.dicomKos}:${caseId}`, maxAttempts },
        );
    }
    if (out.fhir) await jobs.enqueue(trx, OutputJobKind.fhir, payload, { key, queue: `${OutputJobKind.fhir}:${caseId}`, maxAttempts });
  }

  register(jobs: JobQueue): void {
    const { maxAttempts, backoffBaseSeconds, backoffMaxSeconds } = this.o.config.outputs;
    const options = { maxAttempts, backoffBaseSeconds, backoffMaxSeconds, leaseSeconds: 300 };
    jobs.register<OutputJobPayload>(OutputJobKind.dicomSr, (job) => this.runDicom(job, 'sr'), options);
    jobs.register<OutputJobPayload>(OutputJobKind.dicomKos, (job) => this.runDicom(job, 'kos'), options);
    jobs.register<OutputJobPayload>(OutputJobKind.fhir, (job) => this.runFhir(job), options);
  }

  async close(): Promise<void> {
    for (const s of this.ownSenders.values()) await s.close?.();
  }

  /** Builds and stores the SR or KOS of one report version. */
  async runDicom(job: JobContext<OutputJobPayload>, what: 'sr' | 'kos'): Promise<JobOutcome> {
    const output = what === 'sr' ? 'dicom-sr' : 'dicom-kos';
    const target = this.o.config.outputs.dicomSr?.destination;
    const src = await loadOutputSource(this.o.db, job.payload.reportId);
    if (!src) return this.fail(job, output, undefined, 'the second report of this output is gone', true);
    const gate = await this.gate(job, output, src);
    if (gate !== 'go') return gate;
    if (!target) return this.fail(job, output, src, 'outputs.dicomSr is no longer configured', true);
    const sender = this.senderFor(target);
    if (!sender) return this.fail(job, output, src, `unknown destination "${target}"`, true);

    const instances = await studyInstances(this.o.db, src.study.study_instance_uid);
    const study = await this.studyAttributes(src, instances[0]?.filePath);
    const reader = this.readerOf(src.report);
    const common = {
      study,
      reader,
      report: this.reportOf(src.report),
      manufacturer: MANUFACTURER,
      verifyingOrganization: this.o.config.hl7.sendingFacility,
    };
    let built: { bytes: Buffer; sopInstanceUid: string; seriesInstanceUid: string };
    if (what === 'sr') {
      built = buildSecondReadSr(
        {
          ...common,
          evidence: instances,
          // The arbitrated SR replaces the same version's first SR; an addendum's replaces the previous version's.
          ...(job.payload.arbitration
            ? { predecessor: { ...outputUids(study.studyInstanceUid, src.report.id, 'sr'), sopClassUid: BASIC_TEXT_SR } }
            : src.previousReportId
              ? { predecessor: { ...outputUids(study.studyInstanceUid, src.previousReportId, 'sr'), sopClassUid: BASIC_TEXT_SR } }
              : {}),
          ...(job.payload.arbitration ? { arbitration: job.payload.arbitration } : {}),
        },
        this.clock(),
      );
    } else {
      const keyImages = await keyImagesOf(this.o.db, src.report.id);
      if (keyImages.length === 0) return this.fail(job, output, src, 'the report has no key images', true);
      built = buildKeyObjectSelection({ ...common, keyImages }, this.clock());
    }
    const sopClassUid = what === 'sr' ? BASIC_TEXT_SR : KEY_OBJECT_SELECTION;
    const [result] = await sender.send([
      { sopClassUid, sopInstanceUid: built.sopInstanceUid, transferSyntaxUid: TransferSyntax.explicitLe, bytes: built.bytes },
    ]);
    if (!result?.ok) {
      const failure = result?.failure ?? { transient: true, message: 'no result from the sender' };
      return this.fail(job, output, src, `${target}: ${failure.message}`, !failure.transient);
    }
    this.log.info('second read stored as DICOM', {
      output,
      caseId: src.case.id,
      destination: target,
      study: hashId(study.studyInstanceUid),
      version: src.report.version,
    });
    await this.succeed(job, output, src, { destination: target, sopInstanceUid: built.sopInstanceUid });
  }

  /** Posts the FHIR transaction Bundle of one report version: 2xx done, 4xx refused for good, 5xx and network errors retried. */
  async runFhir(job: JobContext<OutputJobPayload>): Promise<JobOutcome> {
    const fhir = this.o.config.outputs.fhir;
    const src = await loadOutputSource(this.o.db, job.payload.reportId);
    if (!src) return this.fail(job, 'fhir', undefined, 'the second report of this output is gone', true);
    const gate = await this.gate(job, 'fhir', src);
    if (gate !== 'go') return gate;
    if (!fhir) return this.fail(job, 'fhir', src, 'outputs.fhir is no longer configured', true);
    const s = src.study;
    if (!s.patient_id) return this.fail(job, 'fhir', src, 'the study has no patient id to name the FHIR subject by', true);
    const system = patientIdentifierSystem(s.issuer_of_patient_id, fhir.identifierSystems);
    if (!system) {
      return this.fail(
        job,
        'fhir',
        src,
        `no FHIR identifier system for the assigning authority "${s.issuer_of_patient_id ?? ''}" (outputs.fhir.identifierSystems)`,
        true,
      );
    }
    const accession = src.case.accession_number ?? s.accession_number;
    const bundle = buildFhirBundle({
      report: this.reportOf(src.report),
      reader: this.readerOf(src.report),
      patient: { id: s.patient_id, system },
      accession: accession ? { value: accession, ...(fhir.accessionSystem ? { system: fhir.accessionSystem } : {}) } : null,
      studyInstanceUid: s.study_instance_uid,
      ...(job.payload.arbitration ? { arbitration: job.payload.arbitration } : {}),
    });
    const url = fhir.url.replace(/\/+$/, '');
    let res: Response;
    try {
      res = await fetch(url, {
        method: 'POST',
        headers: { ...fhir.headers, 'content-type': 'application/fhir+json', accept: 'application/fhir+json' },
        body: JSON.stringify(bundle),
        signal: AbortSignal.any([job.signal, AbortSignal.timeout(fhir.timeoutSeconds * 1000)]),
      });
    } catch (err) {
      return this.fail(job, 'fhir', src, `FHIR server unreachable: ${(err as Error).message}`, false);
    }
    const body = await res.text().catch(() => '');
    if (res.status >= 200 && res.status < 300) {
      this.log.info('second read posted as FHIR', { caseId: src.case.id, status: res.status, version: src.report.version });
      return this.succeed(job, 'fhir', src, { status: res.status });
    }
    // The server's OperationOutcome may quote the resource: only its issue codes are kept.
    const codes = issueCodes(body);
    const why = `FHIR server answered ${res.status}${codes ? ` (${codes})` : ''}`;
    const permanent = res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429;
    return this.fail(job, 'fhir', src, why, permanent);
  }

  /**
   * Nothing goes out for a cancelled case (audited, done) or while its study
   * is held (an identity conflict: the patient named may be wrong); the job
   * looks again later without counting an attempt.
   */
  private async gate(job: JobContext<OutputJobPayload>, output: string, src: OutputSource): Promise<'go' | JobOutcome> {
    if (src.case.state === CaseState.cancelled) {
      await job.fenced((trx) =>
        recordAudit(trx, this.o.newId(), this.clock().toISOString(), {
          actor: 'outputs',
          action: 'output.cancelled',
          entityType: 'case',
          entityId: src.case.id,
          details: { output, reportId: src.report.id, version: src.report.version },
        }),
      );
      return undefined;
    }
    if (src.study.state === StudyState.held) {
      this.log.info('second read output waits: the study is held', { output, caseId: src.case.id, holdReason: src.study.hold_reason });
      return { runAgainAt: new Date(this.clock().getTime() + HELD_RECHECK_MS) };
    }
    return 'go';
  }

  private senderFor(target: string): DestinationSender | undefined {
    if (target !== 'pacs') {
      const existing = this.o.senders?.get(target);
      if (existing) return existing;
      const d = this.o.config.destinations.find((x) => x.id === target);
      if (!d) return undefined;
      const own = this.ownSenders.get(target) ?? createDestinationSender(d, { callingAeTitle: this.o.config.dicom.aeTitle, logger: this.o.logger });
      this.ownSenders.set(target, own);
      return own;
    }
    const known = this.ownSenders.get('pacs');
    if (known) return known;
    const p = this.o.config.pacs;
    if (!p) return undefined;
    // The PACS as a destination the existing senders know: C-STORE or STOW-RS, never de-identified.
    const d: Destination =
      p.type === 'dimse'
        ? {
            id: 'pacs',
            type: 'dimse',
            host: p.host,
            port: p.port,
            aeTitle: p.aeTitle,
            ...(p.callingAeTitle ? { callingAeTitle: p.callingAeTitle } : {}),
            deidentify: false,
            timeoutSeconds: p.timeoutSeconds,
            batchSize: 1,
            maxAssociations: 1,
            ...(p.tls ? { tls: p.tls } : {}),
          }
        : {
            id: 'pacs',
            type: 'dicomweb',
            url: p.url,
            headers: p.headers,
            deidentify: false,
            timeoutSeconds: p.timeoutSeconds,
            batchSize: 1,
            maxRequestMegabytes: 64,
          };
    const sender = createDestinationSender(d, { callingAeTitle: this.o.config.dicom.aeTitle, logger: this.o.logger });
    this.ownSenders.set('pacs', sender);
    return sender;
  }

  private readerOf(report: SecondReportRow): { id: string; name: string } {
    const r = this.o.config.readers.find((x) => x.id === report.reader_id);
    return { id: report.reader_id, name: r?.name ?? report.reader_id };
  }

  private reportOf(r: SecondReportRow): { id: string; version: number; text: string; impression: string | null; radpeerScore: RadpeerScore; createdAt: Date } {
    return {
      id: r.id,
      version: r.version,
      text: r.text,
      impression: r.impression,
      radpeerScore: r.radpeer_score as RadpeerScore,
      createdAt: new Date(r.created_at),
    };
  }

  /**
   * The patient and study as the hospital sent them: the study row (which an
   * A40/A34 merge keeps current), completed from a stored instance's header
   * with what the row does not hold (sex, study time, study id).
   */
  private async studyAttributes(src: OutputSource, filePath: string | undefined): Promise<SrStudy> {
    const s = src.study;
    const header = filePath ? await readHeaderExtras(path.resolve(this.o.config.storage.dir, filePath)).catch(() => ({})) : {};
    return {
      studyInstanceUid: s.study_instance_uid,
      patientId: s.patient_id,
      issuerOfPatientId: s.issuer_of_patient_id,
      patientName: s.patient_name,
      patientBirthDate: s.patient_birth_date,
      accessionNumber: src.case.accession_number ?? s.accession_number,
      studyDate: s.study_date,
      referringPhysicianName: s.referring_physician,
      studyDescription: s.study_description,
      patientSex: null,
      studyTime: null,
      studyId: null,
      ...header,
    };
  }

  private async succeed(job: JobContext<OutputJobPayload>, output: string, src: OutputSource, details: Record<string, unknown>): Promise<void> {
    await job.fenced((trx) =>
      recordAudit(trx, this.o.newId(), this.clock().toISOString(), {
        actor: 'outputs',
        action: 'output.sent',
        entityType: 'case',
        entityId: src.case.id,
        details: { output, reportId: src.report.id, version: src.report.version, attempt: job.attempt, ...details },
      }),
    );
  }

  /**
   * A failure: a permanent one (or the last attempt) is audited on the case
   * as `output.failed` and dead-lettered; a transient one is thrown for the
   * engine to retry with backoff.
   */
  private async fail(job: JobContext<OutputJobPayload>, output: string, src: OutputSource | undefined, message: string, permanent: boolean): Promise<never> {
    const last = permanent || job.attempt >= job.maxAttempts;
    this.log.warn('second read output failed', { output, caseId: src?.case.id, attempt: job.attempt, permanent, last, error: message });
    if (last) {
      await job.fenced((trx) =>
        recordAudit(trx, this.o.newId(), this.clock().toISOString(), {
          actor: 'outputs',
          action: 'output.failed',
          entityType: 'case',
          entityId: src?.case.id ?? null,
          details: { output, reportId: job.payload.reportId, version: src?.report.version, attempt: job.attempt, permanent, error: message },
        }),
      );
    }
    throw permanent ? new JobPermanentError(message) : new Error(message);
  }
}

/** OperationOutcome issue codes (`invalid`, `required`...), never its text, which may quote patient data. */
function issueCodes(body: string): string {
  try {
    const o = JSON.parse(body) as { resourceType?: string; issue?: { severity?: string; code?: string }[] };
    if (o.resourceType !== 'OperationOutcome' || !Array.isArray(o.issue)) return '';
    return o.issue.map((i) => `${i.severity ?? '?'}:${i.code ?? '?'}`).join(', ');
  } catch {
    return '';
  }
}

/** Patient's Sex, Study Time and Study ID of a stored instance (plain ASCII attributes), from its first bytes. */
async function readHeaderExtras(file: string): Promise<Partial<Pick<SrStudy, 'patientSex' | 'studyTime' | 'studyId'>>> {
  const fh = await open(file, 'r');
  let bytes: Buffer;
  try {
    const buf = Buffer.alloc(256 * 1024);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    bytes = buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
  const ab = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length) as ArrayBuffer;
  const dict = dcmjs.data.DicomMessage.readFile(ab, { ignoreErrors: true, untilTag: '7FE00010', includeUntilTagValue: false });
  const value = (tag: string): string | null => {
    const v = dict.dict[tag]?.Value?.[0];
    return typeof v === 'string' && v.trim() !== '' ? v.trim() : null;
  };
  const out: Partial<Pick<SrStudy, 'patientSex' | 'studyTime' | 'studyId'>> = {};
  const sex = value('00100040');
  if (sex && ['M', 'F', 'O'].includes(sex)) out.patientSex = sex;
  const time = value('00080030');
  if (time && /^\d{2,6}(\.\d{1,6})?$/.test(time)) out.studyTime = time;
  const id = value('00200010');
  if (id && id.length <= 16) out.studyId = id;
  return out;
}
