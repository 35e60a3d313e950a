import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import iconv from 'iconv-lite';
import { insertCase } from '../../src/cases/case.repository.js';
import { defaultConfig } from '../../src/config/schema.js';
import { Hl7Message } from '../../src/hl7/hl7-message.js';
import { HttpServer } from '../../src/http/server.js';
import { buildSecondReportOru } from '../../src/reports/oru-builder.js';
import { CaseState } from '../../src/states.js';
import { survivingPatientId } from '../../src/studies/reconcile.js';
import { StudyService } from '../../src/studies/study.service.js';
import { FS, MLLP_SEND, RawMllpPeer, VT, havePythonHl7, parseAck, type Hl7Stack } from '../helpers/hl7-peers.js';
import { startHl7StudyFixture, type Hl7StudyFixture } from '../helpers/hl7-study-fixture.js';
import { adtA40, ormO01 } from '../helpers/hl7-samples.js';

const ADMIN = 'admin-token-0123456789';

/**
 * Identity with its authority, MSH-18 character sets and HL7 result semantics,
 * through the real MLLP listener into a real database (SQLite file, or a fresh
 * PostgreSQL database with GATEWAY_TEST_DATABASE_URL). Messages are written by
 * hand from the standard's segment definitions, not only by our generator.
 */
describe('HL7 identity, character sets and result semantics (real listener and database)', function () {
  this.timeout(30_000);
  let fx: Hl7StudyFixture;
  let stack: Hl7Stack;
  let peer: RawMllpPeer;
  let studies: StudyService;
  let http: HttpServer;
  let instance: Hl7StudyFixture['instance'];
  let settle: Hl7StudyFixture['settle'];

  beforeEach(async () => {
    fx = await startHl7StudyFixture({
      tokens: [{ token: ADMIN, role: 'admin' }],
      hl7: { mapping: { ...defaultConfig().hl7.mapping, patientIdAuthority: 'HOSP' } },
    });
    ({ stack, peer, studies, http, instance, settle } = fx);
  });

  afterEach(() => fx.stop());

  /**
   * A study as ingest stores it. Issuer of Patient ID and Other Patient IDs are filled by DICOM ingest on
   * another branch; here they are set on the row directly (the linking code reads only the columns).
   */
  async function storeStudy(
    uid: string,
    accession: string | null,
    patientId: string | null,
    issuer: string | null = null,
    others?: { id: string; issuer: string | null }[],
  ): Promise<void> {
    expect(await studies.storeInstance(instance(uid, accession, patientId))).to.equal('stored');
    await settle();
    await stack.opened.db
      .updateTable('studies')
      .set({ issuer_of_patient_id: issuer, other_patient_ids: others ? JSON.stringify(others.map((o) => ({ ...o, type: 'TEXT' }))) : null })
      .where('study_instance_uid', '=', uid)
      .execute();
    // Items that arrived before and were decided without the issuer are decided again, as the study event would.
    await stack.service.reconcileStudy(uid);
  }

  async function api(p: string): Promise<Record<string, unknown>> {
    const res = await fetch(`http://127.0.0.1:${http.port}/api${p}`, { headers: { authorization: `Bearer ${ADMIN}` } });
    expect(res.status, p).to.equal(200);
    return (await res.json()) as Record<string, unknown>;
  }

  async function messageRows(controlId: string) {
    return stack.opened.db.selectFrom('hl7_messages').selectAll().where('control_id', '=', controlId).orderBy('id').execute();
  }

  async function reportsOf(controlId: string) {
    const m = (await messageRows(controlId))[0]!;
    return stack.opened.db.selectFrom('report_versions').selectAll().where('message_id', '=', m.id).execute();
  }

  /** A hand-written ORU^R01 (v2.5.1 chapter 7): MSH, PID, OBR, OBX..., with the PID-3 and extra segments given. */
  function oru(o: {
    controlId: string;
    pid3: string;
    accession: string;
    studyUid?: string;
    status?: string;
    obx?: string[];
    nte?: string[];
    msh18?: string;
    name?: string;
  }): string {
    const msh = `MSH|^~\\&|RIS|HOSP|SECONDREAD|GATEWAY|20260301104500||ORU^R01^ORU_R01|${o.controlId}|P|2.5.1${o.msh18 ? `||||||${o.msh18}` : ''}`;
    return (
      [
        msh,
        `PID|1||${o.pid3}||${o.name ?? 'DOE^JANE'}||19650412|F`,
        `OBR|1|PL${o.accession}|${o.accession}|CTCHEST^CT Chest^L|||20260301101500|||||||||||||||20260301104400||CT|${o.status ?? 'F'}`,
        ...(o.nte ?? []),
        ...(o.obx ?? [`OBX|1|TX|18782-3^Radiology Study observation^LN||No acute finding.||||||${o.status ?? 'F'}`]),
        ...(o.studyUid ? [`ZDS|${o.studyUid}^SECONDREAD^Application^DICOM`] : []),
      ].join('\r') + '\r'
    );
  }

  /** Frames bytes as MLLP and returns the reply's bytes. */
  async function sendBytes(bytes: Buffer): Promise<string> {
    const before = peer.received.length;
    peer.write(Buffer.concat([Buffer.from([0x0b]), bytes, Buffer.from([0x1c, 0x0d])]));
    return (await peer.replyCount(before + 1))[before]!;
  }

  describe('PID-3 with its assigning authority', () => {
    it('links a report to a HOSP study when one PID-3 repetition is (MRN1, HOSP); never on the same id under another authority', async () => {
      await storeStudy('1.2.9.1', 'ACC901', 'MRN1', 'HOSP');
      expect((await peer.send(oru({ controlId: 'ID1', pid3: '555^^^OTHERHOSP^MR~MRN1^^^HOSP^MR', accession: 'ACC901' }))).code).to.equal('AA');
      expect((await reportsOf('ID1'))[0]).to.include({ link_state: 'linked', linked_study_uid: '1.2.9.1', patient_id: 'MRN1', patient_id_authority: 'HOSP' });
      // Every repetition is kept, with authority and type.
      expect(JSON.parse((await reportsOf('ID1'))[0]!.patient_identifiers!)).to.deep.equal([
        { id: '555', authority: 'OTHERHOSP', type: 'MR' },
        { id: 'MRN1', authority: 'HOSP', type: 'MR' },
      ]);

      expect((await peer.send(oru({ controlId: 'ID2', pid3: 'MRN1^^^OTHERHOSP^MR', accession: 'ACC901' }))).code).to.equal('AA');
      const held = (await reportsOf('ID2'))[0]!;
      expect(held).to.include({ link_state: 'held', linked_study_uid: null });
      expect(held.hold_reason).to.match(/another assigning authority/);
      const list = (await api('/messages?status=held'))['items'] as Record<string, unknown>[];
      expect(list.map((m) => m['controlId'])).to.deep.equal(['ID2']);
      // The study shows only the report of its own patient.
      const s = await api('/studies/1.2.9.1');
      expect((s['primaryReport'] as { history: unknown[] }).history).to.have.length(1);
    });

    it("compares the id alone when one side has no authority, and the study's other patient ids count", async () => {
      await storeStudy('1.2.9.2', 'ACC902', 'MRN2', null);
      expect((await peer.send(oru({ controlId: 'ID3', pid3: 'MRN2^^^HOSP^MR', accession: 'ACC902' }))).code).to.equal('AA');
      expect((await reportsOf('ID3'))[0]).to.include({ link_state: 'linked' });
      await storeStudy('1.2.9.3', 'ACC903', 'LOCAL7', 'SITEB', [{ id: 'MRN3', issuer: 'HOSP' }]);
      await peer.send(oru({ controlId: 'ID4', pid3: 'MRN3^^^HOSP^MR', accession: 'ACC903' }));
      expect((await reportsOf('ID4'))[0]).to.include({ link_state: 'linked', linked_study_uid: '1.2.9.3' });
      // Same authority, different ids, even with a shared number under another authority: another patient.
      await storeStudy('1.2.9.4', 'ACC904', 'MRN4', 'HOSP', [{ id: '9434765919', issuer: 'NHS' }]);
      await peer.send(oru({ controlId: 'ID5', pid3: 'MRN5^^^HOSP^MR~9434765919^^^NHS^NH', accession: 'ACC904' }));
      expect((await reportsOf('ID5'))[0]).to.include({ link_state: 'held' });
    });

    it('never links on accession alone: a study without a patient id, or a message without PID-3, is held', async () => {
      await storeStudy('1.2.9.5', 'ACC905', null);
      await peer.send(oru({ controlId: 'ID6', pid3: 'MRN6^^^HOSP^MR', accession: 'ACC905' }));
      const r = (await reportsOf('ID6'))[0]!;
      expect(r).to.include({ link_state: 'held' });
      expect(r.hold_reason).to.match(/^patient-id-missing: the study has no patient id/);
      await storeStudy('1.2.9.6', 'ACC906', 'MRN7', 'HOSP');
      await peer.send(oru({ controlId: 'ID7', pid3: '', accession: 'ACC906' }));
      expect((await reportsOf('ID7'))[0]!.hold_reason).to.match(/^patient-id-missing: message has no patient id/);
      expect((await messageRows('ID7'))[0]).to.include({ status: 'held' });
    });

    it('ADT^A40 with authority: moves the prior id of that authority only; the write-back PID carries the survivor', async () => {
      await storeStudy('1.2.9.7', 'ACC907', 'OLD7', 'HOSP');
      await storeStudy('1.2.9.8', 'ACC908', 'OLD7', 'ELSEWHERE');
      expect((await peer.send(oru({ controlId: 'M1', pid3: 'OLD7^^^HOSP^MR', accession: 'ACC907' }))).code).to.equal('AA');
      // Hand-written A40 (v2.5.1 chapter 3.3.40): PID-3 the survivor, MRG-1 the prior id with its authority.
      const a40 =
        [
          'MSH|^~\\&|PAS|HOSP|SECONDREAD|GATEWAY|20260302090000||ADT^A40^ADT_A39|MRG1|P|2.5.1',
          'EVN|A40|20260302090000',
          'PID|1||NEW7^^^HOSP^MR||DOE^JANE',
          'MRG|OLD7^^^HOSP^MR',
        ].join('\r') + '\r';
      expect((await peer.send(a40)).code).to.equal('AA');
      const rows = await stack.opened.db
        .selectFrom('studies')
        .select(['study_instance_uid', 'patient_id', 'issuer_of_patient_id'])
        .orderBy('study_instance_uid')
        .execute();
      expect(rows.filter((r) => r.study_instance_uid.startsWith('1.2.9.'))).to.deep.equal([
        { study_instance_uid: '1.2.9.7', patient_id: 'NEW7', issuer_of_patient_id: 'HOSP' },
        // Another authority's OLD7 is another patient: untouched.
        { study_instance_uid: '1.2.9.8', patient_id: 'OLD7', issuer_of_patient_id: 'ELSEWHERE' },
      ]);
      expect(await survivingPatientId(stack.opened.db, 'OLD7', 'HOSP')).to.deep.equal({ id: 'NEW7', authority: 'HOSP' });
      expect(await survivingPatientId(stack.opened.db, 'OLD7', 'ELSEWHERE')).to.deep.equal({ id: 'OLD7', authority: 'ELSEWHERE' });
      // A report still filed under the retired id links to the survivor's study.
      await peer.send(oru({ controlId: 'M2', pid3: 'OLD7^^^HOSP^MR', accession: 'ACC907', status: 'C' }));
      expect((await reportsOf('M2'))[0]).to.include({ link_state: 'linked', linked_study_uid: '1.2.9.7' });
      // The write-back is built from the primary report as the RIS sent it (PID-3 OLD7): its PID carries NEW7.
      const primary = (await messageRows('M1'))[0]!.raw;
      const built = Hl7Message.parse(
        buildSecondReportOru({
          controlId: 'W1',
          sendingApplication: 'SECONDREAD',
          sendingFacility: 'GATEWAY',
          primaryReport: primary,
          survivingPatient: await survivingPatientId(stack.opened.db, 'OLD7', 'HOSP'),
          accessionNumber: 'ACC907',
          studyInstanceUid: '1.2.9.7',
          secondReader: { id: 'dr-b' },
          text: 'Agree.',
          radpeerScore: '1',
        }),
      );
      expect(built.get('PID-3.1')).to.equal('NEW7');
      expect(built.get('PID-3.4')).to.equal('HOSP');
    });
  });

  describe('MSH-18 character sets', () => {
    it('decodes an ISO 8859-2 message, \\X..\\ escapes in that set too, and answers in it', async () => {
      await storeStudy('1.2.9.20', 'ACC920', 'MRN20', 'HOSP');
      const text = oru({
        controlId: 'CS1',
        pid3: 'MRN20^^^HOSP^MR',
        accession: 'ACC920',
        msh18: '8859/2',
        name: 'ŻÓŁĆ^ŁUCJA',
        obx: ['OBX|1|TX|18782-3^Radiology Study observation^LN||Pacjent z ŁÓDŹ, \\XA3\\\\XF3\\d\\XBC\\: bez zmian.||||||F'],
      });
      const reply = await sendBytes(iconv.encode(text, 'iso-8859-2'));
      const ack = parseAck(reply);
      expect(ack.code, reply).to.equal('AA');
      expect(ack.msh[18]).to.equal('8859/2');
      const s = await api('/studies/1.2.9.20');
      expect((s['primaryReport'] as { current: { text: string } }).current.text).to.equal('Pacjent z ŁÓDŹ, Łódź: bez zmian.');
      expect((await messageRows('CS1'))[0]!.raw).to.contain('ŻÓŁĆ^ŁUCJA');
    });

    it('decodes an ISO 8859-5 (Cyrillic) message with \\X..\\ escapes', async () => {
      await storeStudy('1.2.9.21', 'ACC921', 'MRN21', 'HOSP');
      const text = oru({
        controlId: 'CS2',
        pid3: 'MRN21^^^HOSP^MR',
        accession: 'ACC921',
        msh18: '8859/5',
        obx: ['OBX|1|TX|18782-3^Radiology Study observation^LN||Пациент из \\XBCDEE1DAD2D0\\: без патологии.||||||F'],
      });
      expect(parseAck(await sendBytes(iconv.encode(text, 'iso-8859-5'))).code).to.equal('AA');
      const s = await api('/studies/1.2.9.21');
      expect((s['primaryReport'] as { current: { text: string } }).current.text).to.equal('Пациент из Москва: без патологии.');
    });

    it('rejects a character set it cannot decode (AR, ERR naming MSH-18)', async () => {
      const ack = await peer.send(oru({ controlId: 'CS3', pid3: 'MRN1^^^HOSP^MR', accession: 'ACC922', msh18: 'EBCDIC' }));
      expect(ack.code).to.equal('AR');
      expect(ack.err?.[8]).to.match(/MSH-18 character set "EBCDIC" not supported/);
      expect((await messageRows('CS3'))[0]).to.include({ status: 'rejected' });
    });

    it('takes an 8859-2 message sent by Debian python3-hl7 mllp_send', async function () {
      if (!havePythonHl7()) {
        console.log('      skipped: python3-hl7 (mllp_send) not installed');
        this.skip();
      }
      await storeStudy('1.2.9.23', 'ACC923', 'MRN23', 'HOSP');
      const text = oru({
        controlId: 'CS4',
        pid3: 'MRN23^^^HOSP^MR',
        accession: 'ACC923',
        msh18: '8859/2',
        obx: ['OBX|1|TX|18782-3^Radiology Study observation^LN||Szczecin, Gdańsk, ŁÓDŹ.||||||F'],
      });
      const dir = mkdtempSync(path.join(tmpdir(), 'mllp-send-'));
      const file = path.join(dir, 'm.hl7');
      writeFileSync(file, Buffer.concat([Buffer.from(VT, 'latin1'), iconv.encode(text, 'iso-8859-2'), Buffer.from(`${FS}\r`, 'latin1')]));
      const child = spawn('/usr/bin/python3', [MLLP_SEND, '-p', String(stack.port), '-f', file, '127.0.0.1'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.setEncoding('latin1').on('data', (d: string) => (out += d));
      const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
      rmSync(dir, { recursive: true, force: true });
      expect(code).to.equal(0);
      expect(out).to.match(/MSA\|AA\|CS4/);
      const s = await api('/studies/1.2.9.23');
      expect((s['primaryReport'] as { current: { text: string } }).current.text).to.equal('Szczecin, Gdańsk, ŁÓDŹ.');
    });
  });

  describe('result semantics', () => {
    async function openCase(id: string, studyUid: string, accession: string, state: CaseState = CaseState.awaitingRead): Promise<void> {
      const now = new Date().toISOString();
      await insertCase(stack.opened.db, {
        id,
        study_instance_uid: studyUid,
        accession_number: accession,
        state,
        priority: 'routine',
        sla_hours: 72,
        due_at: now,
        destination_id: null,
        reader_group: null,
        blinded: 0,
        deidentify: null,
        rule_set_version: null,
        reasons: '[]',
        reader_id: null,
        discrepant: 0,
        sla_breached_at: null,
        escalation_level: 0,
        created_by: 'test',
        created_at: now,
        updated_at: now,
      });
    }
    const caseState = async (id: string) => (await stack.opened.db.selectFrom('cases').select('state').where('id', '=', id).executeTakeFirstOrThrow()).state;
    const auditOf = async (id: string) => stack.opened.db.selectFrom('audit_events').selectAll().where('entity_id', '=', id).orderBy('id').execute();

    it('OBX-11 W/D are not report text, NTE is; a W after the final report holds the open case (wrong-patient-result)', async () => {
      await storeStudy('1.2.9.30', 'ACC930', 'MRN30', 'HOSP');
      await openCase('case-930', '1.2.9.30', 'ACC930');
      const first = oru({
        controlId: 'W0',
        pid3: 'MRN30^^^HOSP^MR',
        accession: 'ACC930',
        nte: ['NTE|1|L|Clinical note from the reporting radiologist.'],
        obx: [
          'OBX|1|TX|18782-3^Radiology Study observation^LN||Findings: 8 mm nodule right upper lobe.||||||F',
          'OBX|2|TX|18782-3^Radiology Study observation^LN||Old text that was deleted.||||||D',
          'OBX|3|TX|19005-8^Impression^LN||Impression: nodule, follow-up.||||||F',
        ],
      });
      expect((await peer.send(first)).code).to.equal('AA');
      const s = await api('/studies/1.2.9.30');
      expect((s['primaryReport'] as { current: { text: string } }).current.text).to.equal(
        'Clinical note from the reporting radiologist.\nFindings: 8 mm nodule right upper lobe.\nImpression: nodule, follow-up.',
      );
      expect(await caseState('case-930')).to.equal('awaiting-read');

      // The RIS says the result was filed to the wrong patient.
      const w = oru({
        controlId: 'W1',
        pid3: 'MRN30^^^HOSP^MR',
        accession: 'ACC930',
        status: 'C',
        obx: ['OBX|1|TX|18782-3^Radiology Study observation^LN||Findings: 8 mm nodule right upper lobe.||||||W'],
      });
      expect((await peer.send(w)).code).to.equal('AA');
      expect(await caseState('case-930')).to.equal('held');
      const audit = await auditOf('case-930');
      expect(audit.map((a) => a.action)).to.include('case.held');
      expect(JSON.stringify(audit)).to.contain('wrong-patient-result');
      // The W result never becomes the study's report; it waits in the held messages.
      const after = await api('/studies/1.2.9.30');
      expect((after['primaryReport'] as { current: { text: string } }).current.text).to.match(/^Clinical note/);
      expect((await messageRows('W1'))[0]).to.include({ status: 'held' });
      // A later merge of that patient reconsiders held items, but never the one the sender marked wrong-patient.
      const a40 = [
        'MSH|^~\\&|PAS|HOSP|SECONDREAD|GATEWAY|20260302090000||ADT^A40^ADT_A39|MRG30|P|2.5.1',
        'EVN|A40|20260302090000',
        'PID|1||MRN30B^^^HOSP^MR',
        'MRG|MRN30^^^HOSP^MR',
      ].join('\r');
      expect((await peer.send(a40)).code).to.equal('AA');
      expect((await reportsOf('W1'))[0]).to.include({ link_state: 'held', patient_id: 'MRN30B' });
    });

    it('grouped procedures: two orders with their own accessions and one StudyInstanceUID link, with their reports, to the one study', async () => {
      await storeStudy('1.2.9.40', 'ACC940', 'MRN40', 'HOSP');
      // Two hand-written ORM^O01 (v2.3 chapter 4): one study (ZDS-1) for CT chest and CT abdomen.
      for (const [ctl, acc, proc] of [
        ['G1', 'ACC940', 'CTCHEST^CT Chest^L'],
        ['G2', 'ACC941', 'CTABD^CT Abdomen^L'],
      ] as const) {
        const orm = [
          `MSH|^~\\&|RIS|HOSP|SECONDREAD|GATEWAY|20260301090000||ORM^O01|${ctl}|P|2.3`,
          'PID|1||MRN40^^^HOSP^MR||DOE^JANE',
          `ORC|NW|PL${acc}|${acc}||SC`,
          `OBR|1|PL${acc}|${acc}|${proc}|||20260301090000|||||||||||||||||CT`,
          'ZDS|1.2.9.40^SECONDREAD^Application^DICOM',
        ].join('\r');
        expect((await peer.send(orm)).code).to.equal('AA');
      }
      for (const [ctl, acc] of [
        ['GR1', 'ACC940'],
        ['GR2', 'ACC941'],
      ] as const) {
        expect((await peer.send(oru({ controlId: ctl, pid3: 'MRN40^^^HOSP^MR', accession: acc }))).code).to.equal('AA');
        expect((await reportsOf(ctl))[0]).to.include({ link_state: 'linked', linked_study_uid: '1.2.9.40' });
      }
      const orders = await stack.opened.db
        .selectFrom('orders')
        .select(['accession_number', 'link_state', 'linked_study_uid'])
        .orderBy('accession_number')
        .execute();
      expect(orders).to.deep.equal([
        { accession_number: 'ACC940', link_state: 'linked', linked_study_uid: '1.2.9.40' },
        { accession_number: 'ACC941', link_state: 'linked', linked_study_uid: '1.2.9.40' },
      ]);
      // A report under another accession that no order pairs with the study is still held.
      await peer.send(oru({ controlId: 'GR3', pid3: 'MRN40^^^HOSP^MR', accession: 'ACC999', studyUid: '1.2.9.40' }));
      expect((await reportsOf('GR3'))[0]).to.include({ link_state: 'held' });
    });

    it('ORC-1 CA cancels the order and its open case (audited, actor the sender); a grouped study keeps its case while another order lives', async () => {
      await storeStudy('1.2.9.50', 'ACC950', 'MRN50', 'HOSP');
      await openCase('case-950', '1.2.9.50', 'ACC950', CaseState.forwarding);
      const orm = (ctl: string, control: string, acc: string) =>
        [
          `MSH|^~\\&|RIS|HOSP|SECONDREAD|GATEWAY|20260301090000||ORM^O01|${ctl}|P|2.3`,
          'PID|1||MRN50^^^HOSP^MR||DOE^JANE',
          `ORC|${control}|PL${acc}|${acc}||${control === 'NW' ? 'SC' : 'CA'}`,
          `OBR|1|PL${acc}|${acc}|CTCHEST^CT Chest^L|||20260301090000|||||||||||||||||CT`,
          'ZDS|1.2.9.50^SECONDREAD^Application^DICOM',
        ].join('\r');
      await peer.send(orm('C1', 'NW', 'ACC950'));
      await peer.send(orm('C2', 'NW', 'ACC951'));
      expect((await peer.send(orm('C3', 'CA', 'ACC951'))).code).to.equal('AA');
      expect(await caseState('case-950')).to.equal('forwarding');
      expect((await auditOf('case-950')).map((a) => a.action)).to.deep.equal(['case.order-cancelled']);
      expect((await peer.send(orm('C4', 'CA', 'ACC950'))).code).to.equal('AA');
      expect(await caseState('case-950')).to.equal('cancelled');
      const audit = (await auditOf('case-950')).at(-1)!;
      expect(audit).to.include({ action: 'case.cancelled', actor: 'hl7:RIS' });
      const orders = await stack.opened.db
        .selectFrom('orders')
        .select(['accession_number', 'order_control', 'cancelled_at'])
        .orderBy('accession_number')
        .execute();
      expect(orders.map((o) => [o.accession_number, o.order_control, o.cancelled_at !== null])).to.deep.equal([
        ['ACC950', 'CA', true],
        ['ACC951', 'CA', true],
      ]);
      // The study resource shows the orders as cancelled.
      const shown = (await api('/studies/1.2.9.50'))['orders'] as { accessionNumber: string; orderControl: string; cancelledAt: string | null }[];
      expect(shown.map((o) => [o.accessionNumber, o.orderControl, typeof o.cancelledAt])).to.have.deep.members([
        ['ACC950', 'CA', 'string'],
        ['ACC951', 'CA', 'string'],
      ]);
    });

    it('OMI^O23 with ORC-1 DC cancels the case too', async () => {
      await storeStudy('1.2.9.60', 'ACC960', 'MRN1001', 'HOSP');
      await openCase('case-960', '1.2.9.60', 'ACC960', CaseState.awaitingRead);
      expect((await peer.send(ormO01({ controlId: 'D1', accession: 'ACC960', studyUid: '1.2.9.60' }))).code).to.equal('AA');
      const dc = ormO01({ controlId: 'D2', accession: 'ACC960', studyUid: '1.2.9.60' }, { orderControl: 'DC' }).replace('ORM^O01', 'OMI^O23');
      expect((await peer.send(dc)).code).to.equal('AA');
      expect(await caseState('case-960')).to.equal('cancelled');
    });
  });

  it('reads the A40 from our own sample generator the same way (survivor with authority)', async () => {
    await storeStudy('1.2.9.70', 'ACC970', 'OLD70', 'HOSP');
    expect((await peer.send(adtA40({ patientId: 'NEW70', priorPatientId: 'OLD70' }))).code).to.equal('AA');
    const row = await stack.opened.db.selectFrom('patient_merges').selectAll().executeTakeFirstOrThrow();
    expect(row).to.include({ patient_id: 'NEW70', prior_patient_id: 'OLD70', authority: 'HOSP', prior_authority: 'HOSP', studies_updated: 1 });
  });
});
