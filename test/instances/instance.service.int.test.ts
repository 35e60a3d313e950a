import { expect } from 'chai';
import { claimDue, insertDelivery } from '../../src/forwarding/outbox.repository.js';
import { acquireLease } from '../../src/instances/instance.repository.js';
import { InstanceService } from '../../src/instances/instance.service.js';
import { silentLogger } from '../helpers/hl7-peers.js';
import { openTempDatabase } from '../helpers/tmp.js';

describe('InstanceService start-up (claims of an earlier run)', () => {
  let t: Awaited<ReturnType<typeof openTempDatabase>>;
  beforeEach(async () => (t = await openTempDatabase()));
  afterEach(async () => t.close());

  it('takes back what a killed run under the same id still held, and leaves other instances\' claims alone', async () => {
    const db = t.opened.db;
    const at = '2026-03-01T10:00:00.000Z';
    for (const id of ['d1', 'd2']) await insertDelivery(db, { id, caseId: `c-${id}`, destinationId: id === 'd1' ? 'p1' : 'p2', studyInstanceUid: `1.2.${id.length}${id}`, deidentify: false, now: at });
    const farFuture = '2026-03-01T11:00:00.000Z';
    // The earlier run of "gw-a" claimed d1 and a destination lease, "gw-b" claimed d2; then gw-a was SIGKILLed.
    expect((await claimDue(db, 'gw-a', at, farFuture, 1, ['p1'])).map((d) => d.id)).to.deep.equal(['d1']);
    expect((await claimDue(db, 'gw-b', at, farFuture, 1, ['p2'])).map((d) => d.id)).to.deep.equal(['d2']);
    expect(await acquireLease(db, 'destination:p1', 'gw-a', at, farFuture)).to.equal(true);

    const now = '2026-03-01T10:01:00.000Z';
    // Before the restart, nobody may take them (the leases run for an hour).
    expect(await claimDue(db, 'gw-a', now, farFuture, 10)).to.deep.equal([]);
    expect(await acquireLease(db, 'destination:p1', 'gw-c', now, farFuture)).to.equal(false);

    const restarted = new InstanceService({ db, logger: silentLogger, instanceId: 'gw-a', leaseSeconds: 3600, clock: () => new Date(now) });
    await restarted.start();
    try {
      const later = '2026-03-01T10:01:00.001Z';
      expect((await claimDue(db, 'gw-a', later, farFuture, 10)).map((d) => d.id)).to.deep.equal(['d1']);
      expect(await acquireLease(db, 'destination:p1', 'gw-a', later, farFuture)).to.equal(true);
      const d2 = await db.selectFrom('deliveries').select(['lease_owner', 'lease_expires_at']).where('id', '=', 'd2').executeTakeFirstOrThrow();
      expect(d2).to.deep.equal({ lease_owner: 'gw-b', lease_expires_at: farFuture });
    } finally {
      await restarted.stop();
    }
  });
});
