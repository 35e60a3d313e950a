import path from 'node:path';
import { expect } from 'chai';
import { sql } from 'kysely';
import { generateStudy, type GeneratedStudy } from '../../scripts/lib/study-generator.js';
import { buildConfig } from '../../src/config/load.js';
import { dialectOf } from '../../src/db/dialect.js';
import { DELIVER_JOB, enqueueForwardingPlan, PLAN_JOB } from '../../src/forwarding/forwarding.service.js';
import { createGateway, type Gateway } from '../../src/gateway.js';
import { STABILITY_JOB } from '../../src/studies/study.service.js';
import { storeFiles } from '../helpers/dicom-peers.js';
import { eventually } from '../helpers/eventually.js';
import { silentLogger } from '../helpers/hl7-peers.js';
import { PoolScp } from '../helpers/pool-scp.js';
import { createTestPostgresDatabase, makeTempDir, requirePostgres, testDatabaseUrl, testPostgresUrl } from '../helpers/tmp.js';

const admin = 'admin-token-0123456789abcdef';

function gatewayConfig(dir: string, url: string, poolPort: number, instanceId = 'gw-a') {
  return buildConfig({
    instanceId,
    dicom: { port: 0, stableAfterSeconds: 0.2 },
    hl7: { port: 0 },
    http: { port: 0 },
    storage: { dir: path.join(dir, 'data'), minFreeMb: 0 },
    database: { url },
    destinations: [{ id: 'pool', type: 'dimse', host: '127.0.0.1', port: poolPort, aeTitle: 'POOL' }],
    forwarding: { backoffBaseSeconds: 0.2, backoffMaxSeconds: 0.5 },
    auth: { tokens: [{ token: admin, role: 'admin', name: 'alice' }] },
  });
}

async function store(g: Gateway, files: string[]): Promise<void> {
  const r = await storeFiles({ host: '127.0.0.1', port: g.ports().dicom, callingAe: 'PACS1', calledAe: 'SECONDREAD' }, files);
  expect(r.statuses.every((s) => s === 0)).to.equal(true);
}

