/**
 * The simulated systems around the gateway in `npm run demo`, built from the
 * gateway's own parts: the reader pool's DICOM receiver (our DicomScp with its
 * own SQLite and spool) and the QA team's webhook listener; the RIS is
 * scripts/lib/sim-ris.ts.
 */
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
    this.scp = new DicomScp({ config: { ...defaultConfig().dicom, host: '127.0.0.1', port: 0, aeTitle: this.aeTitle }, sink: this, spool, logger: this.logger });
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
