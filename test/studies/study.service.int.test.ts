import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import winston from 'winston';
import { migrateToLatest, openDatabase, type OpenedDatabase } from '../../src/db/database.js';
import type { ReceivedInstance } from '../../src/dicom/instance-record.js';
import { Spool } from '../../src/dicom/spool.js';
import { findStudy, instancesOfStudy } from '../../src/studies/study.repository.js';
import { StudyService } from '../../src/studies/study.service.js';
import { makeTempDir, testDatabaseUrl } from '../helpers/tmp.js';

const silent = winston.createLogger({ silent: true });

class ManualClock {
  constructor(public ms: number) {}
  now = () => new Date(this.ms);
}

describe('StudyService (SQLite file, real spool)', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  let opened: OpenedDatabase;
  let spool: Spool;
  let clock: ManualClock;
  let service: StudyService;
  let n = 0;

  async function open(): Promise<void> {
    opened = openDatabase(testDatabaseUrl(path.join(tmp.dir, 'gw.db')));
    await migrateToLatest(opened.db);
    spool = new Spool(tmp.dir, 0);
    spool.open();
    service = new StudyService({ db: opened.db, spool, logger: silent, stableAfterSeconds: 60, clock: clock.now });
  }

  function received(study: string, series: string, sop: string, extra: Partial<ReceivedInstance> = {}): ReceivedInstance {
    const tmpPath = spool.newTmpPath();
    const bytes = Buffer.from(`instance ${sop} ${n++}`);
    writeFileSync(tmpPath, bytes);
    return {
      sopClassUid: '1.2.840.10008.5.1.4.1.1.2',
      sopInstanceUid: sop,
      transferSyntaxUid: '1.2.840.10008.1.2.1',
      studyInstanceUid: study,
      seriesInstanceUid: series,
      accessionNumber: 'ACC1',
      patientId: 'PID1',
      modality: 'CT',
      studyDescription: 'CT CHEST',
      seriesDescription: null,
      bodyPartExamined: 'CHEST',
      studyDate: '20261128',
      referringPhysicianName: null,
      seriesNumber: 1,
      instanceNumber: 1,
      tmpPath,
      sizeBytes: bytes.length,
      sha256: createHash('sha256').update(bytes).digest('hex'),
      callingAe: 'PACS1',
      ...extra,
    };
  }

  beforeEach(async () => {
    tmp = makeTempDir();
    clock = new ManualClock(Date.parse('2026-11-28T10:00:00Z'));
    await open();
  });
  afterEach(async () => {
    await service.stop();
    await opened.close();
    tmp.cleanup();
  });

  it('stores an instance: file placed, row committed, counters updated', async () => {
    const inst = received('1.2.3', '1.2.3.1', '1.2.3.1.1');
    const content = readFileSync(inst.tmpPath);
    expect(await service.storeInstance(inst)).to.equal('stored');
    const rows = await instancesOfStudy(opened.db, '1.2.3');
    expect(rows).to.have.length(1);
    expect(readFileSync(spool.absolute(rows[0]!.file_path))).to.deep.equal(content);
    expect(existsSync(inst.tmpPath)).to.equal(false);
    const study = await findStudy(opened.db, '1.2.3');
    expect(study).to.include({ state: 'receiving', instance_count: 1, accession_number: 'ACC1', patient_id: 'PID1', calling_ae: 'PACS1' });
  });

  it('stores a repeated SOP instance once and keeps the first copy', async () => {
    const first = received('1.2.3', '1.2.3.1', '1.2.3.1.1');
    const firstBytes = readFileSync(first.tmpPath);
    await service.storeInstance(first);
    const again = received('1.2.3', '1.2.3.1', '1.2.3.1.1');
    expect(await service.storeInstance(again)).to.equal('duplicate');
    expect(existsSync(again.tmpPath)).to.equal(false);
    const rows = await instancesOfStudy(opened.db, '1.2.3');
    expect(rows).to.have.length(1);
    expect(readFileSync(spool.absolute(rows[0]!.file_path))).to.deep.equal(firstBytes);
    expect((await findStudy(opened.db, '1.2.3'))?.instance_count).to.equal(1);
  });

  it('becomes stable after the quiet period, not before; a late instance re-opens it', async () => {
    const stable: string[] = [];
    service.subscribe({ onStable: (uid) => void stable.push(uid) });
    await service.storeInstance(received('1.2.3', '1.2.3.1', '1.2.3.1.1'));
    clock.ms += 30_000;
    await service.storeInstance(received('1.2.3', '1.2.3.2', '1.2.3.2.1'));
    clock.ms += 59_000;
    expect(await service.sweep()).to.deep.equal([]);
    clock.ms += 1_000;
    expect(await service.sweep()).to.deep.equal(['1.2.3']);
    await new Promise((r) => setImmediate(r));
    expect(stable).to.deep.equal(['1.2.3']);
    expect((await findStudy(opened.db, '1.2.3'))?.state).to.equal('stable');

    clock.ms += 5_000;
    await service.storeInstance(received('1.2.3', '1.2.3.2', '1.2.3.2.2'));
    const reopened = await findStudy(opened.db, '1.2.3');
    expect(reopened).to.include({ state: 'receiving', instance_count: 3, late_instance_count: 1 });
    const late = (await instancesOfStudy(opened.db, '1.2.3')).filter((i) => i.late === 1).map((i) => i.sop_instance_uid);
    expect(late).to.deep.equal(['1.2.3.2.2']);
  });

  it('the timer makes a study stable without a manual sweep', async () => {
    await service.stop();
    service = new StudyService({ db: opened.db, spool, logger: silent, stableAfterSeconds: 0.2 });
    const became = new Promise<string>((resolve) => service.subscribe({ onStable: resolve }));
    service.start();
    await service.storeInstance(received('1.9.9', '1.9.9.1', '1.9.9.1.1'));
    expect(await became).to.equal('1.9.9');
    expect((await findStudy(opened.db, '1.9.9'))?.state).to.equal('stable');
  });

  it('after a restart, studies that went quiet while stopped become stable at start', async () => {
    await service.storeInstance(received('1.2.4', '1.2.4.1', '1.2.4.1.1'));
    await service.stop();
    await opened.close();
    clock.ms += 120_000;
    await open();
    const became = new Promise<string>((resolve) => service.subscribe({ onStable: resolve }));
    service.start();
    expect(await became).to.equal('1.2.4');
    expect((await findStudy(opened.db, '1.2.4'))?.instance_count).to.equal(1);
  });

  it('leaves neither file nor row when the commit fails', async () => {
    const inst = received('1.2.5', '1.2.5.1', '1.2.5.1.1');
    await opened.db.schema.dropTable('instances').execute();
    let err: unknown;
    try {
      await service.storeInstance(inst);
    } catch (e) {
      err = e;
    }
    expect(err).to.have.property('code');
    expect(existsSync(inst.tmpPath)).to.equal(false);
    expect(readdirSync(spool.instancesDir)).to.deep.equal([]);
    expect(await findStudy(opened.db, '1.2.5')).to.equal(undefined);
  });

  it('start-up removes partial files a crash left in tmp/', () => {
    writeFileSync(spool.newTmpPath(), 'half');
    writeFileSync(spool.newTmpPath(), 'half');
    expect(new Spool(tmp.dir, 0).open().sweptTmpFiles).to.equal(2);
    expect(readdirSync(spool.tmpDir)).to.deep.equal([]);
  });
});
