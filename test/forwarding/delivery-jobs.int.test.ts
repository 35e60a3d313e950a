import path from 'node:path';
import { expect } from 'chai';
import { generateStudy, type GeneratedStudy } from '../../scripts/lib/study-generator.js';
import { buildConfig } from '../../src/config/load.js';
import { dbNow } from '../../src/db/dialect.js';
import type { ReceivedInstance } from '../../src/dicom/instance-record.js';
import { DELIVER_JOB } from '../../src/forwarding/forwarding.service.js';
import { createGateway, type Gateway } from '../../src/gateway.js';
import { claimJobs } from '../../src/jobs/job.repository.js';
import { storeFiles } from '../helpers/dicom-peers.js';
import { eventually } from '../helpers/eventually.js';
import { silentLogger } from '../helpers/hl7-peers.js';
import { PoolScp } from '../helpers/pool-scp.js';
import { createTestPostgresDatabase, makeTempDir, requirePostgres, testDatabaseUrl, testPostgresUrl } from '../helpers/tmp.js';

const admin = 'admin-token-0123456789abcdef';

/** A pool whose C-STOREs wait until `release()`; `held` counts the ones that arrived. */
function gatedPool(dir: string): { pool: PoolScp; release: () => void; held: () => number } {
  const pool = new PoolScp(dir);
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let held = 0;
  const store = pool.storeInstance.bind(pool);
  pool.storeInstance = async (i: ReceivedInstance) => {
    held++;
    await gate;
    return store(i);
  };
  return { pool, release, held: () => held };
}

async function push(g: Gateway, study: GeneratedStudy): Promise<void> {
  const stable = new Promise<void>((resolve) => g.studies.subscribe({ onStable: (uid) => (uid === study.studyInstanceUid ? resolve() : undefined) }));
  const r = await storeFiles(
    { host: '127.0.0.1', port: g.ports().dicom, callingAe: 'PACS1', calledAe: 'SECONDREAD' },
    study.instances.map((i) => i.path),
  );
  expect(r.statuses.every((s) => s === 0)).to.equal(true);
  await stable;
}

