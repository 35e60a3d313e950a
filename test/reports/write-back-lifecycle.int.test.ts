import { expect } from 'chai';
import { Hl7Message } from '../../src/hl7/hl7-message.js';
import { StudyState } from '../../src/states.js';
import { eventually } from '../helpers/eventually.js';
import { LifecycleGateway, LT } from '../helpers/lifecycle-fixture.js';

const engine = process.env['GATEWAY_TEST_DATABASE_URL'] ? 'PostgreSQL' : 'SQLite';

const statusesOf = (oru: string) => {
  const m = Hl7Message.parse(oru);
  return {
    obr25: m.get('OBR-25'),
    obx11: [...new Set(m.all('OBX').map((s) => m.read(s, { field: 11 })))],
    pid3: m.get('PID-3.1'),
    obr3: m.get('OBR-3.1'),
    controlId: m.get('MSH-10'),
  };
};

describe(`write-back rules: waiting for the primary, addenda as corrections, the hold gate (${engine})`, function () {
  this.timeout(120_000);

  describe('with the pool up', () => {
    const f = new LifecycleGateway();
    before(() => f.start());
    after(() => f.stop());

    it('a second report (and its addendum) taken before the primary report waits; both are built from the primary when it arrives, in order', async () => {
      const { caseId, study } = await f.manualCase(2);
      await f.caseWhen(caseId, 'forwarded without a primary report', (c) => c.state === 'awaiting-read');
      const posted = await f.call('POST', `/api/cases/${caseId}/report`, LT.system, { text: 'No acute finding.', radpeerScore: '1', readerId: 'dr-x' });
      expect(posted.status, JSON.stringify(posted.body)).to.equal(201);
      const waiting = posted.body['case'] as { state: string; writeBack: { state: string } };
      expect(waiting.state).to.equal('reported');
      expect(waiting.writeBack.state).to.equal('waiting');
      const add = await f.call('POST', `/api/cases/${caseId}/report`, LT.system, {
        text: 'Addendum: small nodule, follow up.',
        radpeerScore: '2a',
        readerId: 'dr-x',
        addendum: true,
      });
      expect(add.status, JSON.stringify(add.body)).to.equal(201);
      await f.passes(4);
      // Nothing goes to the RIS without the primary's PID and OBR; the case stays reported, not failed.
      expect(f.ris.received).to.deep.equal([]);
      const still = await f.getCase(caseId);
      expect(still.state).to.equal('reported');
      expect(still.writeBack!.state).to.equal('waiting');
      const timeline = (await f.call('GET', `/api/cases/${caseId}/timeline`, LT.admin)).body['items'] as { kind: string }[];
      expect(timeline.filter((t) => t.kind === 'write-back-waiting')).to.have.length(2);

      await f.sendPrimary(study, `ORU-LATE-${study.accession}`);
      const done = await f.caseWhen(
        caseId,
        'both written back',
        (c) => c.state === 'written-back' && c.writeBack?.state === 'accepted' && c.secondReport?.version === 2,
      );
      expect(done.writeBack!.attempts).to.equal(1);
      const orus = f.ris.received.filter((m) => m.includes('ORU^R01'));
      expect(orus).to.have.length(2);
      const [first, second] = orus.map(statusesOf);
      for (const o of [first!, second!]) {
        expect(o.pid3).to.equal(study.mrn);
        expect(o.obr3).to.equal(study.accession);
      }
      expect(first).to.deep.include({ obr25: 'F', obx11: ['F'] });
      expect(second).to.deep.include({ obr25: 'C', obx11: ['C'] });
      expect(second!.controlId).to.equal(done.writeBack!.controlId);
    });

    it('an addendum after the write-back goes as a correction: OBR-25 C and OBX-11 C, same accession', async () => {
      const { caseId, study } = await f.flaggedCase(2);
      await f.caseWhen(caseId, 'awaiting its read', (c) => c.state === 'awaiting-read');
      const before = f.ris.received.length;
      await f.call('POST', `/api/cases/${caseId}/report`, LT.system, { text: 'Concur.', radpeerScore: '1', readerId: 'dr-x' });
      await f.caseWhen(caseId, 'written back', (c) => c.state === 'written-back');
      const add = await f.call('POST', `/api/cases/${caseId}/report`, LT.system, {
        text: 'Addendum: a missed rib fracture.',
        radpeerScore: '2b',
        readerId: 'dr-x',
        addendum: true,
      });
      expect(add.status).to.equal(201);
      await f.caseWhen(caseId, 'addendum written back', (c) => c.state === 'written-back' && c.secondReport?.version === 2);
      const orus = f.ris.received
        .slice(before)
        .filter((m) => m.includes('ORU^R01'))
        .map(statusesOf);
      expect(orus.map((o) => [o.obr25, o.obx11])).to.deep.equal([
        ['F', ['F']],
        ['C', ['C']],
      ]);
      expect(orus.map((o) => o.obr3)).to.deep.equal([study.accession, study.accession]);
    });

    it('an ORU without PID-3 or OBR-3 is never sent: refused before the wire, visibly', async () => {
      const { caseId } = await f.flaggedCase(2);
      const before = f.ris.received.length;
      const bare = 'MSH|^~\\&|SECONDREAD|GATEWAY|RIS|HOSP|20261202120000||ORU^R01^ORU_R01|GUARD1|P|2.5.1\rPID|1||\rOBR|1|||X\rOBX|1|TX|x||text||||||F\r';
      const id = await f.gw.db.transaction().execute((trx) => f.gw.outbound.enqueue(trx, { kind: 'write-back', caseId, controlId: 'GUARD1', payload: bare }));
      await f.passes(2);
      const row = await eventually(
        () => f.gw.db.selectFrom('outbound_messages').selectAll().where('id', '=', id).where('state', '=', 'failed').executeTakeFirst(),
        'the guard to refuse it',
      );
      expect(row.last_error).to.match(/not sent: the ORU has no PID-3 .* and no OBR-3/);
      expect(f.ris.received.length).to.equal(before);
    });
  });

  describe('a held study sends nothing', () => {
    const f = new LifecycleGateway({ poolDown: true });
    before(() => f.start());
    after(() => f.stop());
    const setStudy = (uid: string, state: StudyState) =>
      f.gw.db
        .updateTable('studies')
        .set({
          state,
          hold_reason: state === StudyState.held ? 'identity-conflict' : null,
          held_from_state: state === StudyState.held ? StudyState.stable : null,
        })
        .where('study_instance_uid', '=', uid)
        .execute();

    it('no delivery claimed and no write-back sent while held; back to stable, both proceed', async () => {
      const { caseId, study } = await f.flaggedCase(3);
      await f.caseWhen(caseId, 'the delivery retrying', (c) => (c.deliveries[0]?.attempts ?? 0) >= 1);
      await setStudy(study.studyInstanceUid, StudyState.held);
      // Let an attempt that was already under way settle, then bring the pool up.
      await f.gw.forwarding.idle();
      const attempts = (await f.getCase(caseId)).deliveries[0]!.attempts;
      await f.pool.start(f.pool.port);
      await f.passes(5);
      expect(f.storesOf(study.studyInstanceUid)).to.equal(0);
      const held = await f.getCase(caseId);
      expect(held.deliveries[0]).to.deep.include({ state: 'pending', attempts });
      expect(held.state).to.equal('forwarding');

      // Released as QA does it: stable again, the study's planning job gives the parked delivery its job back.
      const released = await f.call('POST', `/api/studies/${study.studyInstanceUid}/release`, LT.qa, { reason: 'checked' });
      expect(released.status, JSON.stringify(released.body)).to.equal(200);
      await f.caseWhen(caseId, 'delivered after the release', (c) => c.state === 'awaiting-read');
      expect(f.storesOf(study.studyInstanceUid)).to.equal(3);

      await setStudy(study.studyInstanceUid, StudyState.held);
      const posted = await f.call('POST', `/api/cases/${caseId}/report`, LT.system, { text: 'Concur.', radpeerScore: '1', readerId: 'dr-x' });
      expect(posted.status).to.equal(201);
      await f.passes(4);
      expect(f.ris.received).to.deep.equal([]);
      const waiting = await f.getCase(caseId);
      expect(waiting.writeBack).to.deep.include({ state: 'pending', attempts: 0 });

      await setStudy(study.studyInstanceUid, StudyState.stable);
      await f.caseWhen(caseId, 'written back after the release', (c) => c.state === 'written-back');
      expect(f.ris.received.filter((m) => m.includes('ORU^R01'))).to.have.length(1);
    });
  });
});