async function openCase(g: Gateway, studyInstanceUid: string): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${g.ports().http}/api/cases`, {
    method: 'POST',
    headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
    body: JSON.stringify({ studyInstanceUid, reason: 'planning job test', destinationId: 'pool' }),
  });
  expect(res.status).to.equal(201);
  return ((await res.json()) as { id: string }).id;
}

async function studyState(g: Gateway, uid: string): Promise<string | undefined> {
  return (await g.db.selectFrom('studies').select('state').where('study_instance_uid', '=', uid).executeTakeFirst())?.state;
}

async function jobCount(g: Gateway, kind: string): Promise<number> {
  return (await g.db.selectFrom('jobs').select('id').where('kind', '=', kind).execute()).length;
}

async function deliveriesOf(g: Gateway, caseId: string) {
  return g.db.selectFrom('deliveries').selectAll().where('case_id', '=', caseId).execute();
}

function study(dir: string, name: string, instances: number): GeneratedStudy {
  return generateStudy(path.join(dir, name), { instances, series: 1, accessionNumber: `ACC${name}`, patientId: `MRN${name}`, rows: 32, columns: 32 });
}

describe(`stability and forwarding planning as jobs (${testPostgresUrl ? 'PostgreSQL' : 'SQLite'})`, function () {
  this.timeout(90_000);
  let tmp: ReturnType<typeof makeTempDir>;
  const closers: (() => Promise<void>)[] = [];
  let pool: PoolScp;
  let gw: Gateway;

  beforeEach(async () => {
    tmp = makeTempDir();
    pool = new PoolScp(path.join(tmp.dir, 'pool'));
    await pool.start();
    closers.push(() => pool.close());
    gw = createGateway(gatewayConfig(tmp.dir, testDatabaseUrl(path.join(tmp.dir, 'gw.db')), pool.port), { logger: silentLogger });
    await gw.start();
    closers.push(() => gw.stop());
  });
  afterEach(async () => {
    for (const c of closers.reverse()) await c().catch(() => undefined);
    closers.length = 0;
    tmp.cleanup();
  });

  it('with the job runner stopped nothing turns stable or plans by itself; its jobs alone do both; a late episode is one job', async () => {
    // No claims from here on: whatever happens next is the work of the jobs drained by hand below.
    await gw.jobs.stop();
    const s = study(tmp.dir, 'S1', 3);
    await store(
      gw,
      s.instances.slice(0, 2).map((i) => i.path),
    );
    // One stability job for the study, not one per instance.
    expect(await jobCount(gw, STABILITY_JOB)).to.equal(1);
    // Well past the quiet period (0.2 s): no timer, no sweep, no loop made it stable.
    await new Promise((r) => setTimeout(r, 600));
    expect(await studyState(gw, s.studyInstanceUid)).to.equal('receiving');
    await gw.studies.settle();
    expect(await studyState(gw, s.studyInstanceUid)).to.equal('stable');
    expect(await jobCount(gw, STABILITY_JOB)).to.equal(0);

    const caseId = await openCase(gw, s.studyInstanceUid);
    expect(await jobCount(gw, PLAN_JOB)).to.be.greaterThan(0);
    await new Promise((r) => setTimeout(r, 300));
    expect(await deliveriesOf(gw, caseId), 'nothing plans without its job').to.deep.equal([]);
    await gw.forwarding.idle();
    expect((await deliveriesOf(gw, caseId)).map((d) => [d.state, d.instances_sent])).to.deep.equal([['delivered', 2]]);

    // A late instance re-opens the study: one new stability job for the episode; stable again, the delta goes out.
    await store(gw, [s.instances[2]!.path]);
    expect(await studyState(gw, s.studyInstanceUid)).to.equal('receiving');
    expect(await jobCount(gw, STABILITY_JOB)).to.equal(1);
    await eventually(
      async () => {
        await gw.studies.settle();
        return (await studyState(gw, s.studyInstanceUid)) === 'stable' ? true : undefined;
      },
      'stable again by its job',
      30_000,
    );
    await gw.forwarding.idle();
    expect((await deliveriesOf(gw, caseId)).map((d) => [d.state, d.instances_sent])).to.deep.equal([['delivered', 3]]);
    expect(pool.stores.filter((x) => x.studyInstanceUid === s.studyInstanceUid)).to.have.length(3);
  });

  it('a planning job that fails mid-way (its transaction aborted by the database) is retried and plans exactly once', async () => {
    await gw.jobs.stop();
    const s = study(tmp.dir, 'S2', 2);
    await store(
      gw,
      s.instances.map((i) => i.path),
    );
    await eventually(async () => {
      await gw.studies.settle();
      return (await studyState(gw, s.studyInstanceUid)) === 'stable' ? true : undefined;
    }, 'stable');
    // The delivery row is written, then its instances fail: the planning transaction aborts half-way.
    const db = gw.db;
    if (dialectOf(db) === 'postgres') {
      await sql`create function inject_failure() returns trigger as $$ begin raise exception 'injected failure'; end $$ language plpgsql`.execute(db);
      await sql`create trigger inject_failure before insert on delivery_instances for each row execute function inject_failure()`.execute(db);
    } else {
      await sql`create trigger inject_failure before insert on delivery_instances begin select raise(abort, 'injected failure'); end`.execute(db);
    }
    const caseId = await openCase(gw, s.studyInstanceUid);
    await gw.forwarding.idle();
    const failed = await db.selectFrom('jobs').selectAll().where('kind', '=', PLAN_JOB).execute();
    // The case's own planning job and its stable study's (on PostgreSQL one of them may find the case locked by
    // the other and skip it): what failed did so once and waits for its retry.
    expect(failed.length).to.be.greaterThan(0);
    for (const j of failed) {
      // Once at least (on a loaded machine its retry may have come due and failed again within the same drain).
      expect(j.state).to.equal('pending');
      expect(j.attempts).to.be.at.least(1);
      expect(j.last_error).to.include('injected failure');
    }
    expect(await deliveriesOf(gw, caseId)).to.deep.equal([]);
    expect((await db.selectFrom('cases').select('state').where('id', '=', caseId).executeTakeFirstOrThrow()).state).to.equal('flagged');

    await sql`drop trigger inject_failure${dialectOf(db) === 'postgres' ? sql` on delivery_instances` : sql``}`.execute(db);
    await eventually(
      async () => {
        await gw.forwarding.idle();
        return (await deliveriesOf(gw, caseId)).some((d) => d.state === 'delivered') ? true : undefined;
      },
      'planned and delivered after the retry',
      60_000,
    );
    const ds = await deliveriesOf(gw, caseId);
    expect(ds).to.have.length(1);
    expect(
      Number(
        (
          await db
            .selectFrom('delivery_instances')
            .select((e) => e.fn.countAll<number>().as('n'))
            .executeTakeFirstOrThrow()
        ).n,
      ),
    ).to.equal(2);
    expect(pool.stores.filter((x) => x.studyInstanceUid === s.studyInstanceUid)).to.have.length(2);
    // The other planning job's retry finds the case planned: nothing more.
    await eventually(
      async () => {
        await gw.forwarding.idle();
        return (await jobCount(gw, PLAN_JOB)) === 0 ? true : undefined;
      },
      'every planning job done',
      60_000,
    );
    expect(await deliveriesOf(gw, caseId)).to.have.length(1);
    expect(await jobCount(gw, DELIVER_JOB)).to.equal(0);
    expect(pool.stores.filter((x) => x.studyInstanceUid === s.studyInstanceUid)).to.have.length(2);
  });
});

describe('stability and planning jobs: two PostgreSQL instances on one database', function () {
  this.timeout(120_000);
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

  it('mark one study stable exactly once and plan one delivery, with both runners draining at the same time', async () => {
    // One spool shared by both instances, as deployed (README: Several instances).
    const url = createTestPostgresDatabase(tmp.dir);
    const pool = new PoolScp(path.join(tmp.dir, 'pool'));
    await pool.start();
    closers.push(() => pool.close());
    const a = createGateway(gatewayConfig(tmp.dir, url, pool.port, 'gw-a'), { logger: silentLogger });
    await a.start();
    closers.push(() => a.stop());
    const b = createGateway(gatewayConfig(tmp.dir, url, pool.port, 'gw-b'), { logger: silentLogger });
    await b.start();
    closers.push(() => b.stop());
    await a.jobs.stop();
    await b.jobs.stop();
    const stableSeen: string[] = [];
    a.studies.subscribe({ onStable: () => void stableSeen.push('a') });
    b.studies.subscribe({ onStable: () => void stableSeen.push('b') });

    const s = study(tmp.dir, 'P1', 3);
    await store(
      a,
      s.instances.map((i) => i.path),
    );
    await new Promise((r) => setTimeout(r, 400));
    await Promise.all([a.studies.settle(), b.studies.settle(), a.studies.settle(), b.studies.settle()]);
    await new Promise((r) => setImmediate(r));
    expect(await studyState(a, s.studyInstanceUid)).to.equal('stable');
    expect(stableSeen, 'marked stable once, by one of the two').to.have.length(1);

    const caseId = await openCase(a, s.studyInstanceUid);
    // Both planning jobs that may plan this case (its own, and its stable study's) at once on both instances.
    await a.db.transaction().execute((trx) => enqueueForwardingPlan(a.jobs, trx, { studyUid: s.studyInstanceUid }));
    await Promise.all([a.forwarding.idle(), b.forwarding.idle(), a.forwarding.idle(), b.forwarding.idle()]);
    await eventually(
      async () => {
        await Promise.all([a.forwarding.idle(), b.forwarding.idle()]);
        return (await deliveriesOf(a, caseId)).every((d) => d.state === 'delivered') ? true : undefined;
      },
      'delivered',
      60_000,
    );
    expect(await deliveriesOf(a, caseId)).to.have.length(1);
    expect(pool.stores.filter((x) => x.studyInstanceUid === s.studyInstanceUid)).to.have.length(3);
  });
});
