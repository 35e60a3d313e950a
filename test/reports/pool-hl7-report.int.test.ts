import path from 'node:path';
import { expect } from 'chai';
import { generateStudy } from '../../scripts/lib/study-generator.js';
import { buildConfig } from '../../src/config/load.js';
import { createGateway, type Gateway } from '../../src/gateway.js';
import { Hl7Message } from '../../src/hl7/hl7-message.js';
import { storeFiles } from '../helpers/dicom-peers.js';
import { eventually } from '../helpers/eventually.js';
import { RawMllpPeer, silentLogger } from '../helpers/hl7-peers.js';
import { adtA40, oruR01, ormO01, seg } from '../helpers/hl7-samples.js';
import { PoolScp } from '../helpers/pool-scp.js';
import { TestRis } from '../helpers/test-ris.js';
import { makeTempDir, testDatabaseUrl } from '../helpers/tmp.js';

const admin = 'admin-token-0123456789abcdef';

describe('second reports from the reader pool over HL7, through the pseudonyms', function () {
  this.timeout(60_000);
  let tmp: ReturnType<typeof makeTempDir>;
  let pool: PoolScp;
  let ris: TestRis;
  let gw: Gateway;
  let hl7: RawMllpPeer;

  const api = async (p: string) =>
    (await (await fetch(`http://127.0.0.1:${gw.ports().http}${p}`, { headers: { authorization: `Bearer ${admin}` } })).json()) as Record<string, unknown>;

  /** What the pool's reporting system would send: its own ids for the study, since it only ever saw the pseudonyms. */
  function poolOru(o: { controlId: string; patientId: string; accession: string; studyUid: string; score: string; lines: string[] }): string {
    return (
      [
        `MSH|^~\\&|READPOOL|TELERAD|SECONDREAD|GATEWAY|20261128120000||ORU^R01^ORU_R01|${o.controlId}|P|2.5.1`,
        `PID|1||${o.patientId}^^^POOL^MR||ANON^PATIENT`,
        seg('OBR', { 1: '1', 3: o.accession, 4: 'CTCHEST^CT Chest^L', 7: '20261128110000', 25: 'F', 32: 'pool-reader-9&POOL&READER' }),
        ...o.lines.map((l, i) => seg('OBX', { 1: String(i + 1), 2: 'TX', 3: '18782-3^Radiology Study observation^LN', 5: l, 11: 'F' })),
        seg('OBX', { 1: String(o.lines.length + 1), 2: 'CWE', 3: 'RADPEER^RADPEER score^L', 5: `${o.score}^RADPEER ${o.score}^RADPEER`, 11: 'F' }),
        `ZDS|${o.studyUid}^TELERAD^Application^DICOM`,
      ].join('\r') + '\r'
    );
  }

  before(async () => {
    tmp = makeTempDir();
    pool = new PoolScp(path.join(tmp.dir, 'pool'));
    await pool.start();
    ris = new TestRis();
    await ris.start();
    gw = createGateway(
      buildConfig({
        dicom: { port: 0, stableAfterSeconds: 0.2 },
        hl7: { port: 0, ris: { host: '127.0.0.1', port: ris.port } },
        http: { port: 0 },
        storage: { dir: path.join(tmp.dir, 'data'), minFreeMb: 0 },
        database: { url: testDatabaseUrl(path.join(tmp.dir, 'gw.db')) },
        destinations: [{ id: 'telerad', type: 'dimse', host: '127.0.0.1', port: pool.port, aeTitle: 'POOL', deidentify: true, hl7Sender: 'READPOOL' }],
        forwarding: { pollIntervalSeconds: 0.1 },
        writeBack: { pollIntervalSeconds: 0.1 },
        auth: { tokens: [{ token: admin, role: 'admin' }] },
      }),
      { logger: silentLogger },
    );
    await gw.start();
    hl7 = await RawMllpPeer.connect(gw.ports().hl7);
  });
  after(async () => {
    hl7.socket.destroy();
    await gw.stop();
    await ris.stop();
    await pool.close();
    tmp.cleanup();
  });

  it('links the pool report back to the real study and writes it back to the RIS under the real identifiers', async () => {
    const study = generateStudy(path.join(tmp.dir, 's1'), {
      instances: 3,
      series: 1,
      rows: 32,
      columns: 32,
      accessionNumber: 'ACC-REAL-1',
      patientId: 'MRN-REAL-1',
    });
    const stable = new Promise<void>((resolve) => gw.studies.subscribe({ onStable: () => resolve() }));
    await storeFiles(
      { host: '127.0.0.1', port: gw.ports().dicom, callingAe: 'PACS1', calledAe: 'SECONDREAD' },
      study.instances.map((i) => i.path),
    );
    await stable;
    for (const m of [
      ormO01({ accession: 'ACC-REAL-1', patientId: 'MRN-REAL-1', controlId: 'O1' }),
      oruR01({ accession: 'ACC-REAL-1', patientId: 'MRN-REAL-1', controlId: 'R1' }),
    ]) {
      expect((await hl7.send(m)).code).to.equal('AA');
    }
    const caseId = await eventually(async () => ((await api(`/api/studies/${study.studyInstanceUid}`))['caseId'] as string | null) ?? undefined, 'the case');
    await eventually(async () => (await api(`/api/cases/${caseId}`))['state'] === 'awaiting-read' || undefined, 'delivery');

    // What the pool holds: pseudonyms only.
    const seen = (await pool.db.selectFrom('studies').selectAll().execute())[0]!;
    expect(seen.accession_number).to.not.equal('ACC-REAL-1');
    expect(seen.patient_id).to.not.equal('MRN-REAL-1');

    const wrongPatient = await hl7.send(
      poolOru({ controlId: 'P0', patientId: 'SOMEONE-ELSE', accession: seen.accession_number!, studyUid: seen.study_instance_uid, score: '1', lines: ['x'] }),
    );
    expect(wrongPatient.code).to.equal('AR');
    const unknown = await hl7.send(
      poolOru({ controlId: 'P00', patientId: seen.patient_id!, accession: 'NOPE', studyUid: '1.2.3.4.5.6.7', score: '1', lines: ['x'] }),
    );
    expect(unknown.code).to.equal('AR');
    // Neither is taken as a real identifier: both are stored and listed among held messages, with why.
    const held = (await api('/api/messages?status=held'))['items'] as { controlId: string; reason: string }[];
    expect(held.find((m) => m.controlId === 'P0')?.reason).to.match(/^unresolved pseudonym: the patient id \(PID-3\)/);
    expect(held.find((m) => m.controlId === 'P00')?.reason).to.match(/^unresolved pseudonym: the StudyInstanceUID, accession number/);
    // Without PID-3 the report is never matched on accession alone.
    const noPid = await hl7.send(
      poolOru({
        controlId: 'P0000',
        patientId: seen.patient_id!,
        accession: seen.accession_number!,
        studyUid: seen.study_instance_uid,
        score: '1',
        lines: ['x'],
      }).replace(/^PID\|1\|\|[^|]*\|/m, 'PID|1|||'),
    );
    expect(noPid.code).to.equal('AR');
    expect(noPid.err?.[8]).to.match(/patient-id-missing/);
    expect(((await api('/api/messages?status=held'))['items'] as { controlId: string }[]).map((m) => m.controlId)).to.include('P0000');
    const badScore = await hl7.send(
      poolOru({
        controlId: 'P000',
        patientId: seen.patient_id!,
        accession: seen.accession_number!,
        studyUid: seen.study_instance_uid,
        score: '5',
        lines: ['x'],
      }),
    );
    expect(badScore.code).to.equal('AR');

    const ack = await hl7.send(
      poolOru({
        controlId: 'P1',
        patientId: seen.patient_id!,
        accession: seen.accession_number!,
        studyUid: seen.study_instance_uid,
        score: '3b',
        lines: ['Missed 9 mm nodule in the left lower lobe.', 'Recommend CT follow-up.'],
      }),
    );
    expect(ack.code, ack.text).to.equal('AA');
    const c = await eventually(async () => {
      const body = await api(`/api/cases/${caseId}`);
      return body['state'] === 'written-back' ? body : undefined;
    }, 'the write-back');
    expect(c['discrepant']).to.equal(true);
    expect(c['secondReport'] as { readerId: string; radpeerScore: string; source: string }).to.deep.include({
      readerId: 'pool-reader-9',
      radpeerScore: '3b',
      source: 'hl7',
    });

    const oru = Hl7Message.parse(ris.received.find((m) => m.includes('ORU^R01'))!);
    expect(oru.get('PID-3.1')).to.equal('MRN-REAL-1');
    expect(oru.get('OBR-3.1')).to.equal('ACC-REAL-1');
    expect(oru.get('ZDS-1.1')).to.equal(study.studyInstanceUid);

    // The same message again: AA and nothing changes.
    const dup = await hl7.send(
      poolOru({
        controlId: 'P1',
        patientId: seen.patient_id!,
        accession: seen.accession_number!,
        studyUid: seen.study_instance_uid,
        score: '3b',
        lines: ['Missed 9 mm nodule in the left lower lobe.', 'Recommend CT follow-up.'],
      }),
    );
    expect(dup.code).to.equal('AA');
    expect(((await api(`/api/cases/${caseId}`))['secondReport'] as { versions: number }).versions).to.equal(1);
  });

  it('an ADT^A40 while the case is open: the pool report (under the old pseudonym) links, and the write-back PID carries the surviving id', async () => {
    const study = generateStudy(path.join(tmp.dir, 's2'), {
      instances: 2,
      series: 1,
      rows: 32,
      columns: 32,
      accessionNumber: 'ACC-REAL-2',
      patientId: 'MRN-REAL-2',
    });
    const stable = new Promise<void>((resolve) => gw.studies.subscribe({ onStable: (uid) => (uid === study.studyInstanceUid ? resolve() : undefined) }));
    await storeFiles(
      { host: '127.0.0.1', port: gw.ports().dicom, callingAe: 'PACS1', calledAe: 'SECONDREAD' },
      study.instances.map((i) => i.path),
    );
    await stable;
    for (const m of [
      ormO01({ accession: 'ACC-REAL-2', patientId: 'MRN-REAL-2', controlId: 'O2' }),
      oruR01({ accession: 'ACC-REAL-2', patientId: 'MRN-REAL-2', controlId: 'R2' }),
    ]) {
      expect((await hl7.send(m)).code).to.equal('AA');
    }
    const caseId = await eventually(async () => ((await api(`/api/studies/${study.studyInstanceUid}`))['caseId'] as string | null) ?? undefined, 'the case');
    await eventually(async () => (await api(`/api/cases/${caseId}`))['state'] === 'awaiting-read' || undefined, 'delivery');
    const pseudo = async (kind: string) =>
      (
        await gw.db
          .selectFrom('pseudonyms')
          .select('pseudonym')
          .where('study_instance_uid', '=', study.studyInstanceUid)
          .where('kind', '=', kind)
          .executeTakeFirstOrThrow()
      ).pseudonym;

    // The hospital's MPI merges MRN-REAL-2 into MRN-MERGED-2 (same authority) while the pool is reading.
    expect((await hl7.send(adtA40({ controlId: 'MRG2', patientId: 'MRN-MERGED-2', priorPatientId: 'MRN-REAL-2' }))).code).to.equal('AA');
    expect((await api(`/api/studies/${study.studyInstanceUid}`))['patientId']).to.equal('MRN-MERGED-2');

    const ack = await hl7.send(
      poolOru({
        controlId: 'P2',
        patientId: await pseudo('patient-id'),
        accession: await pseudo('accession'),
        studyUid: await pseudo('uid'),
        score: '1',
        lines: ['Agree with the primary report.'],
      }),
    );
    expect(ack.code, ack.text).to.equal('AA');
    await eventually(async () => (await api(`/api/cases/${caseId}`))['state'] === 'written-back' || undefined, 'the write-back');
    const oru = Hl7Message.parse(ris.received.filter((m) => m.includes('ORU^R01') && m.includes('ACC-REAL-2')).at(-1)!);
    expect(oru.get('PID-3.1')).to.equal('MRN-MERGED-2');
    expect(oru.get('PID-3.4')).to.equal('HOSP');
  });
});
