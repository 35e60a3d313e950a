/**
 * Runs one DicomScp (real SQLite file, StudyService, Spool) in its own process
 * so a benchmark can read the receiver's own peak RSS. Talks over IPC:
 * sends {port} when listening; on 'stop' it stops and sends {maxRssBytes, ...}.
 */
import path from 'node:path';
import winston from 'winston';
import { defaultConfig } from '../../src/config/schema.js';
import { migrateToLatest, openDatabase } from '../../src/db/database.js';
import { DicomScp } from '../../src/dicom/scp.js';
import { Spool } from '../../src/dicom/spool.js';
import { StudyService } from '../../src/studies/study.service.js';

async function main(): Promise<void> {
  const dir = process.argv[2];
  if (!dir || !process.send) throw new Error('usage: fork scp-process.ts <dir> (with IPC)');
  const logger = winston.createLogger({ silent: true });
  const opened = openDatabase(`sqlite:${path.join(dir, 'gateway.db')}`);
  await migrateToLatest(opened.db);
  const spool = new Spool(path.join(dir, 'spool'), 0);
  spool.open();
  const studies = new StudyService({ db: opened.db, spool, logger, stableAfterSeconds: 3600 });
  const config = { ...defaultConfig().dicom, host: '127.0.0.1', port: 0, allowedCallers: [] };
  const scp = new DicomScp({ config, sink: studies, spool, logger });
  await scp.start();
  const baseline = process.memoryUsage().rss;
  process.send({ port: scp.port, baselineRssBytes: baseline });
  process.on('message', (m) => {
    if (m !== 'stop') return;
    void (async () => {
      await scp.stop(5000);
      const rows = await opened.db.selectFrom('instances').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirst();
      await opened.close();
      // maxRSS is in kilobytes (getrusage)
      process.send?.({ maxRssBytes: process.resourceUsage().maxRSS * 1024, instances: Number(rows?.n ?? 0) }, () => process.exit(0));
    })();
  });
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
