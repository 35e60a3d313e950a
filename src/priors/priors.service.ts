import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { recordAudit } from '../audit/audit.repository.js';
import type { GatewayConfig } from '../config/schema.js';
import type { Db } from '../db/database.js';
import { readPart10Header } from '../dicom/header.js';
import type { InstanceSink } from '../dicom/instance-record.js';
import type { Spool } from '../dicom/spool.js';
import { insertDelivery } from '../forwarding/outbox.repository.js';
import { hashId, type Logger } from '../logger.js';
import type { RulesService } from '../rules/rules.service.js';
import { findStudy, seriesOfStudies } from '../studies/study.repository.js';
import type { PacsClient } from './pacs.client.js';
import {
  casesWithRetrievedPrior,
  findCase,
  insertFoundPriors,
  localInstanceCount,
  priorsReadyToForward,
  procedureCodesOfStudy,
  setPriorState,
} from './prior.repository.js';
import { PriorState } from './prior.table.js';
import type { JobQueue } from '../jobs/job.types.js';

/** The job kind that looks up (and retrieves) a new case's priors; its key is the case id. */
export const PRIORS_LOOKUP_JOB = 'priors.lookup';

export interface PriorsLookupPayload {
  caseId: string;
}

/**
 * The job kind that plans the deliveries of a case's ready priors (retrieved,
 * stable, and the case's own delivery planned). Enqueued by each of the three
 * changes, in its transaction; one case's jobs run one at a time (its queue).
 */
export const PRIORS_FORWARD_JOB = 'priors.forward';

export interface PriorsForwardPayload {
  caseId: string;
}
import { lookbackStart, selectRelevantPriors, type PriorsPolicy } from './relevance.js';

/** The calling AE recorded for instances retrieved over WADO-RS (they come through the same ingest as C-STORE). */
export const WADO_CALLING_AE = 'PACS-WADO';

export interface PriorsServiceOptions {
  db: Db;
  logger: Logger;
  config: Pick<GatewayConfig, 'priors'>;
  /** Undefined when no `pacs` is configured: priors are off. */
  pacs: PacsClient | undefined;
  rules: RulesService;
  /** The normal ingest path (StudyService): WADO-RS instances are stored exactly as C-STOREs are. */
  sink: InstanceSink;
  spool: Spool;
  newId: () => string;
  /** The job engine the lookups run on (the gateway's); without it only direct calls of findAndRetrieve look up (tools, tests). */
  jobs?: JobQueue;
  /** In the transaction that plans a prior's delivery: its sending job is enqueued there (ForwardingService.enqueueDelivery). */
  deliveryPlanned?: (trx: Db, deliveryId: string, destinationId: string) => Promise<void>;
  clock?: () => Date;
}

/**
 * Finds a new case's relevant prior studies at the hospital PACS, retrieves them into the gateway (read-only
 * context: no case, no rules of their own) and forwards them beside the case to its destination. A failure
 * to find or retrieve is recorded on the prior and audited, never a reason to hold the case.
 */
export class PriorsService {
  private readonly log: Logger;
  private readonly clock: () => Date;

  constructor(private readonly o: PriorsServiceOptions) {
    this.log = o.logger.child({ component: 'priors' });
    this.clock = o.clock ?? (() => new Date());
  }

  get enabled(): boolean {
    return this.o.pacs !== undefined;
  }

  /** Priors that became ready while no job stood for them (rows of an older version): a forwarding job per case, once at start. */
  async start(): Promise<void> {
    if (!this.enabled || !this.o.jobs) return;
    const cases = new Set((await priorsReadyToForward(this.o.db)).map((p) => p.case_id));
    if (cases.size === 0) return;
    await this.o.db.transaction().execute(async (trx) => {
      for (const caseId of cases) await this.enqueueForward(trx, caseId);
    });
  }

  /**
   * In the transaction of a change that may make a case's priors ready to
   * forward (a prior retrieved, the case's own delivery planned): a job plans
   * them. Not de-duplicated by key: each job runs after its change committed,
   * so none can miss it; a case's jobs share a queue and plan nothing twice.
   */
  async enqueueForward(trx: Db, caseId: string): Promise<void> {
    if (!this.enabled || !this.o.jobs) return;
    await this.o.jobs.enqueue(trx, PRIORS_FORWARD_JOB, { caseId } satisfies PriorsForwardPayload, { queue: `priors:${caseId}` });
  }

