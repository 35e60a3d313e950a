import { recordAudit } from '../audit/audit.repository.js';
import type { Db } from '../db/database.js';
import { isUniqueViolation } from '../db/dialect.js';
import type { MppsPort, MppsRequest, MppsResult, NaturalDataset } from '../dicom/mpps.port.js';
import { hashId, type Logger } from '../logger.js';
import { decideCompleteness, type Completeness } from './completeness.js';
import { completenessInputs, findMpps, insertMpps, replaceMppsInstances, updateMpps } from './mpps.repository.js';
import { MppsStatus, type MppsInstanceTable } from './mpps.table.js';

/** DIMSE statuses of PS3.4 F.7.2 and PS3.7 C. */
export const MppsDimseStatus = {
  success: 0x0000,
  invalidAttributeValue: 0x0106,
  processingFailure: 0x0110,
  duplicateInstance: 0x0111,
  noSuchInstance: 0x0112,
} as const;

export interface MppsServiceOptions {
  db: Db;
  logger: Logger;
  newId: () => string;
  /** After a step ended (COMPLETED / DISCONTINUED) was committed: the study's completeness may have changed. */
  onStepEnded?: (studyInstanceUid: string) => void | Promise<void>;
  clock?: () => Date;
}

const STATUSES = new Set<string>(Object.values(MppsStatus));

/**
 * The Modality Performed Procedure Step SCP's domain side: records N-CREATE and N-SET durably (committed
 * before the answer) and tells the study service when a step ended, so a study whose listed instances are
 * all here is complete without waiting for the quiet period.
 */
export class MppsService implements MppsPort {
  private readonly log: Logger;
  private readonly clock: () => Date;

  constructor(private readonly o: MppsServiceOptions) {
    this.log = o.logger.child({ component: 'mpps' });
    this.clock = o.clock ?? (() => new Date());
  }

  async nCreate(req: MppsRequest): Promise<MppsResult> {
    const status = text(req.dataset.PerformedProcedureStepStatus);
    // PS3.4 F.7.2.1.2: a step is created IN PROGRESS.
    if (status !== MppsStatus.inProgress) return { status: MppsDimseStatus.invalidAttributeValue };
    const now = this.clock().toISOString();
    const facts = stepFacts(req.dataset);
    try {
      await this.o.db.transaction().execute(async (trx) => {
        if (await findMpps(trx, req.sopInstanceUid)) throw new DuplicateStep();
        await insertMpps(trx, {
          sop_instance_uid: req.sopInstanceUid,
          status: MppsStatus.inProgress,
          study_instance_uid: facts.studyInstanceUid,
          accession_number: facts.accessionNumber,
          patient_id: text(req.dataset.PatientID),
          issuer_of_patient_id: text(req.dataset.IssuerOfPatientID),
          modality: text(req.dataset.Modality),
          calling_ae: req.callingAeTitle,
          dataset: JSON.stringify(req.dataset),
          created_at: now,
          updated_at: now,
          ended_at: null,
        });
        await replaceMppsInstances(trx, req.sopInstanceUid, instancesOf(req.sopInstanceUid, facts.studyInstanceUid, req.dataset));
        await recordAudit(trx, this.o.newId(), now, {
          actor: `dicom:${req.callingAeTitle}`,
          action: 'mpps.created',
          entityType: 'study',
          entityId: facts.studyInstanceUid,
          details: { mppsUid: req.sopInstanceUid, status: MppsStatus.inProgress },
        });
      });
    } catch (err) {
      if (err instanceof DuplicateStep || isUniqueViolation(err)) return { status: MppsDimseStatus.duplicateInstance };
      this.log.error('MPPS N-CREATE not stored', { mppsUid: hashId(req.sopInstanceUid), error: (err as Error).message });
      return { status: MppsDimseStatus.processingFailure };
    }
    this.log.info('MPPS in progress', {
      mppsUid: hashId(req.sopInstanceUid),
      studyUid: facts.studyInstanceUid ? hashId(facts.studyInstanceUid) : undefined,
      callingAe: req.callingAeTitle,
    });
    return { status: MppsDimseStatus.success };
  }

