import { expect } from 'chai';
import winston from 'winston';
import { dbNow } from '../../src/db/dialect.js';
import { JobRunner } from '../../src/jobs/job-runner.js';
import { GatewayMetrics } from '../../src/metrics.js';
import { openTempDatabase } from '../helpers/tmp.js';

describe('job metrics', () => {
  let t: Awaited<ReturnType<typeof openTempDatabase>>;
  beforeEach(async () => {
    t = await openTempDatabase();
  });
  afterEach(async () => t.close());

  it('exports job counts by kind and state, the age of the oldest due job, claim latency and run outcomes', async () => {
    const db = t.opened.db;
    const metrics = new GatewayMetrics(db, 'gw-a');
    const runner = new JobRunner({ db, logger: winston.createLogger({ silent: true }), workerId: 'gw-a', metrics, random: () => 0 });
    runner.register('ok', async () => undefined);
    runner.register(
      'bad',
      async () => {
        throw new Error('no');
      },
      { maxAttempts: 1 },
    );
    await runner.enqueue(db, 'ok', 1);
    await runner.enqueue(db, 'bad', 1);
    await runner.drain();
    // Not registered here: one due for 120 s (by the database's clock), one for later.
    await runner.enqueue(db, 'evaluate', 1);
    await db
      .updateTable('jobs')
      .set({ run_at: dbNow(db, -120) })
      .where('kind', '=', 'evaluate')
      .execute();
    await runner.enqueue(db, 'evaluate', 2, { runAt: new Date(Date.now() + 3_600_000) });

    const text = await metrics.registry.metrics();
    // One sample: its name and labels (in any order; instance_id is always gw-a here).
    const value = (name: string, labels: Record<string, string>) => {
      const want = Object.entries({ ...labels, instance_id: 'gw-a' }).map(([k, v]) => `${k}="${v}"`);
      const found = text.split('\n').find((l) => l.startsWith(`${name}{`) && want.every((w) => l.includes(w)) && l.split('="').length - 1 === want.length);
      return found === undefined ? undefined : Number(found.split(' ').pop());
    };
    expect(value('gateway_jobs', { kind: 'bad', state: 'dead' })).to.equal(1);
    expect(value('gateway_jobs', { kind: 'evaluate', state: 'due' })).to.equal(1);
    expect(value('gateway_jobs', { kind: 'evaluate', state: 'pending' })).to.equal(1);
    expect(value('gateway_jobs', { kind: 'ok', state: 'due' }), 'a completed job is gone').to.equal(undefined);
    expect(value('gateway_job_oldest_due_age_seconds', { kind: 'evaluate' })).to.be.within(119, 130);
    expect(value('gateway_job_claim_latency_seconds_count', { kind: 'ok' })).to.equal(1);
    expect(value('gateway_job_runs_total', { kind: 'ok', outcome: 'done' })).to.equal(1);
    expect(value('gateway_job_runs_total', { kind: 'bad', outcome: 'dead' })).to.equal(1);
  });
});
