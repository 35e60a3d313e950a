import path from 'node:path';
import { expect } from 'chai';
import { testDatabaseUrl } from '../helpers/tmp.js';
import { API_TOKENS, ApiGateway } from '../helpers/api-gateway.js';
import { eventually } from '../helpers/eventually.js';
import { havePythonHl7Server, PythonMllpServer } from '../helpers/python-mllp-server.js';

interface StatusMsg {
  controlId: string;
  orc1: string;
  orc2: string;
  orc3: string;
  orc5: string;
  obr3: string;
  nte3: string;
  pid3: string;
}

/** The ORC-1 SC messages among what the simulated RIS received (the ORU write-backs are the other traffic). */
function statusMessages(received: readonly string[], accession: string): StatusMsg[] {
  return received
    .map((raw) =>
      raw
        .split('\r')
        .filter((s) => s.length > 0)
        .map((s) => s.split('|')),
    )
    .filter((segs) => segs.find((s) => s[0] === 'ORC')?.[1] === 'SC' && segs.find((s) => s[0] === 'OBR')?.[3] === accession)
    .map((segs) => {
      const seg = (name: string) => segs.find((s) => s[0] === name) ?? [];
      const msh = seg('MSH');
      const orc = seg('ORC');
      return {
        controlId: msh[9] ?? '',
        orc1: orc[1] ?? '',
        orc2: orc[2] ?? '',
        orc3: orc[3] ?? '',
        orc5: orc[5] ?? '',
        obr3: seg('OBR')[3] ?? '',
        nte3: seg('NTE')[3] ?? '',
        pid3: seg('PID')[3] ?? '',
      };
    });
}

const tokenOf = (readerId: string) => (readerId === 'dr-a' ? API_TOKENS.reader : API_TOKENS.readerB);

