import type { GatewayConfig } from './config/schema.js';
import { migrateToLatest, openDatabase, type Db, type OpenedDatabase } from './db/database.js';
import { DicomScp } from './dicom/scp.js';
import { Spool } from './dicom/spool.js';
import { Hl7InboundService, RECONCILE_STUDY_JOB } from './hl7/inbound.service.js';
import { hl7StudyEnricher } from './hl7/hl7.enricher.js';
import { MllpServer } from './hl7/mllp-server.js';
import { messagesRouter } from './http/messages.routes.js';
import { HttpServer } from './http/server.js';
import { failedLoginAuditor, loginAuditor } from './http/auth-audit.js';
import { studyQueryAuditor } from './audit/query-audit.js';
import { studiesRouter } from './http/studies.routes.js';
import { studyActionsRouter } from './http/study-actions.routes.js';
import { auditRouter } from './http/audit.routes.js';
import { casesRouter } from './http/cases.routes.js';
import { rulesRouter } from './http/rules.routes.js';
import { caseActionsRouter } from './http/case-actions.routes.js';
import { dashboardRouter } from './http/dashboard.routes.js';
import { meRouter } from './http/me.routes.js';
import { messageActionsRouter } from './http/message-actions.routes.js';
import { statsRouter } from './http/stats.routes.js';
import { createLogger, type Logger } from './logger.js';
import { CaseService } from './cases/case.service.js';
import { createIdSource } from './db/sortable-id.js';
import { decisionStudyEnricher } from './rules/decision.enricher.js';
import { DecisionService } from './rules/decision.service.js';
import { enqueueEvaluation, EVALUATE_JOB, type EvaluationJobPayload } from './rules/evaluation.job.js';
import { EvaluationTrigger } from './states.js';
import { RulesService } from './rules/rules.service.js';
import { deidPort } from './forwarding/deid-port.js';
import { type DestinationSender } from './forwarding/destination.js';
import { createDestinationSender } from './forwarding/destination.factory.js';
import { enqueueForwardingPlan, ForwardingService } from './forwarding/forwarding.service.js';
import { ensureSetting } from './rules/rules.repository.js';
import { GatewayMetrics } from './metrics.js';
import { randomBytes } from 'node:crypto';
import tls from 'node:tls';
import { clientTlsOptions, type TlsClientConfig } from './tls.js';
import { createControlIdSource } from './hl7/ack.js';
import { MllpSender } from './hl7/mllp-sender.js';
import { ReaderService, SLA_CHECK_JOB } from './readers/reader.service.js';
import { OUTBOUND_SEND_JOB, OutboundService, type OutboundJobPayload } from './reports/outbound.service.js';
import { SecondReportService } from './reports/second-report.service.js';
import { OutputsService } from './outputs/outputs.service.js';
import { ArbitrationService } from './reports/arbitration.service.js';
import { arbitrationRouter } from './http/arbitration.routes.js';
import { StudyService } from './studies/study.service.js';
import { MppsService } from './studies/mpps.service.js';
import { completenessStudyEnricher } from './studies/completeness.enricher.js';
import { createPacsClient } from './priors/pacs.client.js';
import { PriorsService } from './priors/priors.service.js';
import { InstanceService } from './instances/instance.service.js';
import { instancesRouter } from './http/instances.routes.js';
import { AtnaService } from './audit/atna.service.js';
import { StatusUpdateService } from './reports/status-update.service.js';
import { recordAudit } from './audit/audit.repository.js';
import { JobRunner } from './jobs/job-runner.js';
import { DicomwebService } from './dicomweb/dicomweb.service.js';
import { dicomwebRouter } from './dicomweb/dicomweb.routes.js';
import { StowService } from './dicomweb/stow.service.js';

export interface GatewayOptions {
  logger?: Logger;
  /** Without `logger`: where the logger built from `config.log` writes instead of the console (tests capture it). */
  logSink?: NodeJS.WritableStream;
}

