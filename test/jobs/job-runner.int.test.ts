import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { sql, type CompiledQuery } from 'kysely';
import winston from 'winston';
import { migrateToLatest, openDatabase, type Db, type OpenedDatabase } from '../../src/db/database.js';
import { dbNow } from '../../src/db/dialect.js';
import { JobRunner, backoffSeconds } from '../../src/jobs/job-runner.js';
import { CRASHED, claimDueJobs, databaseNow, expireJobClaimsOf, findJob, insertJob, jobsOf, reviveJob } from '../../src/jobs/job.repository.js';
import { JobClaimLostError, JobPermanentError, type JobContext } from '../../src/jobs/job.types.js';
import { eventually } from '../helpers/eventually.js';
import { createTestPostgresDatabase, makeTempDir, requirePostgres, testDatabaseUrl, testPostgresUrl } from '../helpers/tmp.js';

const quiet = winston.createLogger({ silent: true });
const root = path.resolve(import.meta.dirname, '../..');

/** A result row the handlers write, to see whose write survived. */
async function result(db: Db, key: string): Promise<string | undefined> {
  return (await db.selectFrom('settings').select('value').where('key', '=', key).executeTakeFirst())?.value;
}
function writeResult(trx: Db, key: string, value: string) {
  return trx
    .insertInto('settings')
    .values({ key, value, created_at: new Date().toISOString() })
    .onConflict((oc) => oc.column('key').doUpdateSet({ value }))
    .execute();
}

function gate(): { wait: Promise<void>; open: () => void } {
  let open!: () => void;
  const wait = new Promise<void>((r) => (open = r));
  return { wait, open };
}