  /** In the transaction that makes a study stable: the cases that retrieved it as a prior may forward it now. */
  async priorStudyStable(trx: Db, studyInstanceUid: string): Promise<void> {
    if (!this.enabled || !this.o.jobs) return;
    for (const caseId of await casesWithRetrievedPrior(trx, studyInstanceUid)) await this.enqueueForward(trx, caseId);
  }

  /**
   * The trigger, in the transaction that creates the case: a `priors.lookup` job
   * (key: the case id) that exists if and only if the case commits. It runs in
   * the background (the case never waits for it) and is retried if it throws;
   * the lookup and its retrievals are safe to run again (found priors are kept
   * once, a prior already here is not fetched again).
   */
  async enqueueLookup(trx: Db, caseId: string): Promise<void> {
    if (!this.enabled || !this.o.jobs) return;
    await this.o.jobs.enqueue(trx, PRIORS_LOOKUP_JOB, { caseId } satisfies PriorsLookupPayload, { key: caseId });
  }

  /** Registers the lookup's handler with the job engine (the gateway's composition root). */
  register(jobs: JobQueue): void {
    jobs.register<PriorsLookupPayload>(PRIORS_LOOKUP_JOB, (job) => this.findAndRetrieve(job.payload.caseId), {
      concurrency: 2,
      maxAttempts: 5,
      backoffBaseSeconds: 5,
      backoffMaxSeconds: 300,
    });
    jobs.register<PriorsForwardPayload>(PRIORS_FORWARD_JOB, (job) => this.forwardReadyPriors(job.payload.caseId).then(() => undefined), {
      concurrency: 2,
      maxAttempts: 100,
      backoffBaseSeconds: 1,
      backoffMaxSeconds: 60,
    });
  }

  /** The priors settings for a case: the gateway's, overridden by the first of the case's rules that has its own. */
  async policyFor(ruleIds: readonly string[]): Promise<PriorsPolicy> {
    const base = this.o.config.priors;
    const active = await this.o.rules.current();
    const override = ruleIds.map((id) => active.rules.find((r) => r.id === id)?.priors).find((p) => p !== undefined);
    return {
      maxStudies: override?.maxStudies ?? base.maxStudies,
      lookbackDays: override?.lookbackDays ?? base.lookbackDays,
      sameModality: override?.sameModality ?? base.sameModality,
    };
  }

