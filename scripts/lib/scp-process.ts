/**
 * Runs one DicomScp (real SQLite file, StudyService, Spool) in its own process
 * so a benchmark can read the receiver's own peak RSS. Talks over IPC:
 * sends {port} when listening; on 'stop' it stops and sends {maxRssBytes, commits (group-commit figures), ...}.
 * Usage: fork scp-process.js <dir> [maxPduLength]  (the benchmark forks its tsc output)
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import winston from 'winston';
import { defaultConfig } from '../../src/config/schema.js';
import { migrateToLatest, openDatabase } from '../../src/db/database.js';
import { DicomScp } from '../../src/dicom/scp.js';
import { Spool } from '../../src/dicom/spool.js';
import { StudyService } from '../../src/studies/study.service.js';

/**
 * This process's own peak RSS. Not getrusage's maxRSS: Linux carries it across
 * exec, so a forked child reports at least its parent's RSS at fork time (the
 * benchmark holds a 52 MB study in memory: the "303 MB" was the parent's).
 * VmHWM is the high-water mark of this process's own address space.
 */
function peakRssBytes(): number {
  try {
    const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(readFileSync('/proc/self/status', 'latin1'));
    if (m) return Number(m[1]) * 1024;
  } catch {
    // not Linux: fall back below
  }
  return process.resourceUsage().maxRSS * 1024;
}

async function main(): Promise<void> {
  const dir = process.argv[2];
  if (!dir || !process.send) throw new Error('usage: fork scp-process.ts <dir> (with IPC)');
  const logger = winston.createLogger({ silent: true });
  const opened = openDatabase(`sqlite:${path.join(dir, 'gateway.db')}`);
  await migrateToLatest(opened.db);
  const spool = new Spool(path.join(dir, 'spool'), 0);
  spool.open();
  const studies = new StudyService({ db: opened.db, spool, logger, stableAfterSeconds: 3600 });
  const dicomDefaults = defaultConfig().dicom;
  const maxPduLength = process.argv[3] ? Number(process.argv[3]) : dicomDefaults.maxPduLength;
  const config = { ...dicomDefaults, host: '127.0.0.1', port: 0, allowedCallers: [], maxPduLength };
  const scp = new DicomScp({ config, sink: studies, spool, logger });
  await scp.start();
  const baseline = process.memoryUsage().rss;
  const cpuAtReady = process.cpuUsage();
  process.send({ port: scp.port, baselineRssBytes: baseline });
  process.on('message', (m) => {
    if (m !== 'stop') return;
    void (async () => {
      await scp.stop(5000);
      const rows = await opened.db
        .selectFrom('instances')
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .executeTakeFirst();
      await opened.close();
      // CPU (user + system, all threads) spent between listening and stopping: less sensitive to other load than wall time.
      const cpu = process.cpuUsage(cpuAtReady);
      process.send?.(
        { maxRssBytes: peakRssBytes(), instances: Number(rows?.n ?? 0), cpuMs: (cpu.user + cpu.system) / 1000, commits: studies.ingestStats },
        () => process.exit(0),
      );
    })();
  });
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
