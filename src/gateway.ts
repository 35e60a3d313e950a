import type { GatewayConfig } from './config/schema.js';
import { migrateToLatest, openDatabase, type Db, type OpenedDatabase } from './db/database.js';
import { DicomScp } from './dicom/scp.js';
import { Spool } from './dicom/spool.js';
import { Hl7InboundService } from './hl7/inbound.service.js';
import { hl7StudyEnricher } from './hl7/hl7.enricher.js';
import { MllpServer } from './hl7/mllp-server.js';
import { messagesRouter } from './http/messages.routes.js';
import { HttpServer } from './http/server.js';
import { studiesRouter } from './http/studies.routes.js';
import { auditRouter } from './http/audit.routes.js';
import { casesRouter } from './http/cases.routes.js';
import { rulesRouter } from './http/rules.routes.js';
import { createLogger, type Logger } from './logger.js';
import { CaseService } from './cases/case.service.js';
import { createIdSource } from './db/sortable-id.js';
import { decisionStudyEnricher } from './rules/decision.enricher.js';
import { DecisionService } from './rules/decision.service.js';
import { EvaluationTrigger } from './states.js';
import { RulesService } from './rules/rules.service.js';
import { deidentifyPart10 } from './forwarding/deidentify.js';
import { createDestinationSender, type DestinationSender } from './forwarding/destination.js';
import { ForwardingService } from './forwarding/forwarding.service.js';
import { ensureSetting } from './rules/rules.repository.js';
import { GatewayMetrics } from './metrics.js';
import { randomBytes } from 'node:crypto';
import { createControlIdSource } from './hl7/ack.js';
import { MllpSender } from './hl7/mllp-sender.js';
import { ReaderService } from './readers/reader.service.js';
import { OutboundService } from './reports/outbound.service.js';
import { SecondReportService } from './reports/second-report.service.js';
import { StudyService } from './studies/study.service.js';

export interface GatewayOptions {
  logger?: Logger;
}

