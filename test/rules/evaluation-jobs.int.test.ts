import path from 'node:path';
import { expect } from 'chai';
import { sql } from 'kysely';
import pg from 'pg';
import { generateStudy } from '../../scripts/lib/study-generator.js';
import { buildConfig } from '../../src/config/load.js';
import { createGateway, type Gateway } from '../../src/gateway.js';
import { jobsOf } from '../../src/jobs/job.repository.js';
import { enqueueEvaluation, EVALUATE_JOB } from '../../src/rules/evaluation.job.js';
import { EvaluationTrigger } from '../../src/states.js';
import { storeFiles } from '../helpers/dicom-peers.js';
import { eventually } from '../helpers/eventually.js';
import { RawMllpPeer, silentLogger } from '../helpers/hl7-peers.js';
import { oruR01 } from '../helpers/hl7-samples.js';
import { createTestPostgresDatabase, makeTempDir, requirePostgres, testDatabaseUrl, testPostgresUrl } from '../helpers/tmp.js';

/**
 * Rule evaluations are jobs enqueued in the transaction of the change that calls for them (the study became
 * stable, a report linked): a database error during an evaluation is retried on the running gateway until the
 * decision is recorded, and two instances deciding the same study record one decision.
 */
describe(`rule evaluations cannot be lost (${testPostgresUrl ? 'PostgreSQL' : 'SQLite'})`, function () {
  this.timeout(60_000);
  let tmp: ReturnType<typeof makeTempDir>;
  const running: Gateway[] = [];

  beforeEach(() => {
    tmp = makeTempDir();
  });
  afterEach(async () => {
    for (const g of running.splice(0)) await g.stop().catch(() => undefined);
    tmp.cleanup();
  });

  it('a database error during the evaluation is retried on the running gateway (no restart) and the case appears, once', async () => {
    const gw = createGateway(
      buildConfig({
        dicom: { port: 0, stableAfterSeconds: 0.3 },
        hl7: { port: 0 },
        http: { port: 0 },
        storage: { dir: path.join(tmp.dir, 'data'), minFreeMb: 0 },
        database: { url: testDatabaseUrl(path.join(tmp.dir, 'gw.db')) },
        sampling: { secret: 'a-test-sampling-secret-000' },
      }),
      { logger: silentLogger },
    );
    await gw.start();
    running.push(gw);
    // The evaluation reads and writes `decisions`: while it is gone, every evaluation fails (as on a database outage).
    await sql`alter table decisions rename to decisions_away`.execute(gw.db);
    const study = generateStudy(path.join(tmp.dir, 'study'), {
      instances: 2,
      series: 1,
      rows: 32,
      columns: 32,
      accessionNumber: 'ACCJOB1',
      patientId: 'MRNJOB1',
    });
    const peer = await RawMllpPeer.connect(gw.ports().hl7);
    const ack = await peer.send(oruR01({ controlId: 'JOBORU1', accession: 'ACCJOB1', patientId: 'MRNJOB1' }));
    expect(ack.code, ack.text).to.equal('AA');
    peer.end();
    const r = await storeFiles(
      { host: '127.0.0.1', port: gw.ports().dicom, callingAe: 'PACS1', calledAe: 'SECONDREAD' },
      study.instances.map((i) => i.path),
    );
    expect(r.statuses).to.deep.equal([0, 0]);
    const failed = await eventually(async () => (await jobsOf(gw.db, EVALUATE_JOB)).find((j) => j.last_error !== null), 'a failed evaluation');
    expect(failed.state).to.equal('pending');
    expect(await gw.db.selectFrom('cases').select('id').execute()).to.have.length(0);
    await sql`alter table decisions_away rename to decisions`.execute(gw.db);
    const cases = await eventually(
      async () => {
        const rows = await gw.db.selectFrom('cases').select(['study_instance_uid', 'state']).execute();
        return rows.length > 0 ? rows : undefined;
      },
      'the case',
      30_000,
    );
    expect(cases).to.deep.equal([{ study_instance_uid: study.studyInstanceUid, state: 'flagged' }]);
    await gw.decisions.idle();
    expect(await gw.db.selectFrom('cases').select('id').execute()).to.have.length(1);
    expect((await jobsOf(gw.db, EVALUATE_JOB)).filter((j) => j.state === 'dead')).to.deep.equal([]);
  });
});