export interface Gateway {
  readonly config: Readonly<GatewayConfig>;
  readonly logger: Logger;
  readonly db: Db;
  readonly studies: StudyService;
  /** The MPPS port the DICOM listener hands N-CREATE / N-SET to. */
  readonly mpps: MppsService;
  readonly hl7: Hl7InboundService;
  readonly rules: RulesService;
  readonly decisions: DecisionService;
  readonly cases: CaseService;
  readonly forwarding: ForwardingService;
  readonly priors: PriorsService;
  readonly readers: ReaderService;
  readonly outbound: OutboundService;
  readonly reports: SecondReportService;
  readonly arbitration: ArbitrationService;
  readonly metrics: GatewayMetrics;
  /** IHE ATNA: the audit trail copied to `audit.syslog`. */
  readonly atna: AtnaService;
  /** The one durable job engine: services enqueue in their transactions; kinds are registered here. */
  readonly jobs: JobRunner;
  /** The express app when HTTP is enabled (the OpenAPI test walks its routes). */
  readonly httpApp: HttpServer['app'] | undefined;
  /** Bound ports (useful when the config asked for port 0). */
  ports(): { dicom: number; hl7: number; http: number; dicomTls: number; hl7Tls: number; https: number };
  start(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * The composition root: every component is built here and handed what it
 * needs. Nothing else opens the database or reads the config.
 */
export function createGateway(config: Readonly<GatewayConfig>, options: GatewayOptions = {}): Gateway {
  const logger = options.logger ?? createLogger(config.log, options.logSink);
  const log = logger.child({ component: 'gateway' });
  let started = false;
  const opened: OpenedDatabase = openDatabase(config.database.url, {
    sqliteCacheMb: config.database.sqliteCacheMb,
    postgresNamedStatements: config.database.postgresNamedStatements,
  });
  const db = opened.db;

  // Built first: the listeners count their guard refusals in it.
  const metrics = new GatewayMetrics(db, config.instanceId);
  // Every background task is a job of a kind registered below, run under a lease on the database's clock.
  const jobs = new JobRunner({ db, logger, workerId: config.instanceId, metrics, commits: opened.commits });
  const atna = new AtnaService({ db, logger, config, jobs });
  const instances = new InstanceService({ db, logger, instanceId: config.instanceId, leaseSeconds: config.forwarding.leaseSeconds });
  // Instances sharing PostgreSQL share the spool too (README: Several instances): each receives into its own tmp/<instanceId>/.
  const spool = new Spool(config.storage.dir, config.storage.minFreeMb * 1024 * 1024, opened.dialect === 'postgres' ? config.instanceId : undefined);
  const studies = new StudyService({
    db,
    spool,
    logger,
    stableAfterSeconds: config.dicom.stableAfterSeconds,
    // Stability is a job per study episode, enqueued with the instance that starts it.
    jobs,
    // Follow-up work is a job enqueued in the transaction of the change that calls for it, never an in-memory event.
    hooks: {
      // Orders and reports that arrived before their study link as soon as it exists.
      studyCreated: (trx, uid) => jobs.enqueue(trx, RECONCILE_STUDY_JOB, { studyUid: uid }, { key: uid }),
      // The rules run when the study is complete, and its flagged cases and late instances are planned for forwarding ...
      stable: async (trx, uid) => {
        await enqueueEvaluation(jobs, trx, uid, EvaluationTrigger.stable);
        await enqueueForwardingPlan(jobs, trx, { studyUid: uid });
        // ... and, where it is a case's retrieved prior, forwarded beside that case (priors is built below; called only once running).
        await priors.priorStudyStable(trx, uid);
      },
    },
  });
  studies.register();
  const newId = createIdSource();
  // A step that ended may make its study complete before the quiet period.
  const mpps = new MppsService({ db, logger, newId, onStepEnded: (uid) => studies.checkCompleteness(uid).then(() => undefined) });
  const scp = config.dicom.enabled ? new DicomScp({ config: config.dicom, sink: studies, spool, logger, guards: metrics, mpps }) : undefined;
  const rules = new RulesService({ db, logger, config, newId });
  // A prior's planned delivery enqueues its sending job with forwarding (built below; called only once running).
  const priors = new PriorsService({
    db,
    logger,
    config,
    pacs: config.pacs ? createPacsClient(config.pacs, { callingAeTitle: config.dicom.aeTitle, logger }) : undefined,
    rules,
    sink: studies,
    spool,
    newId,
    jobs,
    deliveryPlanned: (trx, deliveryId, destinationId): Promise<void> => forwarding.enqueueDelivery(trx, deliveryId, destinationId),
  });
  priors.register(jobs);
  const decisions = new DecisionService({
    db,
    logger,
    rules,
    config,
    newId,
    jobs,
    // A new case: its priors are looked up and its deliveries planned, each a job enqueued with the case.
    onCaseOpened: async (trx, caseId) => {
      await priors.enqueueLookup(trx, caseId);
      await enqueueForwardingPlan(jobs, trx, { caseId });
    },
  });
  const cases = new CaseService({ db, decisions, knownDestinations: config.destinations.map((d) => d.id), newId });
  const senders = new Map<string, DestinationSender>(
    config.destinations.map((d) => [d.id, createDestinationSender(d, { callingAeTitle: config.dicom.aeTitle, logger })]),
  );
  const destinationHealth = new Map<string, { ok: boolean; detail: string }>();
  let pseudonymSecret = '';
  const newControlId = createControlIdSource('SR');
  const mllpSender = ({ host, port, tls: secure }: { host: string; port: number; tls?: TlsClientConfig | undefined }) =>
    new MllpSender({
      host,
      port,
      ackTimeoutMs: config.writeBack.ackTimeoutSeconds * 1000,
      connectTimeoutMs: 10_000,
      logger,
      // The sender writes only after 'secureConnect', i.e. once the RIS certificate is verified.
      ...(secure ? { connect: () => tls.connect(clientTlsOptions(secure, host, port)) } : {}),
    });
  const outbound = new OutboundService({
    db,
    logger,
    config,
    ris: mllpSender(config.hl7.ris),
    qa: config.escalation.hl7 ? mllpSender(config.escalation.hl7) : undefined,
    pools: new Map(config.destinations.flatMap((d) => (d.hl7 ? [[d.id, mllpSender(d.hl7)] as const] : []))),
    newId,
    newControlId,
    jobs,
  });
  outbound.register();
  jobs.register<OutboundJobPayload>(OUTBOUND_SEND_JOB, (job) => outbound.runJob(job), { concurrency: 4, leaseSeconds: config.forwarding.leaseSeconds });
  const statusUpdates = new StatusUpdateService({ db, logger, config, jobs, outbound, newControlId });
  const readers = new ReaderService({ db, logger, config, newId, notify: outbound.notify });
  jobs.recurring(SLA_CHECK_JOB, config.sla.checkIntervalSeconds, () => readers.checkSla());
  // The second read as DICOM SR/KOS and FHIR: jobs enqueued with the report, run by the job engine.
  const outputs = new OutputsService({ db, logger, config, newId, jobs, senders });
  outputs.register(jobs);
  const reports = new SecondReportService({ db, logger, config, outbound, newId, newControlId, outputs });
  const poolSenders = config.destinations.flatMap((d) => (d.hl7Sender ? [d.hl7Sender] : []));
  const hl7 = new Hl7InboundService({
    db,
    config: config.hl7,
    logger,
    // The same watermark as C-STORE: below it a message is answered AE and not stored.
    hasRoom: () => spool.hasRoom(),
    guards: metrics,
    // The pool's second reports arrive over HL7 too.
    secondReports: { poolSenders, apply: (trx, item, from) => reports.applyFromHl7(trx, item, from) },
    // ... and again whenever what they read changes.
    linked: (trx, uid) => enqueueEvaluation(jobs, trx, uid, EvaluationTrigger.hl7),
  });
  const arbitration = new ArbitrationService({ db, logger, config, readers, reports, outbound, newId, outputs });
  const forwarding = new ForwardingService({
    db,
    logger,
    config,
    spool,
    senders,
    deid: deidPort,
    pseudonymSecret: () => pseudonymSecret,
    newId,
    jobs,
    metrics,
    // With gateway assignment the reader is chosen before forwarding, so the study goes to the reader's destination.
    assignReader: readers.assigns
      ? async (trx, c) => {
          const r = await readers.assign(trx, c, 'readers', 'new case');
          return r.ok ? { ok: true, destinationId: readers.destinationOf(r.readerId) } : r;
        }
      : undefined,
    // A case's priors go out beside its own delivery: planned by a job enqueued with that delivery.
    casePlanned: (trx, caseId): Promise<void> => priors.enqueueForward(trx, caseId),
  });
  // One job per delivery, queued per destination (forwarding.service.ts, register).
  forwarding.register();
  // Retried until they succeed (a database error must not lose a decision); a new case's planning job is enqueued with it.
  jobs.register<EvaluationJobPayload>(EVALUATE_JOB, (job) => decisions.runJob(job).then(() => undefined), {
    concurrency: 2,
    maxAttempts: 100,
    backoffBaseSeconds: 1,
    backoffMaxSeconds: 300,
  });
  jobs.register<{ studyUid: string }>(RECONCILE_STUDY_JOB, async (job) => hl7.reconcileStudy(job.payload.studyUid), {
    maxAttempts: 100,
    backoffBaseSeconds: 1,
    backoffMaxSeconds: 300,
  });
  const mllp = config.hl7.enabled
    ? new MllpServer({
        host: config.hl7.host,
        port: config.hl7.port,
        plain: config.hl7.plain,
        tls: config.hl7.tls,
        maxMessageBytes: config.hl7.maxMessageBytes,
        idleTimeoutSeconds: config.hl7.idleTimeoutSeconds,
        maxConnections: config.hl7.maxConnections,
        maxConnectionsPerPeer: config.hl7.maxConnectionsPerPeer,
        guards: metrics,
        handler: hl7.handle,
        failureReply: hl7.failureReply,
        logger,
      })
    : undefined;
  const auditQuery = studyQueryAuditor(db, newId);
  const http = config.http.enabled
    ? new HttpServer({
        config: config.http,
        guards: metrics,
        tokens: config.auth.tokens,
        auth: {
          maxFailedPerMinute: config.auth.maxFailedPerMinute,
          onFailure: failedLoginAuditor(db, newId, logger),
          onSuccess: loginAuditor(db, newId, logger),
        },
        logger,
        health: () => ({ ok: started, details: { instanceId: config.instanceId, destinations: Object.fromEntries(destinationHealth) } }),
        metrics: async () => ({ contentType: metrics.registry.contentType, body: await metrics.registry.metrics() }),
        apiRouters: [
          studiesRouter(db, [hl7StudyEnricher, decisionStudyEnricher, completenessStudyEnricher], auditQuery),
          messagesRouter(db),
          casesRouter(db, { cases, forwarding, reports, readers }),
          rulesRouter(db, rules, { aiSenders: config.hl7.aiSenders }),
          auditRouter(db),
          instancesRouter(instances),
          meRouter(config.readers),
          dashboardRouter(db),
          statsRouter(db),
          caseActionsRouter(db, { readers, outbound, newId }),
          arbitrationRouter(db, arbitration, newId),
          messageActionsRouter(db, newId),
          studyActionsRouter(db, studies),
        ],
        // STOW-RS stores through the same sink as C-STORE; QIDO/WADO de-identify for readers with forwarding's engine.
        dicomwebRouter: dicomwebRouter(
          new DicomwebService({
            db,
            spool,
            logger,
            deid: deidPort,
            deidentification: config.forwarding.deidentification,
            pseudonymSecret: () => pseudonymSecret,
          }),
          new StowService({ sink: studies, spool, logger, maxHeaderBytes: config.dicom.maxHeaderBytes }),
          auditQuery,
        ),
      })
    : undefined;

  metrics.watchLimits(
    {
      'dicom.maxAssociations': config.dicom.maxAssociations,
      'dicom.maxConnectionsPerPeer': config.dicom.maxConnectionsPerPeer,
      'dicom.maxPduBytes': config.dicom.maxPduBytes,
      'dicom.maxPduLength': config.dicom.maxPduLength,
      'dicom.idleTimeoutSeconds': config.dicom.idleTimeoutSeconds,
      'hl7.maxConnections': config.hl7.maxConnections,
      'hl7.maxConnectionsPerPeer': config.hl7.maxConnectionsPerPeer,
      'hl7.maxMessageBytes': config.hl7.maxMessageBytes,
      'hl7.idleTimeoutSeconds': config.hl7.idleTimeoutSeconds,
      'http.maxBodyBytes': config.http.maxBodyBytes,
      'http.idleTimeoutSeconds': config.http.idleTimeoutSeconds,
      'http.headersTimeoutSeconds': config.http.headersTimeoutSeconds,
      'http.requestTimeoutSeconds': config.http.requestTimeoutSeconds,
      'storage.minFreeMb': config.storage.minFreeMb,
    },
    {
      'dicom.associations': () => scp?.associationCount ?? 0,
      'dicom.connections': () => scp?.connectionCount ?? 0,
      'hl7.connections': () => mllp?.connectionCount ?? 0,
      'http.connections': () => http?.connectionCount ?? 0,
    },
  );

  const stoppers: (() => Promise<void> | void)[] = [];

  return {
    config,
    logger,
    db,
    studies,
    mpps,
    hl7,
    rules,
    decisions,
    cases,
    forwarding,
    priors,
    readers,
    outbound,
    reports,
    arbitration,
    metrics,
    atna,
    jobs,
    httpApp: http?.app,
    ports: () => ({
      dicom: scp?.port ?? 0,
      hl7: mllp?.port ?? 0,
      http: http?.port ?? 0,
      dicomTls: scp?.tlsPort ?? 0,
      hl7Tls: mllp?.tlsPort ?? 0,
      https: http?.tlsPort ?? 0,
    }),
    async start() {
      try {
        if (config.log.phi) log.warn('log.phi is on: debug lines carry patient identifiers and report text; turn it off once troubleshooting is done');
        stoppers.push(() => opened.close());
        const applied = await migrateToLatest(db);
        if (applied.length > 0) log.info('database migrated', { applied });
        // First in, last out: the audit trail is copied to the repository until everything else has stopped.
        await atna.init();
        await statusUpdates.init();
        if (atna.enabled) {
          stoppers.push(async () => {
            await recordAudit(db, newId(), new Date().toISOString(), {
              actor: 'gateway',
              action: 'gateway.stopped',
              entityType: 'gateway',
              entityId: config.instanceId,
            });
            await atna.stop();
          });
        }
        await rules.init();
        pseudonymSecret = await ensureSetting(db, 'pseudonym-secret', randomBytes(32).toString('hex'), new Date().toISOString());
        // Registered before any claim is taken, so the console can always name a claim's owner.
        await instances.start();
        stoppers.push(() => instances.stop());
        // Forwarding work from before planning was a job gets its jobs (no loop: jobs are enqueued with their changes).
        await forwarding.start();
        stoppers.push(() => outbound.stop());
        stoppers.push(async () => {
          for (const s of senders.values()) await s.close?.();
        });
        stoppers.push(() => outputs.close());
        // After the senders' closer, so jobs under way finish before the connections they use close.
        await jobs.start();
        stoppers.push(() => jobs.stop());
        // Reachability is reported, never a reason not to start: the queue holds the work until the pool is back.
        for (const [id, sender] of senders) {
          void sender.verify().then((h) => {
            destinationHealth.set(id, h);
            if (!h.ok) log.warn('destination not reachable at start-up', { destinationId: id, detail: h.detail });
          });
        }
        const { sweptTmpFiles } = spool.open();
        if (sweptTmpFiles > 0) log.warn('removed unacknowledged partial files from an earlier run', { count: sweptTmpFiles });
        await studies.start();
        stoppers.push(() => studies.stop());
        if (scp) {
          await scp.start();
          stoppers.push(() => scp.stop());
        }
        // Ready priors from before forwarding them was a job get their jobs.
        await priors.start();
        const reconciled = await hl7.reconcileAll();
        if (reconciled > 0) log.info('linked HL7 items waiting for studies stored earlier', { studies: reconciled });
        if (mllp) {
          await mllp.start();
          stoppers.push(() => mllp.stop());
        }
        if (http) {
          await http.start();
          stoppers.push(() => http.stop());
        }
        started = true;
        if (atna.enabled) {
          await recordAudit(db, newId(), new Date().toISOString(), {
            actor: 'gateway',
            action: 'gateway.started',
            entityType: 'gateway',
            entityId: config.instanceId,
          });
        }
        log.info('gateway started', {
          instanceId: config.instanceId,
          dicomPort: scp?.port,
          hl7Port: mllp?.port,
          httpPort: http?.port,
          dicomTlsPort: scp?.tlsPort,
          hl7TlsPort: mllp?.tlsPort,
          httpsPort: http?.tlsPort,
        });
      } catch (err) {
        await this.stop();
        throw err;
      }
    },
    async stop() {
      started = false;
      // Reverse order: stop taking new work at the edges first, close the database last.
      while (stoppers.length > 0) {
        const stop = stoppers.pop()!;
        try {
          await stop();
        } catch (err) {
          log.error('error while stopping', { error: (err as Error).message });
        }
      }
    },
  };
}