  async nSet(req: MppsRequest): Promise<MppsResult> {
    const now = this.clock().toISOString();
    const newStatus = req.dataset.PerformedProcedureStepStatus === undefined ? undefined : text(req.dataset.PerformedProcedureStepStatus);
    if (newStatus !== undefined && (newStatus === null || !STATUSES.has(newStatus))) return { status: MppsDimseStatus.invalidAttributeValue };
    let ended: { study: string | null; status: string } | undefined;
    try {
      const answer = await this.o.db.transaction().execute(async (trx) => {
        const row = await findMpps(trx, req.sopInstanceUid);
        if (!row) return MppsDimseStatus.noSuchInstance;
        // PS3.4 F.7.2.2: a step that is COMPLETED or DISCONTINUED may no longer be updated.
        if (row.status !== MppsStatus.inProgress) return MppsDimseStatus.processingFailure;
        const merged: NaturalDataset = { ...(JSON.parse(row.dataset) as NaturalDataset), ...req.dataset };
        const status = (newStatus ?? row.status) as MppsStatus;
        const facts = stepFacts(merged);
        const study = facts.studyInstanceUid ?? row.study_instance_uid;
        const isEnd = status !== MppsStatus.inProgress;
        await updateMpps(trx, req.sopInstanceUid, {
          status,
          study_instance_uid: study,
          accession_number: facts.accessionNumber ?? row.accession_number,
          dataset: JSON.stringify(merged),
          updated_at: now,
          ended_at: isEnd ? now : null,
        });
        if (req.dataset.PerformedSeriesSequence !== undefined)
          await replaceMppsInstances(trx, req.sopInstanceUid, instancesOf(req.sopInstanceUid, study, merged));
        if (isEnd) {
          const listed = instancesOf(req.sopInstanceUid, study, merged).length;
          await recordAudit(trx, this.o.newId(), now, {
            actor: `dicom:${req.callingAeTitle}`,
            action: status === MppsStatus.completed ? 'mpps.completed' : 'mpps.discontinued',
            entityType: 'study',
            entityId: study,
            details: { mppsUid: req.sopInstanceUid, status, instancesListed: listed },
          });
          ended = { study, status };
        }
        return MppsDimseStatus.success;
      });
      if (answer !== MppsDimseStatus.success) return { status: answer };
    } catch (err) {
      this.log.error('MPPS N-SET not stored', { mppsUid: hashId(req.sopInstanceUid), error: (err as Error).message });
      return { status: MppsDimseStatus.processingFailure };
    }
    if (ended) {
      this.log.info(`MPPS ${ended.status.toLowerCase()}`, { mppsUid: hashId(req.sopInstanceUid), studyUid: ended.study ? hashId(ended.study) : undefined });
      const study = ended.study;
      if (study && this.o.onStepEnded) {
        // The answer does not wait for the completeness check: it is already durable.
        Promise.resolve()
          .then(() => this.o.onStepEnded!(study))
          .catch((err: unknown) => this.log.error('completeness check after MPPS failed', { studyUid: hashId(study), error: (err as Error).message }));
      }
    }
    return { status: MppsDimseStatus.success };
  }

  /** The study's completeness as the study page shows it (the quiet period is the caller's to say). */
  async completenessOf(
    studyInstanceUid: string,
    quietElapsed: boolean,
  ): Promise<Completeness & { mpps: { sopInstanceUid: string; status: string; referenced: number }[] }> {
    const { steps, arrived } = await completenessInputs(this.o.db, studyInstanceUid);
    return {
      ...decideCompleteness(steps, arrived, quietElapsed),
      mpps: steps.map((s) => ({ sopInstanceUid: s.sopInstanceUid, status: s.status, referenced: s.referenced.length })),
    };
  }
}

class DuplicateStep extends Error {}

function text(v: unknown): string | null {
  if (Array.isArray(v)) v = v[0];
  if (v === undefined || v === null) return null;
  const s = String(v).trim();
  return s === '' ? null : s;
}

function items(v: unknown): NaturalDataset[] {
  if (!Array.isArray(v)) return v && typeof v === 'object' ? [v as NaturalDataset] : [];
  return v.filter((x): x is NaturalDataset => !!x && typeof x === 'object');
}

/** The study and accession the step belongs to: the first Scheduled Step Attributes item that names them. */
function stepFacts(ds: NaturalDataset): { studyInstanceUid: string | null; accessionNumber: string | null } {
  const ssas = items(ds.ScheduledStepAttributesSequence);
  return {
    studyInstanceUid: ssas.map((i) => text(i.StudyInstanceUID)).find((x) => x) ?? null,
    accessionNumber: ssas.map((i) => text(i.AccessionNumber)).find((x) => x) ?? null,
  };
}

/** Every instance the Performed Series Sequence lists (images and non-image objects), once each. */
export function instancesOf(mppsUid: string, studyInstanceUid: string | null, ds: NaturalDataset): MppsInstanceTable[] {
  const out = new Map<string, MppsInstanceTable>();
  for (const series of items(ds.PerformedSeriesSequence)) {
    const refs = [...items(series.ReferencedImageSequence), ...items(series.ReferencedNonImageCompositeSOPInstanceSequence)];
    for (const r of refs) {
      const uid = text(r.ReferencedSOPInstanceUID);
      if (!uid || out.has(uid)) continue;
      out.set(uid, {
        mpps_uid: mppsUid,
        sop_instance_uid: uid,
        sop_class_uid: text(r.ReferencedSOPClassUID),
        series_instance_uid: text(series.SeriesInstanceUID),
        study_instance_uid: studyInstanceUid,
      });
    }
  }
  return [...out.values()];
}
