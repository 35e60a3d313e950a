/**
 * The simulated systems around the gateway in `npm run demo`, built from the
 * gateway's own parts: the reader pool's DICOM receiver (our DicomScp with its
 * own SQLite and spool; the hospital PACS that receives the SR is another
 * one), the QA team's webhook listener, a FHIR server that counts the
 * DiagnosticReports posted to it, and a UDP syslog audit repository (ATNA);
 * the RIS is scripts/lib/sim-ris.ts.
 */
import dgram from 'node:dgram';
import http from 'node:http';
import path from 'node:path';
import { defaultConfig } from '../../src/config/schema.js';
import { migrateToLatest, openDatabase, type OpenedDatabase } from '../../src/db/database.js';
import type { InstanceSink, ReceivedInstance, StoreOutcome } from '../../src/dicom/instance-record.js';
import { DicomScp } from '../../src/dicom/scp.js';
import { Spool } from '../../src/dicom/spool.js';
import type { Logger } from '../../src/logger.js';
import { StudyService } from '../../src/studies/study.service.js';

/** The reader pool's archive: a C-STORE SCP that stores what the gateway forwards and counts it. */
export class DemoPool implements InstanceSink {
  private opened: OpenedDatabase | undefined;
  private scp: DicomScp | undefined;
  private studies: StudyService | undefined;
  private readonly studyUids = new Set<string>();
  instances = 0;
  duplicates = 0;
  port = 0;

  constructor(
    private readonly dir: string,
    private readonly logger: Logger,
    readonly aeTitle = 'POOL',
  ) {}

  get studiesReceived(): number {
    return this.studyUids.size;
  }

  async start(): Promise<void> {
    this.opened = openDatabase(`sqlite:${path.join(this.dir, 'pool.db')}`);
    await migrateToLatest(this.opened.db);
    const spool = new Spool(path.join(this.dir, 'spool'), 0);
    spool.open();
    this.studies = new StudyService({ db: this.opened.db, spool, logger: this.logger, stableAfterSeconds: 3600 });
    this.scp = new DicomScp({
      config: { ...defaultConfig().dicom, host: '127.0.0.1', port: 0, aeTitle: this.aeTitle },
      sink: this,
      spool,
      logger: this.logger,
    });
    await this.scp.start();
    this.port = this.scp.port;
  }

  async storeInstance(instance: ReceivedInstance): Promise<StoreOutcome> {
    const outcome = await this.studies!.storeInstance(instance);
    if (outcome === 'duplicate') this.duplicates++;
    else this.instances++;
    this.studyUids.add(instance.studyInstanceUid);
    return outcome;
  }

  async stop(): Promise<void> {
    await this.scp?.stop(2000);
    this.scp = undefined;
    await this.opened?.close();
    this.opened = undefined;
  }
}

/** The QA team's escalation webhook: counts events by their `event` field. */
export class DemoWebhook {
  readonly events = new Map<string, number>();
  private server: http.Server | undefined;
  port = 0;

  get total(): number {
    let n = 0;
    for (const v of this.events.values()) n += v;
    return n;
  }

  async start(): Promise<void> {
    this.server = http.createServer((req, res) => {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (d: string) => (body += d));
      req.on('end', () => {
        try {
          const event = String((JSON.parse(body) as { event?: unknown }).event ?? 'unknown');
          this.events.set(event, (this.events.get(event) ?? 0) + 1);
          res.writeHead(204).end();
        } catch {
          res.writeHead(400).end();
        }
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as { port: number }).port;
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }
}

/** A FHIR R4 server's transaction endpoint: counts the DiagnosticReports and Observations posted in Bundles, answers 200. */
export class DemoFhirServer {
  diagnosticReports = 0;
  observations = 0;
  refused = 0;
  private server: http.Server | undefined;
  port = 0;

  async start(): Promise<void> {
    this.server = http.createServer((req, res) => {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (d: string) => (body += d));
      req.on('end', () => {
        try {
          const bundle = JSON.parse(body) as { resourceType?: string; entry?: { resource?: { resourceType?: string } }[] };
          if (bundle.resourceType !== 'Bundle') throw new Error('not a Bundle');
          const entries = bundle.entry ?? [];
          this.diagnosticReports += entries.filter((e) => e.resource?.resourceType === 'DiagnosticReport').length;
          this.observations += entries.filter((e) => e.resource?.resourceType === 'Observation').length;
          res
            .writeHead(200, { 'content-type': 'application/fhir+json' })
            .end(JSON.stringify({ resourceType: 'Bundle', type: 'transaction-response', entry: entries.map(() => ({ response: { status: '201 Created' } })) }));
        } catch {
          this.refused++;
          res
            .writeHead(400, { 'content-type': 'application/fhir+json' })
            .end(JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'invalid' }] }));
        }
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as { port: number }).port;
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }
}

/** An ATNA audit record repository over UDP (RFC 5426): counts the RFC 5424 messages by their DICOM EventID. */
export class DemoAuditRepository {
  /** EventID code (110100 Application Activity, 110104 Instances Transferred...) -> messages. */
  readonly events = new Map<string, number>();
  private socket: dgram.Socket | undefined;
  port = 0;

  get total(): number {
    let n = 0;
    for (const v of this.events.values()) n += v;
    return n;
  }

  async start(): Promise<void> {
    const socket = dgram.createSocket('udp4');
    socket.on('message', (buf) => {
      const text = buf.toString('utf8');
      // <PRI>1 TIMESTAMP HOST APP PROCID MSGID ... then the A.5 audit message.
      if (!/^<\d{1,3}>1 /.test(text)) return;
      const id = /<EventID\b[^>]*csd-code="(\d+)"/.exec(text)?.[1] ?? 'other';
      this.events.set(id, (this.events.get(id) ?? 0) + 1);
    });
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
    this.socket = socket;
    this.port = socket.address().port;
  }

  async stop(): Promise<void> {
    const s = this.socket;
    this.socket = undefined;
    if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
  }
}