async function openCase(g: Gateway, studyInstanceUid: string): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${g.ports().http}/api/cases`, {
    method: 'POST',
    headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
    body: JSON.stringify({ studyInstanceUid, reason: 'delivery job test', destinationId: 'pool' }),
  });
  expect(res.status).to.equal(201);
  return ((await res.json()) as { id: string }).id;
}

function gatewayConfig(dir: string, url: string, poolPort: number, instanceId = 'gw-a') {
  return buildConfig({
    instanceId,
    dicom: { port: 0, stableAfterSeconds: 0.2 },
    hl7: { port: 0 },
    http: { port: 0 },
    storage: { dir: path.join(dir, 'data'), minFreeMb: 0 },
    database: { url },
    // One instance per C-STORE batch: the fencing test stops between the first and the second.
    destinations: [{ id: 'pool', type: 'dimse', host: '127.0.0.1', port: poolPort, aeTitle: 'POOL', batchSize: 1 }],
    forwarding: { pollIntervalSeconds: 0.1, backoffBaseSeconds: 0.2, backoffMaxSeconds: 0.5 },
    auth: { tokens: [{ token: admin, role: 'admin', name: 'alice' }] },
  });
}

describe(`delivery jobs (${testPostgresUrl ? 'PostgreSQL' : 'SQLite'})`, function () {
  this.timeout(90_000);
  let tmp: ReturnType<typeof makeTempDir>;
  const closers: (() => Promise<void>)[] = [];

  beforeEach(() => {
    tmp = makeTempDir();
  });
  afterEach(async () => {
    for (const c of closers.reverse()) await c().catch(() => undefined);
    closers.length = 0;
    tmp.cleanup();
  });

  it("a worker whose claim expired mid-send (database clock) stops sending and does not overwrite the new owner's completion", async () => {
    const { pool, release, held } = gatedPool(path.join(tmp.dir, 'pool'));
    await pool.start();
    closers.push(() => pool.close());
    const gw = createGateway(gatewayConfig(tmp.dir, testDatabaseUrl(path.join(tmp.dir, 'gw.db')), pool.port), { logger: silentLogger });
    await gw.start();
    closers.push(() => gw.stop());
    const study = generateStudy(path.join(tmp.dir, 'study'), {
      instances: 3,
      series: 1,
      accessionNumber: 'ACCFENCE1',
      patientId: 'MRNFENCE1',
      rows: 32,
      columns: 32,
    });
    await push(gw, study);
    const caseId = await openCase(gw, study.studyInstanceUid);
    await eventually(() => held() > 0, 'the first instance in flight at the pool');
    const db = gw.db;
    const delivery = await db.selectFrom('deliveries').selectAll().where('case_id', '=', caseId).executeTakeFirstOrThrow();
    expect(delivery.state).to.equal('sending');

    // The lease runs out by the database's clock, and another instance takes the job with the one claim statement.
    await db
      .updateTable('jobs')
      .set({ locked_until: dbNow(db, -1) })
      .where('kind', '=', DELIVER_JOB)
      .where('key', '=', delivery.id)
      .execute();
    const taken = await claimJobs(db, DELIVER_JOB, 'gw-b', 'b-token', 300, 1);
    expect(taken.map((j) => j.key)).to.deep.equal([delivery.id]);
    // The new owner finishes the delivery (as its handler would, under its own claim).
    await db.updateTable('delivery_instances').set({ state: 'sent', sent_at: new Date().toISOString() }).where('delivery_id', '=', delivery.id).execute();
    await db
      .updateTable('deliveries')
      .set({ state: 'delivered', instances_sent: 3, delivered_at: new Date().toISOString() })
      .where('id', '=', delivery.id)
      .execute();

    release();
    await eventually(
      async () => ((await gw.metrics.registry.getSingleMetricAsString('gateway_job_runs_total')).includes('outcome="lost"') ? true : undefined),
      'the first worker to learn it lost the claim',
    );
    await gw.jobs.idle();
    await new Promise((r) => setTimeout(r, 500));

    expect(pool.stores.length, 'only the instance already in flight arrived; no batch after it').to.equal(1);
    const after = await db.selectFrom('deliveries').selectAll().where('id', '=', delivery.id).executeTakeFirstOrThrow();
    expect(after).to.deep.include({ state: 'delivered', instances_sent: 3, attempts: 0, last_error: null });
    const job = await db.selectFrom('jobs').selectAll().where('id', '=', taken[0]!.id).executeTakeFirstOrThrow();
    expect(job).to.deep.include({ state: 'running', locked_by: 'gw-b', lock_token: 'b-token' });
  });
});

describe('delivery jobs: one destination across two PostgreSQL instances', function () {
  this.timeout(180_000);
  let tmp: ReturnType<typeof makeTempDir>;
  const closers: (() => Promise<void>)[] = [];

  beforeEach(function () {
    requirePostgres(this);
    tmp = makeTempDir();
  });
  afterEach(async () => {
    for (const c of closers.reverse()) await c().catch(() => undefined);
    closers.length = 0;
    tmp?.cleanup();
  });

  it("delivers the destination's studies one at a time, in planning order, each instance once", async () => {
    const url = createTestPostgresDatabase(tmp.dir);
    const { pool, release, held } = gatedPool(path.join(tmp.dir, 'pool'));
    await pool.start();
    closers.push(() => pool.close());
    const a = createGateway(gatewayConfig(path.join(tmp.dir, 'a'), url, pool.port, 'gw-a'), { logger: silentLogger });
    await a.start();
    closers.push(() => a.stop());

    // Six cases on one destination, planned by gw-a while the pool holds the first instance of the first.
    const studies: GeneratedStudy[] = [];
    for (let i = 0; i < 6; i++) {
      const s = generateStudy(path.join(tmp.dir, `s${i}`), {
        instances: 2,
        series: 1,
        accessionNumber: `ACCORD${i}`,
        patientId: `MRNORD${i}`,
        rows: 32,
        columns: 32,
      });
      await push(a, s);
      await openCase(a, s.studyInstanceUid);
      studies.push(s);
    }
    await eventually(() => held() > 0, 'the first delivery in flight');
    await eventually(async () => ((await a.db.selectFrom('deliveries').select('id').execute()).length === 6 ? true : undefined), 'six deliveries planned');
    const planned = await a.db.selectFrom('deliveries').select(['id', 'study_instance_uid']).orderBy('id').execute();

    const b = createGateway(gatewayConfig(path.join(tmp.dir, 'b'), url, pool.port, 'gw-b'), { logger: silentLogger });
    await b.start();
    closers.push(() => b.stop());
    release();

    await eventually(
      async () => ((await a.db.selectFrom('deliveries').select('id').where('state', '=', 'delivered').execute()).length === 6 ? true : undefined),
      'every delivery delivered',
      120_000,
    );
    // Each study arrives whole before the next begins, in the order the deliveries were planned.
    const arrived = pool.stores.map((s) => s.studyInstanceUid);
    expect(arrived.length, 'each instance once').to.equal(12);
    const runs = arrived.filter((u, i) => i === 0 || arrived[i - 1] !== u);
    expect(runs).to.deep.equal(planned.map((p) => p.study_instance_uid));
    expect(new Set(pool.stores.map((s) => s.sopInstanceUid)).size).to.equal(12);
    // Nothing left behind in the job table: a handler records its delivery before its job completes, so wait for that.
    await eventually(
      async () => ((await a.db.selectFrom('jobs').select('id').where('kind', '=', DELIVER_JOB).execute()).length === 0 ? true : undefined),
      'every delivery job completed',
    );
  });
});
