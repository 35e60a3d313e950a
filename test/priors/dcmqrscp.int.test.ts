/**
 * DCMTK's dcmqrscp as a second, independent PACS for the priors client (Orthanc is the first, in
 * priors.int.test.ts): two of pydicom's vendor files are stored into it with DCMTK's storescu, then our
 * C-FIND (DimsePacsClient on the gateway's upper layer) finds one patient's study, and our C-MOVE has
 * dcmqrscp send it to the gateway's own SCP, where it is stored byte for byte through the normal ingest
 * (SQLite file, or PostgreSQL with GATEWAY_TEST_DATABASE_URL).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { expect } from 'chai';
import winston from 'winston';
import { defaultConfig } from '../../src/config/schema.js';
import { migrateToLatest, openDatabase, type OpenedDatabase } from '../../src/db/database.js';
import { splitPart10 } from '../../src/dicom/part10.js';
import { DicomScp } from '../../src/dicom/scp.js';
import { Spool } from '../../src/dicom/spool.js';
import { DimsePacsClient } from '../../src/priors/pacs.client.js';
import { findInstance, findStudy } from '../../src/studies/study.repository.js';
import { StudyService } from '../../src/studies/study.service.js';
import { hasDcmtk, runDcmtk } from '../helpers/dicom-peers.js';
import { freePort } from '../helpers/dicom-gateway.js';
import { eventually } from '../helpers/eventually.js';
import { makeTempDir, testDatabaseUrl } from '../helpers/tmp.js';

const silent = winston.createLogger({ silent: true });
const VENDOR = '/usr/lib/python3/dist-packages/pydicom/data/test_files';
// pydicom's CT_small.dcm and MR_small.dcm: two patients, one study each
const CT = { file: `${VENDOR}/CT_small.dcm`, patientId: '1CT1', studyUid: '1.3.6.1.4.1.5962.1.2.1.20040119072730.12322', studyDate: '20040119' };
const MR = { file: `${VENDOR}/MR_small.dcm`, patientId: '4MR1' };

function unavailable(): string | undefined {
  if (spawnSync('dcmqrscp', ['--version'], { stdio: 'ignore' }).status !== 0) return 'dcmqrscp (DCMTK) not installed';
  if (!hasDcmtk()) return 'DCMTK (storescu) not installed';
  if (!existsSync(CT.file) || !existsSync(MR.file)) return 'python3-pydicom test files not installed';
  return undefined;
}

const listening = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });

describe('priors: DCMTK dcmqrscp as the hospital PACS (our C-FIND and C-MOVE)', function () {
  this.timeout(60_000);
  let tmp: ReturnType<typeof makeTempDir>;
  let opened: OpenedDatabase;
  let spool: Spool;
  let scp: DicomScp;
  let qr: ChildProcess | undefined;
  let qrLog = '';
  let pacs: DimsePacsClient;

  before(async function () {
    const why = unavailable();
    if (why) {
      console.log(`      skipped: ${why}`);
      this.skip();
    }
    tmp = makeTempDir('gw-dcmqrscp-');
    opened = openDatabase(testDatabaseUrl(path.join(tmp.dir, 'gateway.db')));
    await migrateToLatest(opened.db);
    spool = new Spool(path.join(tmp.dir, 'spool'), 0);
    spool.open();
    const studies = new StudyService({ db: opened.db, spool, logger: silent, stableAfterSeconds: 60 });
    scp = new DicomScp({
      config: { ...defaultConfig().dicom, host: '127.0.0.1', port: 0, aeTitle: 'SECONDREAD', allowedCallers: ['PACS'] },
      sink: studies,
      spool,
      logger: silent,
    });
    await scp.start();

    // dcmqrscp: one storage area (AE PACS), and the gateway's SCP as the one C-MOVE destination it knows
    const port = await freePort();
    const store = path.join(tmp.dir, 'qr');
    mkdirSync(store);
    const cfg = path.join(tmp.dir, 'dcmqrscp.cfg');
    writeFileSync(
      cfg,
      [
        `NetworkTCPPort = ${port}`,
        'MaxPDUSize = 16384',
        'MaxAssociations = 16',
        'HostTable BEGIN',
        `gateway = (SECONDREAD, 127.0.0.1, ${scp.port})`,
        'HostTable END',
        'VendorTable BEGIN',
        'VendorTable END',
        'AETable BEGIN',
        `PACS ${store} RW (10, 64mb) ANY`,
        'AETable END',
        '',
      ].join('\n'),
    );
    qr = spawn('dcmqrscp', ['-c', cfg], { stdio: ['ignore', 'pipe', 'pipe'] });
    qr.stdout!.on('data', (d: Buffer) => (qrLog += d.toString()));
    qr.stderr!.on('data', (d: Buffer) => (qrLog += d.toString()));
    await eventually(() => listening(port), `dcmqrscp listening on ${port}`);
    const stored = await runDcmtk('storescu', ['-aet', 'MODALITY', '-aec', 'PACS', '127.0.0.1', String(port), CT.file, MR.file]);
    expect(stored.code, stored.stderr + qrLog).to.equal(0);
    pacs = new DimsePacsClient(
      { type: 'dimse', host: '127.0.0.1', port, aeTitle: 'PACS', moveDestination: 'SECONDREAD', timeoutSeconds: 20 },
      { callingAeTitle: 'SECONDREAD', logger: silent },
    );
  });

  after(async () => {
    qr?.kill();
    if (!scp) return;
    await scp.stop(2000);
    await opened.close();
    tmp.cleanup();
  });

  it("C-FIND by patient id and date range: that patient's one study, not the other patient's", async () => {
    const found = await pacs.findStudies({ patientId: CT.patientId, issuerOfPatientId: null, fromDate: '20000101' });
    expect(found, qrLog).to.have.length(1);
    // dcmqrscp pads the UID to even length with a space; the client reads it trimmed
    expect(found[0]).to.include({ studyInstanceUid: CT.studyUid, patientId: CT.patientId, studyDate: CT.studyDate });
    // dcmqrscp's index keeps no ModalitiesInStudy: the client asked the study's series for theirs
    expect(found[0]!.modalities).to.deep.equal(['CT']);
    // nor NumberOfStudyRelatedInstances: left unknown, not invented
    expect(found[0]!.numberOfInstances).to.equal(null);
  });

  it('C-FIND with a date range after the study: no match (Success, empty)', async () => {
    expect(await pacs.findStudies({ patientId: CT.patientId, issuerOfPatientId: null, fromDate: '20050101' })).to.deep.equal([]);
  });

  it("C-MOVE to the gateway's SCP: the study arrives through the normal ingest, the data set byte-identical to the PACS's copy", async () => {
    const out = await pacs.retrieveStudy(CT.studyUid);
    expect(out, qrLog).to.deep.equal({ completed: 1, failed: 0 });
    const study = await findStudy(opened.db, CT.studyUid);
    expect(study?.instance_count).to.equal(1);
    expect(study?.calling_ae).to.equal('PACS');
    // What dcmqrscp sends is its own stored copy (DCMTK drops the vendor file's Data Set Trailing Padding, FFFC,FFFC):
    // the gateway keeps exactly that data set.
    const held = readdirSync(path.join(tmp.dir, 'qr')).filter((f) => f.startsWith('CT'));
    expect(held).to.have.length(1);
    const sent = splitPart10(readFileSync(path.join(tmp.dir, 'qr', held[0]!)));
    const sop = (await opened.db.selectFrom('instances').select('sop_instance_uid').where('study_instance_uid', '=', CT.studyUid).executeTakeFirstOrThrow())
      .sop_instance_uid;
    const row = await findInstance(opened.db, sop);
    const storedBytes = splitPart10(readFileSync(spool.absolute(row!.file_path)));
    expect(storedBytes.transferSyntaxUid).to.equal(sent.transferSyntaxUid);
    expect(storedBytes.dataset.equals(sent.dataset), 'dataset bytes identical').to.equal(true);
  });

  it('C-MOVE of a study dcmqrscp does not hold: no error from Success with 0 sub-operations, nothing stored', async () => {
    const out = await pacs.retrieveStudy('1.2.3.4.5.6.7.8.9');
    expect(out.completed).to.equal(0);
    expect(out.failed).to.equal(0);
    expect(await findStudy(opened.db, '1.2.3.4.5.6.7.8.9')).to.equal(undefined);
  });
});
