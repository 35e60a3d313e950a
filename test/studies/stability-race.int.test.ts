import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { expect } from 'chai';
import { sql } from 'kysely';
import winston from 'winston';
import type { OpenedDatabase } from '../../src/db/database.js';
import type { ReceivedInstance } from '../../src/dicom/instance-record.js';
import { Spool } from '../../src/dicom/spool.js';
import { JobRunner } from '../../src/jobs/job-runner.js';
import { jobsOf } from '../../src/jobs/job.repository.js';
import { findStudy } from '../../src/studies/study.repository.js';
import { lockForStability, markOneStable } from '../../src/studies/stability.repository.js';
import { STABILITY_JOB, StudyService } from '../../src/studies/study.service.js';
import { eventually } from '../helpers/eventually.js';
import { openTempPostgresDatabase, requirePostgres } from '../helpers/tmp.js';

const silent = winston.createLogger({ silent: true });

/**
 * Two PostgreSQL transactions at once: a stability job marking a study stable, and an arrival for that study. The
 * arrival decides from the study row whether it re-opens the study (and enqueues a new stability job); if it read the
 * row before the job's commit and wrote after it, the study would be `receiving` again with no job left to end the
 * episode: stuck for good (seen with two gateway instances and a slow sender).
 */
describe('stability vs a late arrival on PostgreSQL (the study row decides)', function () {
  this.timeout(30_000);
  let t: Awaited<ReturnType<typeof openTempPostgresDatabase>> | undefined;
  let opened: OpenedDatabase;
  let spool: Spool;
  let service: StudyService;
  let n = 0;

  beforeEach(async function () {
    requirePostgres(this);
    t = await openTempPostgresDatabase();
    opened = t.opened;
    spool = new Spool(t.dir, 0);
    spool.open();
    // A runner that is never started: the test plays the stability job's part by hand.
    const runner = new JobRunner({ db: opened.db, logger: silent, workerId: 'test' });
    service = new StudyService({ db: opened.db, spool, logger: silent, stableAfterSeconds: 60, jobs: runner });
    service.register();
  });
  afterEach(async () => {
    await t?.close();
    t = undefined;
  });

  function received(study: string, sop: string): ReceivedInstance {
    const tmpPath = spool.newTmpPath();
    const bytes = Buffer.from(`instance ${sop} ${n++}`);
    writeFileSync(tmpPath, bytes);
    return {
      sopClassUid: '1.2.840.10008.5.1.4.1.1.2',
      sopInstanceUid: sop,
      transferSyntaxUid: '1.2.840.10008.1.2.1',
      studyInstanceUid: study,
      seriesInstanceUid: `${study}.1`,
      accessionNumber: 'ACC1',
      patientId: 'PID1',
      modality: 'CT',
      studyDescription: 'CT CHEST',
      seriesDescription: null,
      bodyPartExamined: 'CHEST',
      studyDate: '20261128',
      referringPhysicianName: null,
      seriesNumber: 1,
      instanceNumber: n,
      tmpPath,
      sizeBytes: bytes.length,
      sha256: createHash('sha256').update(bytes).digest('hex'),
      callingAe: 'PACS1',
    };
  }

  it('an arrival while the job is marking the study stable either re-opens it with a new job or is seen by the job', async () => {
    const study = '1.2.3.900';
    expect(await service.storeInstance(received(study, '1.2.3.900.1.1'))).to.equal('stored');
    const [first] = await jobsOf(opened.db, STABILITY_JOB);
    expect(first, 'the episode has its job').to.not.equal(undefined);

    // The job's transaction: the study locked, marked stable, its key given up (as stabilityStep does); not committed yet.
    const job = await opened.db.startTransaction().execute();
    let late: Promise<string> | undefined;
    try {
      const row = await lockForStability(job, study);
      expect(row?.state).to.equal('receiving');
      expect(await markOneStable(job, study, new Date().toISOString())).to.equal(true);
      await job.updateTable('jobs').set({ active_key: null }).where('id', '=', first!.id).execute();
      // The arrival starts now; it must reach the study row and wait there for the job's transaction.
      late = service.storeInstance(received(study, '1.2.3.900.1.2'));
      await eventually(async () => {
        const waiting = await sql<{ n: number }>`select count(*)::int as n from pg_stat_activity
          where datname = current_database() and wait_event_type = 'Lock'`.execute(opened.db);
        return waiting.rows[0]!.n > 0 ? true : undefined;
      }, 'the arrival waiting for the study row');
      await job.commit().execute();
    } catch (err) {
      await job.rollback().execute();
      throw err;
    }
    expect(await late).to.equal('stored');
    // The job completes (deleted), as the engine does after its handler.
    await opened.db.deleteFrom('jobs').where('id', '=', first!.id).execute();

    const s = await findStudy(opened.db, study);
    expect(s?.state, 'the late instance re-opened the study').to.equal('receiving');
    expect(s?.late_instance_count).to.equal(1);
    const open = (await jobsOf(opened.db, STABILITY_JOB)).filter((j) => j.active_key === study);
    expect(open, 'a receiving study always has a stability job to end its episode').to.have.length(1);
  });
});