  async findAndRetrieve(caseId: string): Promise<void> {
    const pacs = this.o.pacs;
    if (!pacs) return;
    const db = this.o.db;
    const c = await findCase(db, caseId);
    if (!c) return;
    const ruleIds = [...new Set((JSON.parse(c.reasons) as { ruleId: string }[]).map((r) => r.ruleId))];
    const policy = await this.policyFor(ruleIds);
    if (policy.maxStudies === 0) return;
    const study = await findStudy(db, c.study_instance_uid);
    const audit = async (action: string, details: Record<string, unknown>) =>
      recordAudit(db, this.o.newId(), this.clock().toISOString(), { actor: 'priors', action, entityType: 'case', entityId: caseId, details });
    if (!study?.patient_id) {
      // Without a patient id there is no one to look up: said once, on the case.
      await audit('priors.skipped', { reason: 'the study has no patient id' });
      return;
    }
    const series = await seriesOfStudies(db, [study.study_instance_uid]);
    const today = this.clock();
    let found;
    try {
      found = await pacs.findStudies({
        patientId: study.patient_id,
        issuerOfPatientId: study.issuer_of_patient_id,
        fromDate: lookbackStart(today, policy.lookbackDays),
      });
    } catch (err) {
      this.log.warn('priors: PACS query failed', { caseId, error: (err as Error).message });
      await audit('priors.query-failed', { error: (err as Error).message });
      return;
    }
    const { selected, rejected } = selectRelevantPriors(
      {
        studyInstanceUid: study.study_instance_uid,
        patientId: study.patient_id,
        issuerOfPatientId: study.issuer_of_patient_id,
        studyDate: study.study_date,
        modalities: [...new Set(series.flatMap((s) => (s.modality ? [s.modality] : [])))],
        bodyParts: [...new Set(series.flatMap((s) => (s.body_part_examined ? [s.body_part_examined] : [])))],
        procedureCodes: await procedureCodesOfStudy(db, study.study_instance_uid),
      },
      found,
      policy,
      today,
    );
    const now = this.clock().toISOString();
    // Recorded before anything is retrieved: an arriving instance of a prior is known as one from its first byte.
    await db.transaction().execute(async (trx) => {
      await insertFoundPriors(trx, caseId, selected, now);
      const byReason: Record<string, number> = {};
      for (const r of rejected) byReason[r.reason] = (byReason[r.reason] ?? 0) + 1;
      await recordAudit(trx, this.o.newId(), now, {
        actor: 'priors',
        action: 'priors.found',
        entityType: 'case',
        entityId: caseId,
        details: { answered: found.length, relevant: selected.length, leftOut: byReason, policy },
      });
    });
    this.log.info('priors found', { caseId, answered: found.length, relevant: selected.length });

    for (const prior of selected) {
      const uid = prior.studyInstanceUid;
      const local = await localInstanceCount(db, uid);
      if (local !== undefined && prior.numberOfInstances !== null && local >= prior.numberOfInstances) {
        await db.transaction().execute(async (trx) => {
          await setPriorState(trx, caseId, uid, PriorState.retrieved, 'already in the gateway', this.clock().toISOString());
          await this.enqueueForward(trx, caseId);
        });
        continue;
      }
      await setPriorState(db, caseId, uid, PriorState.retrieving, null, this.clock().toISOString());
      const outcome = await pacs
        .retrieveStudy(uid, (bytes) => this.ingest(bytes))
        .catch((err: unknown) => ({ completed: 0, failed: 0, error: (err as Error).message }));
      const at = this.clock().toISOString();
      if (outcome.error || outcome.failed > 0) {
        const detail = `${outcome.error ?? 'retrieve failed'} (${outcome.completed} retrieved, ${outcome.failed} failed)`;
        await db.transaction().execute(async (trx) => {
          await setPriorState(trx, caseId, uid, PriorState.failed, detail, at);
          await recordAudit(trx, this.o.newId(), at, {
            actor: 'priors',
            action: 'prior.retrieve-failed',
            entityType: 'case',
            entityId: caseId,
            details: { studyInstanceUid: uid, detail },
          });
        });
        this.log.warn('prior not retrieved', { caseId, studyUid: hashId(uid), error: outcome.error });
        continue;
      }
      await db.transaction().execute(async (trx) => {
        await setPriorState(trx, caseId, uid, PriorState.retrieved, `${outcome.completed} instances`, at);
        await this.enqueueForward(trx, caseId);
        await recordAudit(trx, this.o.newId(), at, {
          actor: 'priors',
          action: 'prior.retrieved',
          entityType: 'case',
          entityId: caseId,
          details: { studyInstanceUid: uid, instances: outcome.completed },
        });
      });
      this.log.info('prior retrieved', { caseId, studyUid: hashId(uid), instances: outcome.completed });
    }
  }

  /** A WADO-RS instance into the normal ingest: spool tmp file, header, StudyService (synced and committed there). */
  private async ingest(bytes: Buffer): Promise<void> {
    const header = await readPart10Header(bytes);
    const tmpPath = this.o.spool.newTmpPath();
    await writeFile(tmpPath, bytes);
    try {
      await this.o.sink.storeInstance({
        ...header,
        tmpPath,
        sizeBytes: bytes.length,
        sha256: createHash('sha256').update(bytes).digest('hex'),
        callingAe: WADO_CALLING_AE,
      });
    } catch (err) {
      this.o.spool.discard(tmpPath);
      throw err;
    }
  }

  /** Plans a delivery for every retrieved, stable prior beside the case's own delivery (every case's when absent). Returns how many. */
  async forwardReadyPriors(caseId?: string): Promise<number> {
    let planned = 0;
    for (const p of await priorsReadyToForward(this.o.db, caseId)) {
      const now = this.clock().toISOString();
      try {
        await this.o.db.transaction().execute(async (trx) => {
          const deliveryId = this.o.newId();
          const instances = await insertDelivery(trx, {
            id: deliveryId,
            caseId: p.case_id,
            destinationId: p.destination_id,
            studyInstanceUid: p.study_instance_uid,
            deidentify: p.deidentify === 1,
            now,
          });
          await this.o.deliveryPlanned?.(trx, deliveryId, p.destination_id);
          await recordAudit(trx, this.o.newId(), now, {
            actor: 'priors',
            action: 'prior.forward-planned',
            entityType: 'case',
            entityId: p.case_id,
            details: { studyInstanceUid: p.study_instance_uid, destinationId: p.destination_id, instances },
          });
        });
        planned++;
        this.log.info('prior delivery planned', { caseId: p.case_id, studyUid: hashId(p.study_instance_uid), destinationId: p.destination_id });
      } catch (err) {
        // another instance planned it first (unique case, destination, study): nothing to do
        this.log.debug('prior delivery not planned', { caseId: p.case_id, error: (err as Error).message });
      }
    }
    return planned;
  }
}
