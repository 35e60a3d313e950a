import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import winston from 'winston';
import { migrateToLatest, openDatabase, type OpenedDatabase } from '../../src/db/database.js';
import type { ReceivedInstance } from '../../src/dicom/instance-record.js';
import { Spool } from '../../src/dicom/spool.js';
import { versionsOfStudy } from '../../src/studies/instance-version.repository.js';
import { findStudy, instancesOfStudy } from '../../src/studies/study.repository.js';
import { STABILITY_JOB, StudyService } from '../../src/studies/study.service.js';
import { JobRunner } from '../../src/jobs/job-runner.js';
import { jobsOf } from '../../src/jobs/job.repository.js';
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
  let runner: JobRunner;
  let n = 0;

  /** A service on a job runner that is not started: its stability jobs run only when the test drains them (settle). */
  function build(o: { stableAfterSeconds: number; clock?: () => Date; jobs?: boolean }): StudyService {
    runner = new JobRunner({ db: opened.db, logger: silent, workerId: 'test', pollMs: 50 });
    const s = new StudyService({
      db: opened.db,
      spool,
      logger: silent,
      stableAfterSeconds: o.stableAfterSeconds,
      ...(o.clock ? { clock: o.clock } : {}),
      ...(o.jobs === false ? {} : { jobs: runner }),
    });
    s.register();
    return s;
  }

  async function open(): Promise<void> {
    opened = openDatabase(testDatabaseUrl(path.join(tmp.dir, 'gw.db')));
    await migrateToLatest(opened.db);
    spool = new Spool(tmp.dir, 0);
    spool.open();
    service = build({ stableAfterSeconds: 60, clock: clock.now });
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
    await runner.stop();
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

  /** The same content again, as a sender's retry: same bytes, same hash. */
  function sameAgain(first: ReceivedInstance, bytes: Buffer): ReceivedInstance {
    const tmpPath = spool.newTmpPath();
    writeFileSync(tmpPath, bytes);
    return { ...first, tmpPath, fd: undefined };
  }

  it('stores the same bytes of a SOP instance once', async () => {
    const first = received('1.2.3', '1.2.3.1', '1.2.3.1.1');
    const firstBytes = readFileSync(first.tmpPath);
    await service.storeInstance(first);
    const again = sameAgain(first, firstBytes);
    expect(await service.storeInstance(again)).to.equal('duplicate');
    expect(existsSync(again.tmpPath)).to.equal(false);
    const rows = await instancesOfStudy(opened.db, '1.2.3');
    expect(rows).to.have.length(1);
    expect(rows[0]!.version).to.equal(1);
    expect(readFileSync(spool.absolute(rows[0]!.file_path))).to.deep.equal(firstBytes);
    expect((await findStudy(opened.db, '1.2.3'))?.instance_count).to.equal(1);
    expect(await versionsOfStudy(opened.db, '1.2.3')).to.deep.equal([]);
  });

  it('other bytes for a known SOP instance: the new copy is current, the first kept as a prior version', async () => {
    const first = received('1.2.3', '1.2.3.1', '1.2.3.1.1');
    const firstBytes = readFileSync(first.tmpPath);
    await service.storeInstance(first);
    const second = received('1.2.3', '1.2.3.1', '1.2.3.1.1');
    const secondBytes = readFileSync(second.tmpPath);
    expect(await service.storeInstance(second)).to.equal('stored');
    const rows = await instancesOfStudy(opened.db, '1.2.3');
    expect(rows).to.have.length(1);
    expect(rows[0]).to.include({ version: 2, sha256: second.sha256 });
    expect(readFileSync(spool.absolute(rows[0]!.file_path))).to.deep.equal(secondBytes);
    const versions = await versionsOfStudy(opened.db, '1.2.3');
    expect(versions.map((v) => [v.version, v.sha256, v.superseded_at === null])).to.deep.equal([
      [1, first.sha256, false],
      [2, second.sha256, true],
    ]);
    expect(readFileSync(spool.absolute(versions[0]!.file_path))).to.deep.equal(firstBytes);
    // no identity changed: not held
    expect(await findStudy(opened.db, '1.2.3')).to.include({
      state: 'receiving',
      instance_count: 1,
      size_bytes: first.sizeBytes + (second.sizeBytes - first.sizeBytes),
    });
  });

  it('a re-send under another patient id holds the study (identity-conflict, attribute names only); release and reject', async () => {
    await service.storeInstance(received('1.2.3', '1.2.3.1', '1.2.3.1.1', { patientName: 'DOE^JANE' }));
    await service.storeInstance(received('1.2.3', '1.2.3.1', '1.2.3.1.2', { patientName: 'DOE^JANE' }));
    const moved = received('1.2.3', '1.2.3.1', '1.2.3.1.1', { patientId: 'PID2', patientName: 'ROE^RICHARD' });
    expect(await service.storeInstance(moved)).to.equal('stored');
    let s = await findStudy(opened.db, '1.2.3');
    expect(s).to.include({ state: 'held', hold_reason: 'identity-conflict', hold_detail: 'changed: PatientID, PatientName', held_from_state: 'receiving' });
    // its stability job never makes a held study stable (the manual clock is days behind the database's: quiet)
    await service.settle();
    expect((await findStudy(opened.db, '1.2.3'))?.state).to.equal('held');
    expect(await jobsOf(opened.db, STABILITY_JOB)).to.have.length(0);
    const rejected = await service.reject('1.2.3', 'quinn', 'wrong patient at the modality');
    expect(rejected).to.include({ state: 'receiving', hold_reason: null });
    const row = (await instancesOfStudy(opened.db, '1.2.3')).find((r) => r.sop_instance_uid === '1.2.3.1.1')!;
    expect(row.version).to.equal(1);
    const versions = await versionsOfStudy(opened.db, '1.2.3');
    expect(versions.map((v) => [v.version, v.superseded_at === null, v.conflict_state])).to.deep.equal([
      [1, true, null],
      [2, false, 'rejected'],
    ]);
    // again, then released: the newest copy stays current
    const again = received('1.2.3', '1.2.3.1', '1.2.3.1.1', { patientId: 'PID2' });
    await service.storeInstance(again);
    expect((await findStudy(opened.db, '1.2.3'))?.state).to.equal('held');
    s = await service.release('1.2.3', 'quinn', 'checked with the RIS');
    expect(s.state).to.equal('receiving');
    expect((await instancesOfStudy(opened.db, '1.2.3')).find((r) => r.sop_instance_uid === '1.2.3.1.1')).to.include({ version: 3, sha256: again.sha256 });
    const audit = await opened.db
      .selectFrom('audit_events')
      .select(['action', 'entity_id', 'details'])
      .where('entity_type', '=', 'study')
      .orderBy('id')
      .execute();
    expect(audit.map((a) => a.action)).to.deep.equal(['study.held', 'study.rejected', 'study.held', 'study.released']);
    // the audit names attributes, never the values
    expect(JSON.stringify(audit)).to.not.include('PID2');
  });

  it('files the identity with its authority: issuer, other patient ids, decoded name and birth date', async () => {
    await service.storeInstance(
      received('1.2.3', '1.2.3.1', '1.2.3.1.1', {
        issuerOfPatientId: 'HOSP',
        otherPatientIds: [{ id: 'NAT-1', issuer: 'NATIONAL', type: 'TEXT' }],
        patientName: 'やまだ^たろう',
        patientBirthDate: '19600101',
      }),
    );
    const s = await findStudy(opened.db, '1.2.3');
    expect(s).to.include({ issuer_of_patient_id: 'HOSP', patient_name: 'やまだ^たろう', patient_birth_date: '19600101' });
    expect(JSON.parse(s!.other_patient_ids!)).to.deep.equal([{ id: 'NAT-1', issuer: 'NATIONAL', type: 'TEXT' }]);
    // the same id under another issuer is another patient
    await service.storeInstance(received('1.2.3', '1.2.3.1', '1.2.3.1.2', { issuerOfPatientId: 'OTHERHOSP' }));
    expect(await findStudy(opened.db, '1.2.3')).to.include({ state: 'held', hold_detail: 'changed: IssuerOfPatientID' });
  });

  it('a new instance of a known study with another patient id holds it', async () => {
    await service.storeInstance(received('1.2.3', '1.2.3.1', '1.2.3.1.1'));
    await service.storeInstance(received('1.2.3', '1.2.3.1', '1.2.3.1.2', { patientId: 'OTHER' }));
    expect(await findStudy(opened.db, '1.2.3')).to.include({
      state: 'held',
      hold_reason: 'identity-conflict',
      hold_detail: 'changed: PatientID',
      instance_count: 2,
    });
    await service.reject('1.2.3', 'quinn', 'not this patient');
    expect(await findStudy(opened.db, '1.2.3')).to.include({ state: 'receiving', instance_count: 1 });
    expect((await instancesOfStudy(opened.db, '1.2.3')).map((r) => r.sop_instance_uid)).to.deep.equal(['1.2.3.1.1']);
  });

  it('becomes stable after the quiet period (database clock), not before; a late instance re-opens it with one job', async () => {
    await runner.stop();
    service = build({ stableAfterSeconds: 1 });
    const stable: string[] = [];
    service.subscribe({ onStable: (uid) => void stable.push(uid) });
    await service.storeInstance(received('1.2.3', '1.2.3.1', '1.2.3.1.1'));
    await service.storeInstance(received('1.2.3', '1.2.3.2', '1.2.3.2.1'));
    // one job for the episode, not one per instance, due a quiet period after the first arrival
    expect(await jobsOf(opened.db, STABILITY_JOB)).to.have.length(1);
    await service.settle();
    expect((await findStudy(opened.db, '1.2.3'))?.state).to.equal('receiving');
    await new Promise((r) => setTimeout(r, 1_100));
    await service.settle();
    expect((await findStudy(opened.db, '1.2.3'))?.state).to.equal('stable');
    await new Promise((r) => setImmediate(r));
    expect(stable).to.deep.equal(['1.2.3']);
    expect(await jobsOf(opened.db, STABILITY_JOB)).to.have.length(0);

    await service.storeInstance(received('1.2.3', '1.2.3.2', '1.2.3.2.2'));
    await service.storeInstance(received('1.2.3', '1.2.3.2', '1.2.3.2.3'));
    const reopened = await findStudy(opened.db, '1.2.3');
    expect(reopened).to.include({ state: 'receiving', instance_count: 4, late_instance_count: 1 });
    const late = (await instancesOfStudy(opened.db, '1.2.3')).filter((i) => i.late === 1).map((i) => i.sop_instance_uid);
    expect(late).to.deep.equal(['1.2.3.2.2']);
    expect(await jobsOf(opened.db, STABILITY_JOB)).to.have.length(1);
    await service.settle();
    expect((await findStudy(opened.db, '1.2.3'))?.state).to.equal('receiving');
  });

  it('the job engine alone makes a study stable (no timer in the service)', async () => {
    await runner.stop();
    service = build({ stableAfterSeconds: 0.2 });
    const became = new Promise<string>((resolve) => service.subscribe({ onStable: resolve }));
    await runner.start();
    await service.storeInstance(received('1.9.9', '1.9.9.1', '1.9.9.1.1'));
    expect(await became).to.equal('1.9.9');
    expect((await findStudy(opened.db, '1.9.9'))?.state).to.equal('stable');
  });

  it('studies received without a stability job (before this version) get one at start and become stable', async () => {
    await runner.stop();
    service = build({ stableAfterSeconds: 60, clock: clock.now, jobs: false });
    await service.storeInstance(received('1.2.4', '1.2.4.1', '1.2.4.1.1'));
    expect(await jobsOf(opened.db, STABILITY_JOB)).to.have.length(0);
    await service.stop();
    await opened.close();
    await open();
    await service.start();
    expect(await jobsOf(opened.db, STABILITY_JOB)).to.have.length(1);
    // a second start finds the job there: no second one
    await service.start();
    expect(await jobsOf(opened.db, STABILITY_JOB)).to.have.length(1);
    await service.settle();
    expect(await findStudy(opened.db, '1.2.4')).to.include({ state: 'stable', instance_count: 1 });
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
