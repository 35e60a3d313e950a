import SQLite from 'better-sqlite3';
import pg from 'pg';
import { expect } from 'chai';
import { sql } from 'kysely';
import path from 'node:path';
import { HttpServer } from '../../src/http/server.js';
import { insertInstance } from '../../src/studies/study.repository.js';
import { StudyService } from '../../src/studies/study.service.js';
import { RawMllpPeer, type Hl7Stack } from '../helpers/hl7-peers.js';
import { startHl7StudyFixture, type Hl7StudyFixture } from '../helpers/hl7-study-fixture.js';
import { adtA40, aiOru, omiO23, ormO01, oruR01 } from '../helpers/hl7-samples.js';

const ADMIN = 'admin-token-0123456789';
const QA = 'qa-token-0123456789abc';
const READER = 'reader-token-0123456789';

describe('HL7 inbound: store, link, acknowledge (real listener, SQLite file)', () => {
  let fx: Hl7StudyFixture;
  let stack: Hl7Stack;
  let peer: RawMllpPeer;
  let studies: StudyService;
  let http: HttpServer;
  let instance: Hl7StudyFixture['instance'];
  let settle: Hl7StudyFixture['settle'];

  beforeEach(async () => {
    fx = await startHl7StudyFixture({
      tokens: [
        { token: ADMIN, role: 'admin' },
        { token: QA, role: 'qa' },
        { token: READER, role: 'reader', readerId: 'dr-a' },
      ],
    });
    ({ stack, peer, studies, http, instance, settle } = fx);
  });

  afterEach(() => fx.stop());

  /** A study arrives through the real StudyService; waits for its onStudyCreated reconciliation. */
  async function storeStudy(uid: string, accession: string | null, patientId: string | null = 'MRN1001'): Promise<void> {
    expect(await studies.storeInstance(instance(uid, accession, patientId))).to.equal('stored');
    await settle();
  }

  async function api(pathAndQuery: string, token = ADMIN): Promise<{ status: number; body: Record<string, unknown> }> {
    const res = await fetch(`http://127.0.0.1:${http.port}/api${pathAndQuery}`, { headers: { authorization: `Bearer ${token}` } });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  }

  async function study(uid: string) {
    const r = await api(`/studies/${uid}`);
    expect(r.status).to.equal(200);
    return r.body as {
      order: { accessionNumber: string; procedure: { code: string } } | null;
      primaryReport: { current: { status: string; text: string; radiologistId: string; observedAt: string } | null; history: { status: string }[] };
      aiResults: { finding: { code: string }; positive: boolean }[];
    };
  }

  async function count(table: 'hl7_messages' | 'orders' | 'report_versions' | 'ai_results' | 'patient_merges'): Promise<number> {
    const r = await stack.opened.db
      .selectFrom(table)
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .executeTakeFirstOrThrow();
    return Number(r.n);
  }

  async function messageRow(controlId: string) {
    return stack.opened.db.selectFrom('hl7_messages').selectAll().where('control_id', '=', controlId).orderBy('id').execute();
  }

  describe('every order of arrival links to the right study', () => {
    it('study, then order, then report', async () => {
      await storeStudy('1.2.3.100', 'ACC100');
      expect((await peer.send(ormO01({ controlId: 'O100', accession: 'ACC100' }))).code).to.equal('AA');
      expect((await peer.send(oruR01({ controlId: 'R100', accession: 'ACC100' }))).code).to.equal('AA');
      const s = await study('1.2.3.100');
      expect(s.order?.accessionNumber).to.equal('ACC100');
      expect(s.order?.procedure.code).to.equal('CTCHEST');
      expect(s.primaryReport.current).to.include({ status: 'F', radiologistId: 'RAD7', observedAt: '2026-03-01T09:30:00.000Z' });
      expect(s.primaryReport.current?.text).to.match(/^FINDINGS: 2.1 cm spiculated mass/);
      expect((await messageRow('R100'))[0]).to.include({ status: 'applied', study_instance_uid: '1.2.3.100', ack_code: 'AA' });
    });

    it('order first, then the study, then the report', async () => {
      expect((await peer.send(ormO01({ controlId: 'O101', accession: 'ACC101' }))).code).to.equal('AA');
      const pending = await stack.opened.db.selectFrom('orders').select(['link_state']).executeTakeFirstOrThrow();
      expect(pending.link_state).to.equal('pending');
      await storeStudy('1.2.3.101', 'ACC101');
      expect((await peer.send(oruR01({ controlId: 'R101', accession: 'ACC101' }))).code).to.equal('AA');
      const s = await study('1.2.3.101');
      expect(s.order?.accessionNumber).to.equal('ACC101');
      expect(s.primaryReport.current?.status).to.equal('F');
    });

    it('report first, then the order, then the study', async () => {
      expect((await peer.send(oruR01({ controlId: 'R102', accession: 'ACC102' }))).code).to.equal('AA');
      expect((await peer.send(ormO01({ controlId: 'O102', accession: 'ACC102' }))).code).to.equal('AA');
      await storeStudy('1.2.3.102', 'ACC102');
      const s = await study('1.2.3.102');
      expect(s.order?.accessionNumber).to.equal('ACC102');
      expect(s.primaryReport.current?.status).to.equal('F');
      expect((await messageRow('R102'))[0]?.status).to.equal('applied');
    });

    it('report before order, study without accession: the order carries the StudyInstanceUID that links both', async () => {
      expect((await peer.send(oruR01({ controlId: 'R103', accession: 'ACC103' }))).code).to.equal('AA');
      await storeStudy('1.2.3.103', null);
      let s = await study('1.2.3.103');
      expect(s.primaryReport.current).to.equal(null);
      expect((await peer.send(ormO01({ controlId: 'O103', accession: 'ACC103', studyUid: '1.2.3.103' }))).code).to.equal('AA');
      s = await study('1.2.3.103');
      expect(s.order?.accessionNumber).to.equal('ACC103');
      expect(s.primaryReport.current?.status).to.equal('F');
    });

    it('an order and a report for the same accession before the study both link when it arrives', async () => {
      await peer.send(omiO23({ controlId: 'O104', accession: 'ACC104', studyUid: '1.2.3.104' }));
      await peer.send(oruR01({ controlId: 'R104', accession: 'ACC104' }));
      await peer.send(aiOru({ controlId: 'AI104', accession: 'ACC104' }));
      await storeStudy('1.2.3.104', 'ACC104');
      const s = await study('1.2.3.104');
      expect(s.order?.accessionNumber).to.equal('ACC104');
      expect(s.primaryReport.current?.status).to.equal('F');
      expect(s.aiResults.map((a) => [a.finding.code, a.positive])).to.deep.equal([['RID3875', true]]);
    });

    it('a report whose accession matches no order links to the study directly, or waits for it', async () => {
      await storeStudy('1.2.3.105', 'ACC105');
      await peer.send(oruR01({ controlId: 'R105', accession: 'ACC105' }));
      expect((await study('1.2.3.105')).primaryReport.current?.status).to.equal('F');
      expect(await count('orders')).to.equal(0);
      await peer.send(oruR01({ controlId: 'R106', accession: 'ACC-NOWHERE' }));
      const row = await stack.opened.db
        .selectFrom('report_versions')
        .select(['link_state'])
        .where('accession_number', '=', 'ACC-NOWHERE')
        .executeTakeFirstOrThrow();
      expect(row.link_state).to.equal('pending');
      expect((await messageRow('R106'))[0]?.status).to.equal('applied');
    });

    it('a study stored through the repository on the same database is found by a later message', async () => {
      await stack.opened.db
        .transaction()
        .execute((trx) => insertInstance(trx, { ...instance('1.2.3.107', 'ACC107', 'MRN1001'), filePath: 'x' }, new Date().toISOString()));
      await peer.send(oruR01({ controlId: 'R107', accession: 'ACC107' }));
      expect((await study('1.2.3.107')).primaryReport.current?.status).to.equal('F');
    });
  });

  it('keeps every report version (P, F, C): the study shows the current one and the history', async () => {
    await storeStudy('1.2.3.110', 'ACC110');
    await peer.send(oruR01({ controlId: 'V1', accession: 'ACC110' }, { status: 'P', lines: ['prelim'] }));
    await peer.send(oruR01({ controlId: 'V2', accession: 'ACC110' }, { status: 'F', lines: ['final'] }));
    await peer.send(oruR01({ controlId: 'V3', accession: 'ACC110' }, { status: 'C', lines: ['corrected'] }));
    // A late resend of a preliminary does not replace the corrected report.
    await peer.send(oruR01({ controlId: 'V4', accession: 'ACC110' }, { status: 'P', lines: ['late prelim'] }));
    const s = await study('1.2.3.110');
    expect(s.primaryReport.history.map((h) => h.status)).to.deep.equal(['P', 'F', 'C', 'P']);
    expect(s.primaryReport.current).to.include({ status: 'C', text: 'corrected' });
  });

  describe('patient id is a consistency check', () => {
    it('holds a report whose patient id contradicts the study, visible in the API, never linked', async () => {
      await storeStudy('1.2.3.120', 'ACC120', 'MRN1001');
      const ack = await peer.send(oruR01({ controlId: 'WRONG1', accession: 'ACC120', patientId: 'MRN9999' }));
      expect(ack.code).to.equal('AA');
      expect((await study('1.2.3.120')).primaryReport.current).to.equal(null);
      const held = await api('/messages?status=held', QA);
      expect(held.status).to.equal(200);
      const items = held.body['items'] as Record<string, unknown>[];
      expect(items).to.have.length(1);
      expect(items[0]).to.include({ controlId: 'WRONG1', status: 'held', type: 'ORU^R01', kind: 'report' });
      expect(items[0]!['reason']).to.match(/patient id differs from the study/);
      expect(items[0]!['receivedAt']).to.match(/^\d{4}-\d\d-\d\dT/);
      expect(items[0]).not.to.have.property('raw');
    });

    it('holds a pending report when the study that arrives names another patient', async () => {
      await peer.send(oruR01({ controlId: 'WRONG2', accession: 'ACC121', patientId: 'MRN2222' }));
      await storeStudy('1.2.3.121', 'ACC121', 'MRN1001');
      expect((await study('1.2.3.121')).primaryReport.current).to.equal(null);
      expect((await messageRow('WRONG2'))[0]).to.include({ status: 'held' });
    });

    it('holds a report whose patient id contradicts the order with its accession, and an order update for another patient', async () => {
      await peer.send(ormO01({ controlId: 'O122', accession: 'ACC122', patientId: 'MRN1001' }));
      await peer.send(oruR01({ controlId: 'WRONG3', accession: 'ACC122', patientId: 'MRN3333' }));
      expect((await messageRow('WRONG3'))[0]?.reason).to.match(/differs from the order/);
      await peer.send(ormO01({ controlId: 'O122B', accession: 'ACC122', patientId: 'MRN4444' }, { orderControl: 'XO' }));
      expect((await messageRow('O122B'))[0]?.status).to.equal('held');
      await storeStudy('1.2.3.122', 'ACC122', 'MRN1001');
      const s = await study('1.2.3.122');
      // The original order links; neither contradicting message does.
      expect(s.order?.accessionNumber).to.equal('ACC122');
      expect(s.primaryReport.current).to.equal(null);
    });

    it('an A40 merge updates the patient ids we hold and releases what it reconciles', async () => {
      await storeStudy('1.2.3.123', 'ACC123', 'OLD-ID');
      await peer.send(oruR01({ controlId: 'R123', accession: 'ACC123', patientId: 'NEW-ID' }));
      expect((await messageRow('R123'))[0]?.status).to.equal('held');
      expect((await peer.send(adtA40({ controlId: 'M1', patientId: 'NEW-ID', priorPatientId: 'OLD-ID' }))).code).to.equal('AA');
      const st = await stack.opened.db.selectFrom('studies').select('patient_id').executeTakeFirstOrThrow();
      expect(st.patient_id).to.equal('NEW-ID');
      const merge = await stack.opened.db.selectFrom('patient_merges').selectAll().executeTakeFirstOrThrow();
      expect(merge).to.include({ patient_id: 'NEW-ID', prior_patient_id: 'OLD-ID', studies_updated: 1 });
      expect((await study('1.2.3.123')).primaryReport.current?.status).to.equal('F');
      expect((await messageRow('R123'))[0]?.status).to.equal('applied');
      // A message still using the retired id is the same patient.
      await peer.send(oruR01({ controlId: 'R123C', accession: 'ACC123', patientId: 'OLD-ID' }, { status: 'C' }));
      expect((await study('1.2.3.123')).primaryReport.current?.status).to.equal('C');
    });
  });

  describe('the messages API', () => {
    it('lists rejected messages too, with raw text only for an admin who asks', async () => {
      const ack = await peer.send('MSH|^~\\&|RIS|HOSP|GW|GW|2026||ADT^A01|UNK1|P|2.5.1\rPID|1||MRN1\r');
      expect(ack.code).to.equal('AR');
      expect(ack.err?.[3]).to.match(/^201\^/);
      const rejected = await api('/messages?status=rejected');
      const items = rejected.body['items'] as Record<string, unknown>[];
      expect(items.map((i) => [i['controlId'], i['status'], i['type']])).to.deep.equal([['UNK1', 'rejected', 'ADT^A01']]);
      expect((await api('/messages?status=rejected&includeRaw=true', ADMIN)).body['items']).to.satisfy((x: Record<string, unknown>[]) =>
        String(x[0]!['raw']).startsWith('MSH|'),
      );
      expect((await api('/messages?includeRaw=true', QA)).status).to.equal(403);
      expect((await api('/messages', READER)).status).to.equal(403);
      expect((await api('/messages?status=bogus')).status).to.equal(400);
      // Without a status: held and rejected.
      expect(((await api('/messages')).body['items'] as unknown[]).length).to.equal(1);
    });
  });

  it('a duplicate (same MSH-3/4/10) gets AA and changes nothing', async () => {
    await storeStudy('1.2.3.130', 'ACC130');
    const text = oruR01({ controlId: 'DUP1', accession: 'ACC130' });
    expect((await peer.send(text)).code).to.equal('AA');
    const before = { reports: await count('report_versions'), study: await study('1.2.3.130') };
    const again = await peer.send(text);
    expect(again).to.include({ code: 'AA', ackedControlId: 'DUP1' });
    // Same control id, other content (a RIS whose counter was reset): AR with ERR, kept as a held message, not applied.
    const reused = await peer.send(oruR01({ controlId: 'DUP1', accession: 'ACC130' }, { status: 'C', lines: ['changed'] }));
    expect(reused).to.include({ code: 'AR', ackedControlId: 'DUP1' });
    expect(reused.err?.[3]).to.match(/^205\^Duplicate key identifier/);
    expect(reused.err?.[8]).to.match(/control id reused with other content/);
    expect(await count('report_versions')).to.equal(before.reports);
    expect(await study('1.2.3.130')).to.deep.equal(before.study);
    const rows = await messageRow('DUP1');
    expect(rows.map((r) => r.status)).to.deep.equal(['applied', 'duplicate', 'held']);
    expect(rows[2]!.reason).to.match(/control id reused with other content/);
    const held = (await api('/messages?status=held')).body['items'] as Record<string, unknown>[];
    expect(held.map((m) => m['controlId'])).to.include('DUP1');
    // The same bytes again, only MSH-7 (message time) refreshed: still the same content, AA.
    expect((await peer.send(text.replace(/^(MSH(?:\|[^|\r]*){5}\|)\d+/, '$1' + '20991231235959'))).code).to.equal('AA');
    expect((await messageRow('DUP1')).map((r) => r.status)).to.deep.equal(['applied', 'duplicate', 'held', 'duplicate']);
    // Another sender may reuse the number: not a duplicate.
    expect((await peer.send(oruR01({ controlId: 'DUP1', accession: 'ACC130', sendingFacility: 'OTHERHOSP' }))).code).to.equal('AA');
    expect(await count('report_versions')).to.equal(before.reports + 1);
  });

  describe('no AA before the commit, no partial rows after a failure', () => {
    /** A real database failure on insert into report_versions (SQLite RAISE, or a PL/pgSQL exception). */
    async function failingTrigger(st: Hl7Stack, name: string, message: string, when?: string): Promise<void> {
      if (st.opened.dialect === 'postgres') {
        await sql.raw(`CREATE FUNCTION ${name}() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION '${message}'; END $$ LANGUAGE plpgsql`).execute(st.opened.db);
        await sql
          .raw(`CREATE TRIGGER ${name} BEFORE INSERT ON report_versions FOR EACH ROW ${when ? `WHEN (${when})` : ''} EXECUTE FUNCTION ${name}()`)
          .execute(st.opened.db);
      } else {
        await sql
          .raw(`CREATE TRIGGER ${name} BEFORE INSERT ON report_versions ${when ? `WHEN ${when}` : ''} BEGIN SELECT RAISE(ABORT, '${message}'); END`)
          .execute(st.opened.db);
      }
    }
    async function dropTrigger(st: Hl7Stack, name: string): Promise<void> {
      await sql.raw(st.opened.dialect === 'postgres' ? `DROP TRIGGER ${name} ON report_versions` : `DROP TRIGGER ${name}`).execute(st.opened.db);
    }
    function testDatabaseUrlOf(st: Hl7Stack): string {
      return st.url;
    }

    it('a step that throws inside the transaction: AE, nothing stored; the resend is applied', async () => {
      // A real database failure after the message row was written in the same transaction.
      await failingTrigger(stack, 'fail_reports', 'disk on fire');
      const ack = await peer.send(oruR01({ controlId: 'FAIL1', accession: 'ACC140' }));
      expect(ack.code).to.equal('AE');
      expect(ack.ackedControlId).to.equal('FAIL1');
      expect(await count('hl7_messages')).to.equal(0);
      expect(await count('report_versions')).to.equal(0);
      await dropTrigger(stack, 'fail_reports');
      expect((await peer.send(oruR01({ controlId: 'FAIL1', accession: 'ACC140' }))).code).to.equal('AA');
      expect(await count('report_versions')).to.equal(1);
    });

    it('a locked database: AE (retry), nothing stored', async () => {
      if (stack.opened.dialect === 'postgres') {
        // Another session holds the table: the insert waits out the pool's lock_timeout (5 s), then AE.
        const other = new pg.Client({ connectionString: testDatabaseUrlOf(stack) });
        await other.connect();
        await other.query('BEGIN');
        await other.query('LOCK TABLE hl7_messages IN ACCESS EXCLUSIVE MODE');
        try {
          const ack = await peer.send(ormO01({ controlId: 'LOCK1', accession: 'ACC141' }));
          expect(ack.code).to.equal('AE');
          expect(ack.err?.[8]).to.match(/resend/);
        } finally {
          await other.query('ROLLBACK');
          await other.end();
        }
        expect(await count('hl7_messages')).to.equal(0);
        expect((await peer.send(ormO01({ controlId: 'LOCK1', accession: 'ACC141' }))).code).to.equal('AA');
        return;
      }
      await sql`PRAGMA busy_timeout = 200`.execute(stack.opened.db);
      const other = new SQLite(path.join(stack.dir, 'gw.db'));
      other.exec('BEGIN IMMEDIATE');
      try {
        const ack = await peer.send(ormO01({ controlId: 'LOCK1', accession: 'ACC141' }));
        expect(ack.code).to.equal('AE');
        expect(ack.err?.[8]).to.match(/resend/);
      } finally {
        other.exec('ROLLBACK');
        other.close();
      }
      expect(await count('hl7_messages')).to.equal(0);
      expect(await count('orders')).to.equal(0);
      expect((await peer.send(ormO01({ controlId: 'LOCK1', accession: 'ACC141' }))).code).to.equal('AA');
    });

    it('a closed database: AE, never AA', async () => {
      await stack.opened.close();
      const ack = await peer.send(oruR01({ controlId: 'CLOSED1' }));
      expect(ack.code).to.equal('AE');
    });

    it('in a group commit, one failing message is rolled back alone; the others commit', async () => {
      await failingTrigger(stack, 'fail_one', 'boom', "NEW.accession_number = 'BOOM'");
      const peers = await Promise.all(Array.from({ length: 8 }, () => RawMllpPeer.connect(stack.port)));
      // A first round warms up (first statements, WAL file); after it, frames that arrive together commit together.
      await Promise.all(peers.map((p, i) => p.send(oruR01({ controlId: `W${i}`, accession: `WACC${i}` }))));
      const before = stack.service.commitStats.batches;
      const acks = await Promise.all(peers.map((p, i) => p.send(oruR01({ controlId: `G${i}`, accession: i === 3 ? 'BOOM' : `GACC${i}` }))));
      expect(stack.service.commitStats.batches - before, 'the 8 messages should share commits').to.be.lessThan(8);
      expect(acks.map((a) => a.code)).to.deep.equal(['AA', 'AA', 'AA', 'AE', 'AA', 'AA', 'AA', 'AA']);
      expect(await count('report_versions')).to.equal(8 + 7);
      expect((await messageRow('G3')).length).to.equal(0);
      for (const p of peers) p.destroy();
    });
  });
});