describe(`job engine (${testPostgresUrl ? 'PostgreSQL' : 'SQLite'})`, function () {
  this.timeout(30_000);
  let tmp: ReturnType<typeof makeTempDir>;
  let url: string;
  let opened: OpenedDatabase;
  let db: Db;
  const runners: JobRunner[] = [];
  const runner = (workerId: string, o: Partial<ConstructorParameters<typeof JobRunner>[0]> = {}) => {
    const r = new JobRunner({ db, logger: quiet, workerId, random: () => 0, ...o });
    runners.push(r);
    return r;
  };

  beforeEach(async () => {
    tmp = makeTempDir();
    url = testDatabaseUrl(path.join(tmp.dir, 'gw.db'));
    opened = openDatabase(url);
    db = opened.db;
    await migrateToLatest(db);
  });
  afterEach(async () => {
    for (const r of runners.splice(0)) await r.stop();
    await opened.close();
    tmp.cleanup();
  });

  it("enqueues in the caller's transaction: a rolled-back job never exists, a committed one runs once", async () => {
    const r = runner('gw-a');
    const seen: unknown[] = [];
    r.register('k', async (job: JobContext<{ n: number }>) => {
      seen.push(job.payload.n);
    });
    await db
      .transaction()
      .execute(async (trx) => {
        await r.enqueue(trx, 'k', { n: 1 });
        throw new Error('rollback');
      })
      .catch(() => undefined);
    await db.transaction().execute((trx) => r.enqueue(trx, 'k', { n: 2 }));
    await r.drain();
    expect(seen).to.deep.equal([2]);
    expect(await jobsOf(db, 'k'), 'a completed job is removed').to.deep.equal([]);
  });

  it("completes in the handler's own transaction: the row goes with its writes; rolled back, the job stays and runs again", async () => {
    const outcomes: string[] = [];
    const r = runner('gw-a', { defaults: { backoffBaseSeconds: 0 }, metrics: { jobClaimed: () => undefined, jobFinished: (_k, o) => void outcomes.push(o) } });
    let runs = 0;
    let duringCommit: number | undefined;
    r.register('k', async (job: JobContext<null>) => {
      runs++;
      const first = runs === 1;
      await job
        .fenced(async (trx) => {
          await writeResult(trx, 'effect', `run ${runs}`);
          await job.completeIn(trx);
          duringCommit = (await trx.selectFrom('jobs').select('id').where('kind', '=', 'k').execute()).length;
          // The first run fails after completing: its effect and its completion are undone together.
          if (first) throw new Error('after completeIn');
        })
        .catch((err: unknown) => {
          if (!first) throw err;
        });
      if (first) throw new Error('retry me');
      // Whatever a completed run does afterwards, the engine writes nothing more for it.
      throw new Error('ignored: the job is already complete');
    });
    await r.enqueue(db, 'k', null, { key: 'once' });
    await r.drain();
    expect(duringCommit, 'the row is gone inside the transaction').to.equal(0);
    expect(runs, 'the rolled-back completion left the job to run again').to.equal(2);
    expect(await result(db, 'effect')).to.equal('run 2');
    expect(await jobsOf(db, 'k'), 'completed: no row, no retry after the later error').to.deep.equal([]);
    expect(outcomes).to.deep.equal(['retried', 'done']);
    await r.enqueue(db, 'k', null, { key: 'once' });
    expect((await jobsOf(db, 'k')).length, 'its key is free').to.equal(1);
  });

  it("a job enqueued in a transaction that stays open past the runner's looks is claimed when that transaction commits", async () => {
    // No poll in the test's time: only the commit notification can start the job once the early looks found nothing.
    const r = runner('gw-a', { pollMs: 3_600_000, commits: opened.commits });
    const ran = gate();
    r.register('k', async () => ran.open());
    await r.start();
    await db.transaction().execute(async (trx) => {
      await r.enqueue(trx, 'k', null);
      // Past the immediate look and the one 50 ms later (PostgreSQL: other connections cannot see the row yet).
      await new Promise((resolve) => setTimeout(resolve, 300));
    });
    await Promise.race([ran.wait, new Promise((_, reject) => setTimeout(() => reject(new Error('not claimed after the commit')), 5000))]);
  });

  it("a kicked pass looks only for the kinds this process enqueued or finished; another process's job is found by the full look within pollMs, even while kicks never stop", async () => {
    const r = runner('gw-a', { pollMs: 400, commits: opened.commits });
    let stop = false;
    let busyRuns = 0;
    // A kind that keeps this runner kicked: each run enqueues the next, so a quiet moment for the poll timer never comes.
    r.register('busy', async () => {
      busyRuns++;
      if (!stop) await r.enqueue(db, 'busy', null);
    });
    const foreign = gate();
    r.register('foreign', async () => foreign.open());
    await r.start();
    await r.enqueue(db, 'busy', null);
    await eventually(() => busyRuns > 3, 'the busy kind running');
    // Written by another process (no enqueue through this runner, so no hint): only a full look can find it.
    await insertJob(db, { id: 'zz-foreign-1', kind: 'foreign', payload: 'null', maxAttempts: 3 });
    try {
      // Twelve pollMs of slack for a loaded machine; without the full look it is never claimed at all.
      await Promise.race([foreign.wait, new Promise((_, reject) => setTimeout(() => reject(new Error('foreign job not claimed')), 5000))]);
      const before = busyRuns;
      await eventually(() => busyRuns > before, 'the busy kind still running');
    } finally {
      stop = true;
    }
  });

  it('de-duplicates by key while the job is unfinished, not after', async () => {
    const r = runner('gw-a');
    const seen: string[] = [];
    r.register('k', async (job: JobContext<string>) => {
      seen.push(job.payload);
    });
    await r.enqueue(db, 'k', 'first', { key: 'study-1' });
    await r.enqueue(db, 'k', 'second', { key: 'study-1' });
    await r.enqueue(db, 'k', 'other', { key: 'study-2' });
    expect((await jobsOf(db, 'k')).length).to.equal(2);
    await r.drain();
    expect(seen).to.deep.equal(['first', 'other']);
    await r.enqueue(db, 'k', 'third', { key: 'study-1' });
    await r.drain();
    expect(seen).to.deep.equal(['first', 'other', 'third']);
  });

  it('retries a failure with backoff (attempts counted at claim), dead-letters after max attempts; a person can retry it', async () => {
    const r = runner('gw-a');
    const attempts: number[] = [];
    let cure = false;
    r.register(
      'k',
      async (job) => {
        attempts.push(job.attempt);
        if (!cure) throw new Error(`refused ${job.attempt}`);
      },
      { maxAttempts: 3 },
    );
    await r.enqueue(db, 'k', {});
    await r.drain();
    expect(attempts).to.deep.equal([1, 2, 3]);
    const [dead] = await jobsOf(db, 'k');
    expect(dead).to.include({ state: 'dead', attempts: 3, last_error: 'refused 3', active_key: null });
    await r.drain();
    expect(attempts, 'a dead job is not claimed').to.have.length(3);
    cure = true;
    expect(await reviveJob(db, dead!.id)).to.equal(true);
    await r.drain();
    expect(attempts).to.deep.equal([1, 2, 3, 1]);
    expect(await jobsOf(db, 'k')).to.deep.equal([]);
  });

  it('waits out the backoff by the database clock before the retry', async () => {
    const r = runner('gw-a', { random: () => 1 });
    let runs = 0;
    r.register(
      'k',
      async () => {
        runs++;
        throw new Error('down');
      },
      { backoffBaseSeconds: 600 },
    );
    await r.enqueue(db, 'k', {});
    await r.drain();
    expect(runs).to.equal(1);
    const [job] = await jobsOf(db, 'k');
    const now = Date.parse(await databaseNow(db));
    expect(Date.parse(job!.run_at) - now).to.be.within(595_000, 600_500);
    // The retry comes due when the database says so.
    await db
      .updateTable('jobs')
      .set({ run_at: dbNow(db, -1) })
      .execute();
    await r.drain();
    expect(runs).to.equal(2);
  });

  it('dead-letters a JobPermanentError at once', async () => {
    const r = runner('gw-a');
    r.register('k', async () => {
      throw new JobPermanentError('invalid data');
    });
    await r.enqueue(db, 'k', {});
    await r.drain();
    expect(await jobsOf(db, 'k'))
      .to.have.length(1)
      .and.to.satisfy((rows: { state: string; attempts: number }[]) => rows[0]!.state === 'dead' && rows[0]!.attempts === 1);
  });

  it('runs a job again at runAgainAt without counting an attempt', async () => {
    const r = runner('gw-a');
    let runs = 0;
    r.register(
      'k',
      async (job) => {
        runs++;
        expect(job.attempt).to.equal(1);
        if (runs < 3) return { runAgainAt: new Date(Date.now() - 1000) };
      },
      { maxAttempts: 1 },
    );
    await r.enqueue(db, 'k', {});
    await r.drain();
    expect(runs).to.equal(3);
    expect(await jobsOf(db, 'k')).to.deep.equal([]);
  });

  it("runs one queue's jobs one at a time in order (an earlier job waiting for its retry holds the later ones); other queues run alongside", async () => {
    const r = runner('gw-a', { random: () => 1 });
    const log: string[] = [];
    let running = 0;
    let maxRunning = 0;
    let failFirst = true;
    r.register(
      'k',
      async (job: JobContext<string>) => {
        running++;
        maxRunning = Math.max(maxRunning, running);
        await new Promise((res) => setTimeout(res, 5));
        running--;
        if (job.payload === 'a1' && failFirst) {
          failFirst = false;
          throw new Error('once');
        }
        log.push(job.payload);
      },
      { concurrency: 4, backoffBaseSeconds: 600 },
    );
    for (const p of ['a1', 'a2', 'b1', 'a3', 'b2']) await r.enqueue(db, 'k', p, { queue: p[0] });
    await r.drain();
    expect(log, 'a1 waits for its retry: a2, a3 wait behind it').to.deep.equal(['b1', 'b2']);
    await db
      .updateTable('jobs')
      .set({ run_at: dbNow(db, -1) })
      .execute();
    await r.drain();
    expect(log).to.deep.equal(['b1', 'b2', 'a1', 'a2', 'a3']);
    expect(maxRunning, 'two queues ran side by side').to.equal(2);
  });

  it('per-kind concurrency bounds how many run at once', async () => {
    const r = runner('gw-a');
    let running = 0;
    let maxRunning = 0;
    r.register(
      'k',
      async () => {
        running++;
        maxRunning = Math.max(maxRunning, running);
        await new Promise((res) => setTimeout(res, 10));
        running--;
      },
      { concurrency: 3 },
    );
    for (let i = 0; i < 10; i++) await r.enqueue(db, 'k', i);
    await r.drain();
    expect(maxRunning).to.equal(3);
    expect(await jobsOf(db, 'k')).to.deep.equal([]);
  });

  it("fencing: a worker whose lease expired mid-send stops sending and cannot overwrite the new owner's completion", async () => {
    const a = runner('gw-a');
    const b = runner('gw-b');
    const sentByA: number[] = [];
    const started = gate();
    const resume = gate();
    let aError: unknown;
    let aSignal: AbortSignal | undefined;
    // A sends in chunks, renewing its lease as it goes ("progress renews the lease"), and records the result fenced.
    a.register(
      'send',
      async (job) => {
        aSignal = job.signal;
        try {
          for (let chunk = 1; chunk <= 3; chunk++) {
            await job.renew();
            sentByA.push(chunk);
            if (chunk === 1) {
              started.open();
              await resume.wait;
            }
          }
          await job.fenced((trx) => writeResult(trx, 'delivery', 'sent by a'));
        } catch (err) {
          aError = err;
          throw err;
        }
      },
      { leaseSeconds: 60 },
    );
    b.register(
      'send',
      async (job) => {
        await job.fenced((trx) => writeResult(trx, 'delivery', 'sent by b'));
      },
      { leaseSeconds: 60 },
    );
    await a.enqueue(db, 'send', {});
    const aRun = a.drain();
    await started.wait;
    // A stalls (a long GC, a network partition); its lease runs out by the database's clock, and B takes the job over.
    await db
      .updateTable('jobs')
      .set({ locked_until: dbNow(db, -1) })
      .execute();
    await b.drain();
    expect(await result(db, 'delivery')).to.equal('sent by b');
    expect(await jobsOf(db, 'send'), 'B completed the job').to.deep.equal([]);
    resume.open();
    await aRun;
    expect(sentByA, 'A sent nothing after it learnt it lost the claim').to.deep.equal([1]);
    expect(aError).to.be.instanceOf(JobClaimLostError);
    expect(aSignal!.aborted).to.equal(true);
    expect(await result(db, 'delivery')).to.equal('sent by b');
  });

  it('fencing: a write by a worker that ignores its signal is refused; its completion does not touch the new claim', async () => {
    const a = runner('gw-a');
    const started = gate();
    const resume = gate();
    let aWrite: unknown;
    a.register(
      'send',
      async (job) => {
        started.open();
        await resume.wait;
        aWrite = await job.fenced((trx) => writeResult(trx, 'delivery', 'sent by a')).catch((e: unknown) => e);
      },
      { leaseSeconds: 60 },
    );
    await a.enqueue(db, 'send', {});
    const aRun = a.drain();
    await started.wait;
    // Another instance took the job over (its lease expired there): a new owner and a new token.
    await db
      .updateTable('jobs')
      .set({ locked_by: 'gw-b', lock_token: 'b-token', locked_until: dbNow(db, 60) })
      .execute();
    resume.open();
    await aRun;
    expect(aWrite).to.be.instanceOf(JobClaimLostError);
    expect(await result(db, 'delivery')).to.equal(undefined);
    const [job] = await jobsOf(db, 'send');
    expect(job, 'A neither completed nor failed the job B holds').to.include({ state: 'running', locked_by: 'gw-b', lock_token: 'b-token' });
  });

  it("a renewal that finds the claim gone aborts the handler's signal", async () => {
    const a = runner('gw-a');
    const started = gate();
    let abortedWith: unknown;
    a.register(
      'send',
      async (job) => {
        started.open();
        await new Promise<void>((res) => job.signal.addEventListener('abort', () => res()));
        abortedWith = job.signal.reason;
      },
      { leaseSeconds: 0.3 },
    );
    await a.enqueue(db, 'send', {});
    const aRun = a.drain();
    await started.wait;
    const before = await findJob(db, (await jobsOf(db, 'send'))[0]!.id);
    // The timer renews every 0.1 s while the claim holds ...
    await eventually(async () => ((await findJob(db, before!.id))!.locked_until! > before!.locked_until! ? true : undefined), 'a renewal');
    // ... and aborts once it does not.
    await db.updateTable('jobs').set({ locked_by: 'gw-b', lock_token: 'b-token' }).execute();
    await aRun;
    expect(abortedWith).to.be.instanceOf(JobClaimLostError);
  });

  it('a job that kills its process every time is dead-lettered after max_attempts', async function () {
    this.timeout(60_000);
    const marker = path.join(tmp.dir, 'runs.txt');
    const r = runner('gw-a');
    await r.enqueue(db, 'crash', {}, { maxAttempts: 3 });
    for (let i = 0; i < 4; i++) {
      const child = spawnSync(process.execPath, ['--import', 'tsx', path.join(root, 'test/jobs/fixtures/crash-worker.ts'), url, marker], {
        cwd: root,
        encoding: 'utf8',
      });
      if (i < 3) expect(child.signal, child.stderr).to.equal('SIGKILL');
      // The next process may take the job only once the dead one's lease has run out (database clock).
      await new Promise((res) => setTimeout(res, 250));
    }
    const runs = existsSync(marker) ? readFileSync(marker, 'utf8').trim().split('\n').length : 0;
    expect(runs, 'the handler ran max_attempts times, no more').to.equal(3);
    const [job] = await jobsOf(db, 'crash');
    expect(job).to.include({ state: 'dead', attempts: 3, last_error: CRASHED, active_key: null });
  });

  it("a restarted worker with the same id takes its earlier run's jobs back at once, not after their lease", async () => {
    const dead = runner('gw-a');
    const started = gate();
    dead.register(
      'k',
      async () => {
        started.open();
        await new Promise(() => undefined);
      },
      { leaseSeconds: 3600 },
    );
    await dead.enqueue(db, 'k', {});
    void dead.drain();
    await started.wait;
    runners.splice(runners.indexOf(dead), 1); // never stopped: it stands for a killed process
    const restarted = new JobRunner({ db, logger: quiet, workerId: 'gw-a' });
    let ran = 0;
    restarted.register('k', async () => {
      ran++;
    });
    await restarted.drain();
    expect(ran, 'the lease still holds').to.equal(0);
    expect(await expireJobClaimsOf(db, 'gw-a')).to.equal(1);
    await restarted.drain();
    expect(ran).to.equal(1);
  });

  it('a recurring job runs at start, waits its interval, and runNow brings its next run forward (once, on one runner)', async () => {
    const runs: string[] = [];
    const a = runner('rec-a');
    const b = runner('rec-b');
    for (const [r, name] of [
      [a, 'a'],
      [b, 'b'],
    ] as const)
      r.recurring('test.recurring', 3600, async () => void runs.push(name));
    await a.start();
    await b.start();
    await eventually(() => (runs.length === 1 ? true : undefined), 'the first run');
    const rows = await db.selectFrom('jobs').select(['state', 'run_at']).where('kind', '=', 'test.recurring').execute();
    expect(rows, 'one job for the kind, however many runners').to.have.length(1);
    expect(Date.parse(rows[0]!.run_at) - Date.now(), 'next run an interval away').to.be.greaterThan(3500_000);
    await a.runNow('test.recurring');
    await eventually(() => (runs.length === 2 ? true : undefined), 'the run brought forward');
    await a.idle();
    await b.idle();
    expect(runs).to.have.length(2);
  });

  it('full jitter: a retry delay is anywhere between 0 and the capped exponential', () => {
    expect(backoffSeconds(1, 5, 600, () => 1)).to.equal(5);
    expect(backoffSeconds(4, 5, 600, () => 1)).to.equal(40);
    expect(backoffSeconds(20, 5, 600, () => 1)).to.equal(600);
    expect(backoffSeconds(4, 5, 600, () => 0)).to.equal(0);
    expect(backoffSeconds(4, 5, 600, () => 0.5)).to.equal(20);
  });

  it("one claim statement takes each kind's due jobs up to that kind's limit, oldest first, leased for that kind's time, one per queue", async () => {
    const add = (id: string, kind: string, o: { queue?: string; runAt?: string } = {}) =>
      insertJob(db, { id, kind, payload: 'null', maxAttempts: 5, queue: o.queue, runAt: o.runAt });
    await add('a1', 'alpha', { runAt: '2026-01-01T00:00:03.000Z' });
    await add('a2', 'alpha', { runAt: '2026-01-01T00:00:01.000Z' });
    await add('a3', 'alpha', { runAt: '2026-01-01T00:00:02.000Z' });
    await add('a4', 'alpha', { runAt: '2999-01-01T00:00:00.000Z' }); // not due
    await add('b1', 'beta', { queue: 'q' });
    await add('b2', 'beta', { queue: 'q' }); // behind b1 in its queue
    await add('b3', 'beta', { queue: 'r' });
    await add('g1', 'gamma');
    const before = Date.parse(await databaseNow(db));
    const rows = await claimDueJobs(
      db,
      [
        { kind: 'alpha', limit: 2, leaseSeconds: 60 },
        { kind: 'beta', limit: 5, leaseSeconds: 600 },
        { kind: 'gamma', limit: 0, leaseSeconds: 60 }, // no free slot: not claimed
      ],
      'gw-a',
      'token-1',
    );
    expect(rows.map((r) => r.id).sort()).to.deep.equal(['a2', 'a3', 'b1', 'b3']);
    for (const r of rows) {
      expect([r.state, r.locked_by, r.lock_token, r.attempts]).to.deep.equal(['running', 'gw-a', 'token-1', 1]);
      const lease = (Date.parse(r.locked_until!) - before) / 1000;
      expect(lease, r.id).to.be.within(r.kind === 'alpha' ? 59 : 599, r.kind === 'alpha' ? 62 : 602);
    }
    // What is left: a1 (alpha's limit), b2 once b1 is done, g1; a4 is not due.
    expect((await claimDueJobs(db, [{ kind: 'beta', limit: 5, leaseSeconds: 60 }], 'gw-b', 'token-2')).map((r) => r.id)).to.deep.equal([]);
    await db.deleteFrom('jobs').where('id', '=', 'b1').execute();
    // Compiled once per set of kinds, limits and leases (the runner's cache): the worker and token still vary.
    const cache = new Map<string, CompiledQuery>();
    const all = ['alpha', 'beta', 'gamma'].map((kind) => ({ kind, limit: 5, leaseSeconds: 60 }));
    const next = await claimDueJobs(db, all, 'gw-b', 'token-2', cache);
    expect(next.map((r) => r.id).sort()).to.deep.equal(['a1', 'b2', 'g1']);
    await add('g2', 'gamma');
    const again = await claimDueJobs(db, all, 'gw-c', 'token-4', cache);
    expect(again.map((r) => [r.id, r.locked_by, r.lock_token])).to.deep.equal([['g2', 'gw-c', 'token-4']]);
    expect(cache.size).to.equal(1);
    expect((await findJob(db, 'g1'))?.lock_token, 'the earlier claim is untouched').to.equal('token-2');
    expect(await claimDueJobs(db, [], 'gw-b', 'token-3')).to.deep.equal([]);
  });

  it('uses the database clock as ISO-8601 UTC text comparable with stored times', async () => {
    const now = await databaseNow(db);
    expect(now).to.match(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(Math.abs(Date.parse(now) - Date.now())).to.be.below(5000);
    const r = await sql<{ later: string }>`select ${dbNow(db, 90)} as later`.execute(db);
    expect(Date.parse(r.rows[0]!.later) - Date.parse(now)).to.be.within(89_000, 91_000);
  });
});

describe('job engine: two instances on PostgreSQL', function () {
  this.timeout(60_000);
  let tmp: ReturnType<typeof makeTempDir>;
  let dbs: OpenedDatabase[] = [];

  beforeEach(async function () {
    requirePostgres(this);
    tmp = makeTempDir();
    const url = createTestPostgresDatabase(tmp.dir);
    dbs = [openDatabase(url), openDatabase(url)];
    await migrateToLatest(dbs[0]!.db);
  });
  afterEach(async () => {
    for (const d of dbs) await d.close();
    dbs = [];
    tmp?.cleanup();
  });

  it("one queue's jobs run in order, one at a time, across two instances; no job runs twice", async () => {
    const events: string[] = [];
    const running = new Map<string, number>();
    const runners = dbs.map((d, i) => {
      const r = new JobRunner({ db: d.db, logger: quiet, workerId: `gw-${i}`, pollMs: 20 });
      r.register(
        'deliver',
        async (job: JobContext<{ q: string; n: number }>) => {
          const { q, n } = job.payload;
          running.set(q, (running.get(q) ?? 0) + 1);
          if (running.get(q)! > 1) events.push(`OVERLAP ${q}`);
          await new Promise((res) => setTimeout(res, Math.floor(Math.random() * 4)));
          events.push(`${q}:${n}`);
          running.set(q, running.get(q)! - 1);
        },
        { concurrency: 4 },
      );
      return r;
    });
    const queues = ['p1', 'p2', 'p3'];
    for (let n = 0; n < 20; n++) for (const q of queues) await runners[0]!.enqueue(dbs[0]!.db, 'deliver', { q, n }, { queue: `destination:${q}` });
    for (const r of runners) await r.start();
    try {
      await eventually(() => events.length >= 60 || undefined, 'all 60 jobs', 30_000);
    } finally {
      for (const r of runners) await r.stop();
    }
    expect(events.filter((e) => e.startsWith('OVERLAP'))).to.deep.equal([]);
    for (const q of queues) {
      expect(events.filter((e) => e.startsWith(`${q}:`))).to.deep.equal(Array.from({ length: 20 }, (_, n) => `${q}:${n}`));
    }
    expect(events).to.have.length(60);
    const left = await dbs[0]!.db.selectFrom('jobs').select('id').execute();
    expect(left).to.deep.equal([]);
  });
});
