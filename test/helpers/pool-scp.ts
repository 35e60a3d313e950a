import path from 'node:path';
import winston from 'winston';
import { defaultConfig } from '../../src/config/schema.js';
import { migrateToLatest, openDatabase, type OpenedDatabase } from '../../src/db/database.js';
import type { InstanceSink, ReceivedInstance, StoreOutcome } from '../../src/dicom/instance-record.js';
import { DicomScp } from '../../src/dicom/scp.js';
import { Spool } from '../../src/dicom/spool.js';
import { StudyService } from '../../src/studies/study.service.js';

/**
 * A reader pool's DICOM receiver for forwarding tests: our own SCP with its
 * own SQLite database and spool, counting every C-STORE it is handed (so a
 * test sees duplicates a careful receiver would mind), stoppable and
 * restartable on the same port to play "destination down, then up".
 */
export class PoolScp implements InstanceSink {
  readonly stores: { sopInstanceUid: string; studyInstanceUid: string; outcome: StoreOutcome }[] = [];
  private opened: OpenedDatabase | undefined;
  private scp: DicomScp | undefined;
  private studies: StudyService | undefined;
  port = 0;

  constructor(
    readonly dir: string,
    readonly aeTitle = 'POOL',
  ) {}

  get db() {
    if (!this.opened) throw new Error('pool not started');
    return this.opened.db;
  }

  async start(port = this.port): Promise<void> {
    this.opened ??= openDatabase(`sqlite:${path.join(this.dir, 'pool.db')}`);
    await migrateToLatest(this.opened.db);
    const spool = new Spool(path.join(this.dir, 'spool'), 0);
    spool.open();
    const logger = winston.createLogger({ silent: true });
    this.studies = new StudyService({ db: this.opened.db, spool, logger, stableAfterSeconds: 60 });
    this.scp = new DicomScp({ config: { ...defaultConfig().dicom, host: '127.0.0.1', port, aeTitle: this.aeTitle }, sink: this, spool, logger });
    await this.scp.start();
    this.port = this.scp.port;
  }

  async storeInstance(instance: ReceivedInstance): Promise<StoreOutcome> {
    const outcome = await this.studies!.storeInstance(instance);
    this.stores.push({ sopInstanceUid: instance.sopInstanceUid, studyInstanceUid: instance.studyInstanceUid, outcome });
    return outcome;
  }

  /** Stops listening (the destination is "down"); the database stays open for assertions. */
  async stop(): Promise<void> {
    await this.scp?.stop(2000);
    this.scp = undefined;
  }

  async close(): Promise<void> {
    await this.stop();
    await this.opened?.close();
    this.opened = undefined;
  }
}
