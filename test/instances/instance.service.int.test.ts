import { expect } from 'chai';
import { claimJobs, insertJob } from '../../src/jobs/job.repository.js';
import { InstanceService } from '../../src/instances/instance.service.js';
import { silentLogger } from '../helpers/hl7-peers.js';
import { openTempDatabase } from '../helpers/tmp.js';

describe('InstanceService start-up (claims of an earlier run)', () => {
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
});