export interface Gateway {
  readonly config: Readonly<GatewayConfig>;
  readonly logger: Logger;
  readonly db: Db;
  readonly studies: StudyService;
  readonly hl7: Hl7InboundService;
  readonly rules: RulesService;
  readonly decisions: DecisionService;
  readonly cases: CaseService;
  readonly forwarding: ForwardingService;
  readonly readers: ReaderService;
  readonly outbound: OutboundService;
  readonly reports: SecondReportService;
  readonly metrics: GatewayMetrics;
  /** Bound ports (useful when the config asked for port 0). */
  ports(): { dicom: number; hl7: number; http: number };
  start(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * The composition root: every component is built here and handed what it
 * needs. Nothing else opens the database or reads the config.
 */
export function createGateway(config: Readonly<GatewayConfig>, options: GatewayOptions = {}): Gateway {
  const logger = options.logger ?? createLogger(config.log);
  const log = logger.child({ component: 'gateway' });
  let started = false;
  const opened: OpenedDatabase = openDatabase(config.database.url);
  const db = opened.db;

  const spool = new Spool(config.storage.dir, config.storage.minFreeMb * 1024 * 1024);
  const studies = new StudyService({ db, spool, logger, stableAfterSeconds: config.dicom.stableAfterSeconds });
  const scp = config.dicom.enabled ? new DicomScp({ config: config.dicom, sink: studies, spool, logger }) : undefined;
  // The pool's second reports arrive over HL7 too; the service that stores them is built below (late-bound).
  let reportsRef: SecondReportService | undefined;
  const poolSenders = config.destinations.flatMap((d) => (d.hl7Sender ? [d.hl7Sender] : []));
  const hl7 = new Hl7InboundService({
    db,
    config: config.hl7,
    logger,
    secondReports: { poolSenders, apply: (trx, item, from) => reportsRef!.applyFromHl7(trx, item, from) },
  });
  // Orders and reports that arrived before their study link as soon as it exists.
  studies.subscribe({ onStudyCreated: (uid) => hl7.reconcileStudy(uid) });
  const newId = createIdSource();
  const rules = new RulesService({ db, logger, config, newId });
  const decisions = new DecisionService({ db, logger, rules, config, newId });
  const cases = new CaseService({ db, decisions, knownDestinations: config.destinations.map((d) => d.id), newId });
  const metrics = new GatewayMetrics(db, config.instanceId ?? 'gateway');
  const senders = new Map<string, DestinationSender>(
    config.destinations.map((d) => [d.id, createDestinationSender(d, { callingAeTitle: config.dicom.aeTitle, logger })]),
  );
  const destinationHealth = new Map<string, { ok: boolean; detail: string }>();
  let pseudonymSecret = '';
  const newControlId = createControlIdSource('SR');
  const mllpSender = (target: { host: string; port: number }) =>
    new MllpSender({ ...target, ackTimeoutMs: config.writeBack.ackTimeoutSeconds * 1000, connectTimeoutMs: 10_000, logger });
  const outbound = new OutboundService({
    db,
    logger,
    config,
    ris: mllpSender(config.hl7.ris),
    qa: config.escalation.hl7 ? mllpSender(config.escalation.hl7) : undefined,
    newId,
    newControlId,
  });
  const readers = new ReaderService({ db, logger, config, newId, notify: outbound.notify });
  const reports = new SecondReportService({ db, logger, config, outbound, newId, newControlId });
  reportsRef = reports;
  const forwarding = new ForwardingService({
    db,
    logger,
    config,
    spool,
    senders,
    deidentify: deidentifyPart10,
    pseudonymSecret: () => pseudonymSecret,
    newId,
    metrics,
    // With gateway assignment the reader is chosen before forwarding, so the study goes to the reader's destination.
    assignReader: readers.assigns
      ? async (trx, c) => {
          const r = await readers.assign(trx, c, 'readers', 'new case');
          return r.ok ? { ok: true, destinationId: readers.destinationOf(r.readerId) } : r;
        }
      : undefined,
  });
  // The rules run when the study is complete and again whenever what they read changes; a new case is forwarded at once.
  studies.subscribe({ onStable: (uid) => decisions.evaluateStudy(uid, EvaluationTrigger.stable).then(() => forwarding.kick()) });
  hl7.subscribe({ onLinked: (uid) => decisions.evaluateStudy(uid, EvaluationTrigger.hl7).then(() => forwarding.kick()) });
  const mllp = config.hl7.enabled
    ? new MllpServer({
        host: config.hl7.host,
        port: config.hl7.port,
        maxMessageBytes: config.hl7.maxMessageBytes,
        idleTimeoutSeconds: config.hl7.idleTimeoutSeconds,
        maxConnections: config.hl7.maxConnections,
        handler: hl7.handle,
        failureReply: hl7.failureReply,
        logger,
      })
    : undefined;
  const http = config.http.enabled
    ? new HttpServer({
        config: config.http,
        tokens: config.auth.tokens,
        logger,
        health: () => ({ ok: started, details: { instanceId: config.instanceId, destinations: Object.fromEntries(destinationHealth) } }),
        metrics: async () => ({ contentType: metrics.registry.contentType, body: await metrics.registry.metrics() }),
        apiRouters: [
          studiesRouter(db, [hl7StudyEnricher, decisionStudyEnricher]),
          messagesRouter(db),
          casesRouter(db, { cases, forwarding, reports, readers }),
          rulesRouter(db, rules),
          auditRouter(db),
        ],
      })
    : undefined;

  const stoppers: (() => Promise<void> | void)[] = [];

  return {
    config,
    logger,
    db,
    studies,
    hl7,
    rules,
    decisions,
    cases,
    forwarding,
    readers,
    outbound,
    reports,
    metrics,
    ports: () => ({ dicom: scp?.port ?? 0, hl7: mllp?.port ?? 0, http: http?.port ?? 0 }),
    async start() {
      try {
        stoppers.push(() => opened.close());
        const applied = await migrateToLatest(db);
        if (applied.length > 0) log.info('database migrated', { applied });
        await rules.init();
        // Evaluations under way finish before the database closes.
        stoppers.push(() => decisions.idle());
        pseudonymSecret = await ensureSetting(db, 'pseudonym-secret', randomBytes(32).toString('hex'), new Date().toISOString());
        forwarding.start();
        stoppers.push(() => forwarding.stop());
        outbound.start();
        stoppers.push(() => outbound.stop());
        readers.start();
        stoppers.push(() => readers.stop());
        stoppers.push(async () => {
          for (const s of senders.values()) await s.close?.();
        });
        // Reachability is reported, never a reason not to start: the queue holds the work until the pool is back.
        for (const [id, sender] of senders) {
          void sender.verify().then((h) => {
            destinationHealth.set(id, h);
            if (!h.ok) log.warn('destination not reachable at start-up', { destinationId: id, detail: h.detail });
          });
        }
        const { sweptTmpFiles } = spool.open();
        if (sweptTmpFiles > 0) log.warn('removed unacknowledged partial files from an earlier run', { count: sweptTmpFiles });
        studies.start();
        stoppers.push(() => studies.stop());
        if (scp) {
          await scp.start();
          stoppers.push(() => scp.stop());
        }
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
        log.info('gateway started', { instanceId: config.instanceId, dicomPort: scp?.port, hl7Port: mllp?.port, httpPort: http?.port });
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