describe('The RIS worklist knows: order status updates (ORM^O01, ORC-1 SC) over the write-back sender', function () {
  this.timeout(120_000);

  describe('with the simulated RIS', () => {
    const fx: ApiGateway = new ApiGateway({
      configure: (c) => ({
        ...c,
        database: { url: testDatabaseUrl(path.join(fx.tmp.dir, 'gw.db')) },
        writeBack: { ...c.writeBack, statusUpdates: true, statusText: 'second read in progress: {rule}' },
      }),
    });
    before(() => fx.start());
    after(() => fx.stop());

    it('opened, forwarded, assigned, then reported: IP... then CM, in order, for the original order (ORC-2/3, OBR-3) with the rule in NTE-3', async () => {
      const { study, caseId, readerId } = await fx.flaggedStudy();
      const acc = study.accessionNumber;
      const c = (await fx.call('GET', `/api/cases/${caseId}`, API_TOKENS.admin)).body as { ruleIds: string[] };
      expect(c.ruleIds.length).to.be.greaterThan(0);
      expect((await fx.call('POST', `/api/cases/${caseId}/report`, tokenOf(readerId), { text: 'Agree.', radpeerScore: '1' })).status).to.equal(201);
      const msgs = await eventually(
        () => {
          const m = statusMessages(fx.ris.received, acc);
          return m.length > 0 && m[m.length - 1]!.orc5 === 'CM' ? m : undefined;
        },
        'the CM status update',
        30_000,
      );
      // One message per event that changes what the worklist shows, in the order they happened.
      const audited = await fx.gw.db
        .selectFrom('audit_events')
        .select('action')
        .where('entity_id', '=', caseId)
        .where('action', 'in', ['case.created', 'case.assigned', 'case.forwarding', 'case.awaiting-read', 'case.reported'])
        .orderBy('id')
        .execute();
      expect(audited.map((a) => a.action)).to.include.members(['case.created', 'case.awaiting-read', 'case.reported']);
      const expected = audited.filter((a) => a.action !== 'case.forwarding').map((a) => (a.action === 'case.reported' ? 'CM' : 'IP'));
      expect(msgs.map((m) => m.orc5)).to.deep.equal(expected);
      for (const m of msgs) {
        expect(m.orc1).to.equal('SC');
        expect(m.orc2, 'ORC-2: the placer order number of the ORM').to.equal(`PL${acc}`);
        expect(m.orc3, 'ORC-3: its filler order number').to.equal(acc);
        expect(m.obr3).to.equal(acc);
        expect(m.pid3).to.match(new RegExp(`^${study.patientId}`));
        expect(m.nte3.startsWith(`second read in progress: ${c.ruleIds.join(', ')}`), m.nte3).to.equal(true);
      }
      expect(new Set(msgs.map((m) => m.controlId)).size, 'each its own MSH-10').to.equal(msgs.length);
      // Acknowledged: nothing left to send. The RIS has the last message before the gateway has read its ACK, so wait for that.
      const states = async () =>
        (await fx.gw.db.selectFrom('outbound_messages').select('state').where('case_id', '=', caseId).where('kind', '=', 'status-update').execute()).map(
          (l) => l.state,
        );
      await eventually(async () => ((await states()).every((st) => st === 'accepted') ? true : undefined), 'every status update accepted');
      expect(await states()).to.deep.equal(msgs.map(() => 'accepted'));
    });

    it('held (no reader left), then cancelled: HD with why, then CA', async () => {
      const { study, caseId, readerId } = await fx.flaggedStudy();
      const acc = study.accessionNumber;
      // The assigned reader declines; the other one is given it and declines too: nobody is left, so the case is held.
      expect((await fx.call('POST', `/api/cases/${caseId}/decline`, tokenOf(readerId), { reason: 'conflict of interest' })).status).to.be.lessThan(300);
      const other = await eventually(async () => {
        const c = (await fx.call('GET', `/api/cases/${caseId}`, API_TOKENS.admin)).body as { readerId: string | null };
        return c.readerId && c.readerId !== readerId ? c.readerId : undefined;
      }, 'the case to go to the other reader');
      expect((await fx.call('POST', `/api/cases/${caseId}/decline`, tokenOf(other), { reason: 'on leave' })).status).to.be.lessThan(300);
      await eventually(
        async () => ((await fx.call('GET', `/api/cases/${caseId}`, API_TOKENS.admin)).body as { state: string }).state === 'held',
        'the case held',
      );
      const held = await eventually(
        () => {
          const m = statusMessages(fx.ris.received, acc);
          return m.some((x) => x.orc5 === 'HD') ? m : undefined;
        },
        'the HD status update',
        30_000,
      );
      expect(held[held.length - 1]!.orc5).to.equal('HD');
      expect(held[held.length - 1]!.nte3).to.include('on hold: ');
      expect((await fx.call('POST', `/api/cases/${caseId}/cancel`, API_TOKENS.qa, { reason: 'not needed' })).status).to.equal(200);
      const all = await eventually(
        () => {
          const m = statusMessages(fx.ris.received, acc);
          return m.length > 0 && m[m.length - 1]!.orc5 === 'CA' ? m : undefined;
        },
        'the CA status update',
        30_000,
      );
      const codes = all.map((m) => m.orc5);
      expect(codes[0]).to.equal('IP');
      expect(codes.slice(-2)).to.deep.equal(['HD', 'CA']);
      expect(codes.filter((x) => x === 'CM')).to.deep.equal([]);
    });
  });

  describe("with Debian's python3-hl7 MLLP server as the RIS", () => {
    let py: PythonMllpServer | undefined;
    let fx: ApiGateway | undefined;
    before(async function () {
      if (!havePythonHl7Server()) {
        console.log('      skipped: python3-hl7 not installed');
        this.skip();
      }
      py = await PythonMllpServer.start();
      const port = py.port;
      fx = new ApiGateway({
        configure: (c) => ({
          ...c,
          database: { url: testDatabaseUrl(path.join(fx!.tmp.dir, 'gw.db')) },
          hl7: { ...c.hl7, ris: { host: '127.0.0.1', port } },
          writeBack: { ...c.writeBack, statusUpdates: true, statusText: 'second read in progress: {rule}' },
        }),
      });
      await fx.start();
    });
    after(async () => {
      await fx?.stop();
      await py?.stop();
    });

    it('parses every update: ORC-1 SC, ORC-5 IP then CM, the order numbers and the note; AA to each', async () => {
      const { study, caseId, readerId } = await fx!.flaggedStudy();
      const acc = study.accessionNumber;
      expect((await fx!.call('POST', `/api/cases/${caseId}/report`, tokenOf(readerId), { text: 'Agree.', radpeerScore: '1' })).status).to.equal(201);
      const seen = await eventually(
        () => {
          const m = py!.seen.filter((s) => s.orc1 === 'SC' && s.obr3 === acc);
          return m.length > 0 && m[m.length - 1]!.orc5 === 'CM' ? m : undefined;
        },
        'the CM update at the python server',
        30_000,
      );
      expect(seen[0]!.orc5).to.equal('IP');
      for (const s of seen) {
        expect(s.messageType).to.equal('ORM^O01');
        expect(s.ackCode).to.equal('AA');
        expect(s.orc2).to.equal(`PL${acc}`);
        expect(s.orc3).to.equal(acc);
        expect(s.nte3).to.match(/^second read in progress: /);
      }
      expect(py!.errors).to.equal('');
    });
  });
});
