import { expect } from 'chai';
import { insertDelivery, updateDelivery } from '../../src/forwarding/outbox.repository.js';
import { claimJobs, insertJob } from '../../src/jobs/job.repository.js';
import { InstanceService } from '../../src/instances/instance.service.js';
import { insertOutbound } from '../../src/reports/outbound.repository.js';
import { silentLogger } from '../helpers/hl7-peers.js';
import { openTempDatabase } from '../helpers/tmp.js';

describe('InstanceService: start-up (claims of an earlier run) and the claims each instance holds', () => {
  let t: Awaited<ReturnType<typeof openTempDatabase>>;
  beforeEach(async () => (t = await openTempDatabase()));
  afterEach(async () => t.close());

  it("takes back what a killed run under the same id still held, and leaves other instances' claims alone", async () => {
    const db = t.opened.db;
    const now = '2026-03-01T10:01:00.000Z';
    for (const id of ['d1', 'd2'])
      await insertJob(db, { id, kind: 'forwarding.deliver', payload: JSON.stringify({ deliveryId: id }), key: id, maxAttempts: 5 });
    // The earlier run of "gw-a" claimed d1, "gw-b" claimed d2 (leases of an hour); then gw-a was SIGKILLed.
    expect((await claimJobs(db, 'forwarding.deliver', 'gw-a', 'ta', 3600, 1)).map((j) => j.id)).to.deep.equal(['d1']);
    expect((await claimJobs(db, 'forwarding.deliver', 'gw-b', 'tb', 3600, 1)).map((j) => j.id)).to.deep.equal(['d2']);
    // Before the restart, nobody may take them.
    expect(await claimJobs(db, 'forwarding.deliver', 'gw-c', 'tc', 3600, 10)).to.deep.equal([]);

    const restarted = new InstanceService({ db, logger: silentLogger, instanceId: 'gw-a', leaseSeconds: 3600, clock: () => new Date(now) });
    await restarted.start();
    try {
      expect((await claimJobs(db, 'forwarding.deliver', 'gw-a', 'ta2', 3600, 10)).map((j) => j.id)).to.deep.equal(['d1']);
      const d2 = await db.selectFrom('jobs').select(['locked_by', 'lock_token']).where('id', '=', 'd2').executeTakeFirstOrThrow();
      expect(d2).to.deep.equal({ locked_by: 'gw-b', lock_token: 'tb' });
    } finally {
      await restarted.stop();
    }
  });

  it('shows what each live instance holds from the running jobs: deliveries, outbound messages and every other job', async () => {
    const db = t.opened.db;
    const a = new InstanceService({ db, logger: silentLogger, instanceId: 'gw-a', leaseSeconds: 3600 });
    const b = new InstanceService({ db, logger: silentLogger, instanceId: 'gw-b', leaseSeconds: 3600 });
    await a.start();
    await b.start();
    try {
      const now = new Date().toISOString();
      await insertDelivery(db, { id: 'd1', caseId: 'c1', destinationId: 'pool', studyInstanceUid: '1.2.3', deidentify: false, now });
      await updateDelivery(db, 'd1', { state: 'sending', updated_at: now });
      await insertOutbound(db, {
        id: 'm1',
        kind: 'write-back',
        case_id: 'c1',
        report_id: 'r1',
        control_id: 'CTL1',
        payload: 'MSH|x',
        state: 'pending',
        attempts: 1,
        next_attempt_at: now,
        last_error: null,
        response: null,
        destination_id: null,
        created_at: now,
        updated_at: now,
      });
      await insertJob(db, { id: 'j-d1', kind: 'forwarding.deliver', payload: '{}', key: 'd1', maxAttempts: 5 });
      await insertJob(db, { id: 'j-m1', kind: 'outbound.send', payload: '{}', key: 'm1', maxAttempts: 5 });
      await insertJob(db, { id: 'j-sla', kind: 'readers.sla', payload: '{}', key: 'c1', maxAttempts: 5 });
      // Not claimed (due later): not shown.
      await insertJob(db, { id: 'j-idle', kind: 'readers.sla', payload: '{}', key: 'c2', maxAttempts: 5, runAt: '2999-01-01T00:00:00.000Z' });
      await claimJobs(db, 'forwarding.deliver', 'gw-a', 'ta', 3600, 1);
      await claimJobs(db, 'readers.sla', 'gw-a', 'ta', 3600, 10);
      await claimJobs(db, 'outbound.send', 'gw-b', 'tb', 3600, 1);
      const view = new Map((await a.list()).map((i) => [i.instanceId, i]));
      const ca = view.get('gw-a')!.claims;
      expect(ca.deliveries.map((d) => [d.id, d.caseId, d.destinationId, d.expired])).to.deep.equal([['d1', 'c1', 'pool', false]]);
      expect(ca.leases.map((l) => [l.name, l.expired])).to.deep.equal([['readers.sla:c1', false]]);
      expect(ca.outbound).to.deep.equal([]);
      const cb = view.get('gw-b')!.claims;
      expect(cb.outbound.map((m) => [m.id, m.caseId, m.kind, m.expired])).to.deep.equal([['m1', 'c1', 'write-back', false]]);
      expect(cb.deliveries).to.deep.equal([]);
      expect(cb.leases).to.deep.equal([]);
      expect(view.get('gw-a')!.self).to.equal(true);
    } finally {
      await b.stop();
      await a.stop();
    }
  });
});
