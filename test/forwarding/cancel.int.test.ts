import { expect } from 'chai';
import { Hl7Message } from '../../src/hl7/hl7-message.js';
import { eventually } from '../helpers/eventually.js';
import { LifecycleGateway, LT } from '../helpers/lifecycle-fixture.js';
import { havePythonHl7Server, PythonMllpServer } from '../helpers/python-mllp-server.js';

const engine = process.env['GATEWAY_TEST_DATABASE_URL'] ? 'PostgreSQL' : 'SQLite';

describe(`a cancelled case stops everything (${engine})`, function () {
  this.timeout(120_000);

  describe('pool down while the delivery retries', () => {
    const f = new LifecycleGateway({ poolDown: true });
    before(() => f.start());
    after(() => f.stop());

    it('cancel via the API, then the pool comes up: nothing arrives, the delivery is cancelled, the pool is not told (it got nothing)', async () => {
      const { caseId, study } = await f.flaggedCase(3);
      const retrying = await f.caseWhen(caseId, 'the delivery retrying', (c) => (c.deliveries[0]?.attempts ?? 0) >= 2);
      expect(retrying.state).to.equal('forwarding');
      expect(retrying.deliveries[0]!.lastError).to.match(/ECONNREFUSED|connect/i);

      const r = await f.call('POST', `/api/cases/${caseId}/cancel`, LT.qa, { reason: 'order withdrawn by the ward' });
      expect(r.status, JSON.stringify(r.body)).to.equal(200);
      expect(r.body['state']).to.equal('cancelled');
      expect((r.body['deliveries'] as { state: string }[]).map((d) => d.state)).to.deep.equal(['cancelled']);

      await f.pool.start(f.pool.port);
      await f.passes(6);
      expect(f.storesOf(study.studyInstanceUid)).to.equal(0);
      const after = await f.getCase(caseId);
      expect(after.state).to.equal('cancelled');
      expect(after.deliveries[0]).to.deep.include({ state: 'cancelled', instancesSent: 0 });
      // Nothing reached the pool, so there is nothing to call back.
      expect(f.poolChannel!.received).to.deep.equal([]);
      // The instances the delivery would still have sent are dropped.
      const left = await f.gw.db
        .selectFrom('delivery_instances as x')
        .innerJoin('deliveries as d', 'd.id', 'x.delivery_id')
        .select('x.state')
        .where('d.case_id', '=', caseId)
        .execute();
      expect(left).to.deep.equal([]);

      const audit = (await f.call('GET', `/api/audit?entityType=case&entityId=${caseId}`, LT.admin)).body['items'] as {
        action: string;
        actor: string;
        details: Record<string, unknown>;
      }[];
      const cancelled = audit.find((a) => a.action === 'case.cancelled')!;
      expect(cancelled.actor).to.equal('quinn');
      expect(cancelled.details).to.deep.include({ from: 'forwarding', reason: 'order withdrawn by the ward' });
      expect(cancelled.details['stopped']).to.deep.include({ deliveries: 1 });

      // A retry cannot bring it back; a second cancel is a conflict.
      expect((await f.call('POST', `/api/cases/${caseId}/retry`, LT.qa)).status).to.equal(409);
      expect((await f.call('POST', `/api/cases/${caseId}/cancel`, LT.qa)).status).to.equal(409);
      expect((await f.call('POST', `/api/cases/${caseId}/cancel`, LT.qa, { reason: 42 })).status).to.equal(400);
      expect((await f.call('POST', '/api/cases/no-such-case/cancel', LT.qa)).status).to.equal(404);
    });

    it('a late instance of a cancelled case whose delivery had completed is not sent as a delta', async () => {
      // The pool was started again by the test above.
      const { caseId, study } = await f.flaggedCase(2);
      await f.caseWhen(caseId, 'delivered', (c) => c.state === 'awaiting-read');
      expect(f.storesOf(study.studyInstanceUid)).to.equal(2);
      expect((await f.call('POST', `/api/cases/${caseId}/cancel`, LT.admin)).status).to.equal(200);
      const c = await f.getCase(caseId);
      // What arrived stays delivered: that is what the pool has.
      expect(c.deliveries[0]!.state).to.equal('delivered');
      // One more instance of the same study arrives late.
      const late = await f.gw.db
        .selectFrom('instances')
        .selectAll()
        .where('study_instance_uid', '=', study.studyInstanceUid)
        .limit(1)
        .executeTakeFirstOrThrow();
      await f.gw.db
        .insertInto('instances')
        .values({ ...late, sop_instance_uid: `${late.sop_instance_uid}.99` })
        .execute();
      await f.passes(4);
      expect(f.storesOf(study.studyInstanceUid)).to.equal(2);
      expect((await f.getCase(caseId)).deliveries[0]!.instancesTotal).to.equal(2);
    });
  });

  describe('a slow pool, de-identified, with an HL7 channel for orders', () => {
    const f = new LifecycleGateway({ poolDelayMs: 300, deidentify: true });
    before(() => f.start());
    after(() => f.stop());

    it('cancel mid-delivery: at most the instance in flight arrives afterwards; the pool gets ORM^O01 ORC-1 CA under the pseudonyms it saw', async () => {
      const { caseId, study } = await f.flaggedCase(8);
      await eventually(() => f.pool.stores.length >= 2, 'two instances at the slow pool', 30_000);
      const r = await f.call('POST', `/api/cases/${caseId}/cancel`, LT.admin, { reason: 'duplicate request' });
      expect(r.status).to.equal(200);
      const atCancel = f.pool.stores.length;
      // The worker learns of the cancel before its next instance: once it is idle, whatever was in flight has landed.
      await f.gw.forwarding.idle();
      await f.passes(3);
      const arrivedAfter = f.pool.stores.length - atCancel;
      expect(arrivedAfter, `${arrivedAfter} instances arrived after the cancel`).to.be.at.most(1);
      expect(f.pool.stores.length).to.be.lessThan(8);
      const c = await f.getCase(caseId);
      expect(c.deliveries[0]!.state).to.equal('cancelled');
      // What was recorded as sent is what the pool has.
      expect(c.deliveries[0]!.instancesSent).to.equal(f.pool.stores.length);

      const orm = await eventually(() => f.poolChannel!.received.find((m) => m.includes('ORM^O01')), 'the cancel order at the pool');
      const m = Hl7Message.parse(orm);
      expect(m.get('ORC-1')).to.equal('CA');
      expect(m.get('ORC-2')).to.equal(caseId);
      const pseudonyms = await f.gw.db.selectFrom('pseudonyms').selectAll().where('study_instance_uid', '=', study.studyInstanceUid).execute();
      const seen = (kind: string, original: string) => pseudonyms.find((p) => p.kind === kind && p.original === original)?.pseudonym;
      expect(m.get('OBR-3')).to.equal(seen('accession', study.accession)).and.to.not.equal(study.accession);
      expect(m.get('ORC-3')).to.equal(m.get('OBR-3'));
      expect(m.get('PID-3.1')).to.equal(seen('patient-id', study.mrn));
      expect(m.get('ZDS-1.1')).to.equal(seen('uid', study.studyInstanceUid));
      // The pool's copy is under the same pseudonymous study UID.
      expect(f.pool.stores[0]!.studyInstanceUid).to.equal(m.get('ZDS-1.1'));
      expect(orm).to.not.include(study.mrn).and.not.include(study.accession).and.not.include('duplicate request');
      const told = await f.caseWhen(caseId, 'the notice accepted', () => true);
      expect(told.state).to.equal('cancelled');
      // Told once, however many passes follow.
      await f.passes(3);
      expect(f.poolChannel!.received.filter((x) => x.includes('ORM^O01'))).to.have.length(1);
      const timeline = (await f.call('GET', `/api/cases/${caseId}/timeline`, LT.admin)).body['items'] as { kind: string }[];
      expect(timeline.map((t) => t.kind)).to.include.members(['delivery-cancelled', 'pool-told']);
    });
  });

  describe('a slow pool, and the study held mid-delivery', () => {
    const f = new LifecycleGateway({ poolDelayMs: 300 });
    before(() => f.start());
    after(() => f.stop());

    it('pauses after the instance in flight, waits as pending while held, and sends the rest (each instance once) after the release', async () => {
      const { caseId, study } = await f.flaggedCase(6);
      await eventually(() => f.storesOf(study.studyInstanceUid) >= 2, 'two instances at the slow pool', 30_000);
      await f.gw.db
        .updateTable('studies')
        .set({ state: 'held', hold_reason: 'identity-conflict', held_from_state: 'stable' })
        .where('study_instance_uid', '=', study.studyInstanceUid)
        .execute();
      const atHold = f.storesOf(study.studyInstanceUid);
      // The worker sees the hold before its next instance and parks the delivery: idle means it has stopped.
      await f.gw.forwarding.idle();
      await f.passes(3);
      expect(f.storesOf(study.studyInstanceUid) - atHold).to.be.at.most(1);
      const paused = await f.getCase(caseId);
      expect(paused.state).to.equal('forwarding');
      expect(paused.deliveries[0]).to.deep.include({ state: 'pending', instancesSent: f.storesOf(study.studyInstanceUid) });
      expect(f.storesOf(study.studyInstanceUid)).to.be.lessThan(6);

      // Released as QA does it: the study is stable again and its planning job gives the parked delivery its job back.
      const released = await f.call('POST', `/api/studies/${study.studyInstanceUid}/release`, LT.qa, { reason: 'checked' });
      expect(released.status, JSON.stringify(released.body)).to.equal(200);
      await f.caseWhen(caseId, 'delivered after the release', (c) => c.state === 'awaiting-read', 30_000);
      const uids = f.pool.stores.filter((x) => x.studyInstanceUid === study.studyInstanceUid).map((x) => x.sopInstanceUid);
      expect(uids).to.have.length(6);
      expect(new Set(uids).size).to.equal(6);
    });
  });

  describe('a pending write-back with the RIS down', () => {
    const f = new LifecycleGateway();
    before(() => f.start());
    after(() => f.stop());

    it('cancel, then the RIS comes back: the write-back is never sent; the pool is told over its HL7 channel', async () => {
      const { caseId, study } = await f.flaggedCase(2);
      await f.caseWhen(caseId, 'awaiting its read', (c) => c.state === 'awaiting-read');
      await f.ris.stop();
      const posted = await f.call('POST', `/api/cases/${caseId}/report`, LT.system, { text: 'Concur.', radpeerScore: '1', readerId: 'dr-x' });
      expect(posted.status, JSON.stringify(posted.body)).to.equal(201);
      await f.caseWhen(caseId, 'write-back retrying', (c) => (c.writeBack?.attempts ?? 0) >= 2);

      const r = await f.call('POST', `/api/cases/${caseId}/cancel`, LT.qa);
      expect(r.status).to.equal(200);
      expect((r.body['writeBack'] as { state: string }).state).to.equal('cancelled');
      await f.ris.start(f.ris.port);
      await f.passes(6);
      expect(f.ris.received).to.deep.equal([]);
      const c = await f.getCase(caseId);
      expect(c.state).to.equal('cancelled');
      expect(c.writeBack!.state).to.equal('cancelled');

      const orm = await eventually(() => f.poolChannel!.received.find((m) => m.includes('ORM^O01')), 'the cancel order at the pool');
      const m = Hl7Message.parse(orm);
      // Not de-identified: the identifiers the pool was sent are the real ones, with their authority.
      expect(m.get('ORC-1')).to.equal('CA');
      expect(m.get('OBR-3')).to.equal(study.accession);
      expect(m.get('PID-3.1')).to.equal(study.mrn);
      expect(m.get('ZDS-1.1')).to.equal(study.studyInstanceUid);
    });

    it('a failed write-back of a cancelled case cannot be retried', async () => {
      const { caseId } = await f.flaggedCase(2);
      await f.caseWhen(caseId, 'awaiting its read', (c) => c.state === 'awaiting-read');
      f.ris.script.push('AR');
      await f.call('POST', `/api/cases/${caseId}/report`, LT.system, { text: 'Concur.', radpeerScore: '1', readerId: 'dr-x' });
      await f.caseWhen(caseId, 'write-back refused', (c) => c.state === 'failed');
      expect((await f.call('POST', `/api/cases/${caseId}/cancel`, LT.qa)).status).to.equal(200);
      const before = f.ris.received.length;
      expect((await f.call('POST', `/api/cases/${caseId}/retry-write-back`, LT.qa)).status).to.equal(409);
      await f.passes(3);
      expect(f.ris.received.length).to.equal(before);
      expect((await f.getCase(caseId)).writeBack!.state).to.equal('failed');
    });
  });

  describe("the pool's HL7 channel is python-hl7's MLLP server", () => {
    let py: PythonMllpServer | undefined;
    let f: LifecycleGateway | undefined;
    before(async function () {
      if (!havePythonHl7Server()) {
        console.log('      skipped: python3-hl7 is not installed (apt-get install python3-hl7)');
        this.skip();
      }
      py = await PythonMllpServer.start();
      f = new LifecycleGateway({ poolHl7Port: py.port });
      await f.start();
    });
    after(async () => {
      await f?.stop();
      await py?.stop();
    });

    it('parses our ORM^O01 cancel and acknowledges it', async () => {
      const { caseId, study } = await f!.flaggedCase(2);
      await f!.caseWhen(caseId, 'delivered', (c) => c.state === 'awaiting-read');
      expect((await f!.call('POST', `/api/cases/${caseId}/cancel`, LT.admin)).status).to.equal(200);
      const seen = await eventually(() => py!.seen.at(-1), 'python-hl7 to read the cancel').catch(async (err: Error) => {
        const rows = await f!.gw.db.selectFrom('outbound_messages').select(['kind', 'state', 'last_error']).where('case_id', '=', caseId).execute();
        throw new Error(`${err.message}; python: ${py!.errors}; messages: ${JSON.stringify(rows)}`);
      });
      expect(seen.ackCode).to.equal('AA');
      expect(seen.messageType).to.equal('ORM^O01');
      expect(seen.orc1).to.equal('CA');
      expect(seen.obr3).to.equal(study.accession);
      expect(seen.pid3.split('^')[0]).to.equal(study.mrn);
      expect(seen.zds1).to.equal(study.studyInstanceUid);
      const row = await eventually(
        () =>
          f!.gw.db
            .selectFrom('outbound_messages')
            .selectAll()
            .where('case_id', '=', caseId)
            .where('kind', '=', 'pool-cancel')
            .where('state', '=', 'accepted')
            .executeTakeFirst(),
        'the notice accepted',
      );
      expect(row.control_id).to.equal(seen.controlId);
      expect(py!.errors).to.equal('');
    });
  });
});