describe('rule evaluations: two instances on PostgreSQL deciding the same study', function () {
  this.timeout(120_000);
  let tmp: ReturnType<typeof makeTempDir>;
  let url: string;
  const running: Gateway[] = [];

  beforeEach(function () {
    requirePostgres(this);
    tmp = makeTempDir('gw-eval-');
    url = createTestPostgresDatabase(tmp.dir);
  });
  afterEach(async () => {
    for (const g of running.splice(0)) await g.stop().catch(() => undefined);
    tmp?.cleanup();
  });

  const start = async (instanceId: string) => {
    const g = createGateway(
      buildConfig({
        instanceId,
        dicom: { port: 0, stableAfterSeconds: 3600 },
        hl7: { port: 0 },
        http: { port: 0 },
        storage: { dir: path.join(tmp.dir, 'data'), minFreeMb: 0 },
        database: { url },
        sampling: { secret: 'a-test-sampling-secret-000' },
      }),
      { logger: silentLogger },
    );
    await g.start();
    running.push(g);
    return g;
  };

  it('evaluations of one study enqueued and run on both instances at once record one decision and one case', async () => {
    const a = await start('gw-a');
    const b = await start('gw-b');
    const study = generateStudy(path.join(tmp.dir, 'study'), {
      instances: 1,
      series: 1,
      rows: 32,
      columns: 32,
      accessionNumber: 'ACCTWO1',
      patientId: 'MRNTWO1',
    });
    const r = await storeFiles(
      { host: '127.0.0.1', port: a.ports().dicom, callingAe: 'PACS1', calledAe: 'SECONDREAD' },
      study.instances.map((i) => i.path),
    );
    expect(r.statuses).to.deep.equal([0]);
    const peer = await RawMllpPeer.connect(b.ports().hl7);
    expect((await peer.send(oruR01({ controlId: 'TWOORU1', accession: 'ACCTWO1', patientId: 'MRNTWO1' }))).code).to.equal('AA');
    peer.end();
    await a.decisions.idle();
    expect(await a.db.selectFrom('decisions').select('id').execute(), 'not stable yet: no decision').to.have.length(0);
    // Stable, with several evaluations asked for by both instances at the same moment.
    await a.db.transaction().execute(async (trx) => {
      await trx.updateTable('studies').set({ state: 'stable', stable_at: new Date().toISOString() }).execute();
      for (let i = 0; i < 3; i++) await enqueueEvaluation(a.jobs, trx, study.studyInstanceUid, EvaluationTrigger.stable);
    });
    await b.db.transaction().execute(async (trx) => {
      for (let i = 0; i < 3; i++) await enqueueEvaluation(b.jobs, trx, study.studyInstanceUid, EvaluationTrigger.stable);
    });
    // And, beside the jobs, direct evaluations on both (as a manual request would run), all at once.
    await Promise.all([
      a.decisions.evaluateStudy(study.studyInstanceUid, EvaluationTrigger.stable),
      b.decisions.evaluateStudy(study.studyInstanceUid, EvaluationTrigger.stable),
    ]);
    await eventually(async () => ((await jobsOf(a.db, EVALUATE_JOB)).length === 0 ? true : undefined), 'every evaluation job done', 30_000);
    expect(await a.db.selectFrom('decisions').select('id').execute()).to.have.length(1);
    expect(await a.db.selectFrom('cases').select('id').execute()).to.have.length(1);
  });
});

/**
 * The radiologist's sampling lock serialises evaluations that draw from the same quota (two instances, one last
 * slot). A rule set with no enabled sampling rule draws nothing, so its evaluations must not queue on that lock:
 * every manual request with no report shares the key `sampling:unknown`, and waiting on it made requests one at a time.
 */
describe('the sampling lock is taken only when a sampling rule can draw (PostgreSQL)', function () {
  this.timeout(60_000);
  let tmp: ReturnType<typeof makeTempDir>;
  let url: string;
  const running: Gateway[] = [];
  let holder: pg.Client | undefined;

  beforeEach(function () {
    requirePostgres(this);
    tmp = makeTempDir('gw-lock-');
    url = createTestPostgresDatabase(tmp.dir);
  });
  afterEach(async () => {
    await holder?.end().catch(() => undefined);
    holder = undefined;
    for (const g of running.splice(0)) await g.stop().catch(() => undefined);
    tmp?.cleanup();
  });

  const evaluateWhileLockHeld = async (rules: unknown[]): Promise<'decided' | 'waiting'> => {
    const g = createGateway(
      buildConfig({
        dicom: { port: 0, stableAfterSeconds: 3600 },
        hl7: { port: 0 },
        http: { port: 0 },
        storage: { dir: path.join(tmp.dir, `data-${running.length}`), minFreeMb: 0 },
        database: { url },
        rules,
        sampling: { secret: 'a-test-sampling-secret-000' },
      }),
      { logger: silentLogger },
    );
    await g.start();
    running.push(g);
    const study = generateStudy(path.join(tmp.dir, `study-${running.length}`), { instances: 1, series: 1, rows: 16, columns: 16, modality: 'CT' });
    const r = await storeFiles(
      { host: '127.0.0.1', port: g.ports().dicom, callingAe: 'PACS1', calledAe: 'SECONDREAD' },
      study.instances.map((i) => i.path),
    );
    expect(r.statuses).to.deep.equal([0]);
    await g.db.updateTable('studies').set({ state: 'stable', stable_at: new Date().toISOString() }).execute();
    // Another session holds the lock an evaluation of a study with no report would take.
    holder = new pg.Client({ connectionString: url });
    await holder.connect();
    await holder.query(`select pg_advisory_lock(hashtextextended('sampling:unknown', 0))`);
    const evaluation = g.decisions.evaluateStudy(study.studyInstanceUid, EvaluationTrigger.stable).then(() => 'decided' as const);
    const verdict = await Promise.race([evaluation, new Promise<'waiting'>((resolve) => setTimeout(() => resolve('waiting'), 1500))]);
    await holder.end();
    holder = undefined;
    await evaluation;
    return verdict;
  };

  it('no sampling rule: the evaluation does not wait for the lock', async () => {
    expect(await evaluateWhileLockHeld([{ id: 'hs', kind: 'high-stakes', priority: 'routine', procedureCodes: ['CTA*'] }])).to.equal('decided');
  });

  it('a sampling rule: the evaluation waits for the lock, then decides', async () => {
    expect(await evaluateWhileLockHeld([{ id: 'qa', kind: 'sampling', priority: 'routine', rate: 0.5, period: 'month' }])).to.equal('waiting');
  });
});
