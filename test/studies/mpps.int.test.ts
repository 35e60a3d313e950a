/**
 * MPPS completeness with real C-STOREs (DCMTK storescu) into an in-process gateway, the MPPS port called
 * directly, and once over the wire: N-CREATE / N-SET from our SCU (dicom/ul) to the gateway's DICOM port.
 * The database is the suite's (SQLite file, or PostgreSQL with GATEWAY_TEST_DATABASE_URL).
 */
import path from 'node:path';
import { expect } from 'chai';
import { generateStudy, type GeneratedStudy } from '../../scripts/lib/study-generator.js';
import type { NaturalDataset } from '../../src/dicom/mpps.port.js';
import { hasDcmtk, runDcmtk } from '../helpers/dicom-peers.js';
import { DicomGateway } from '../helpers/dicom-gateway.js';
import { eventually } from '../helpers/eventually.js';
import { DimseClient, proposeContexts } from '../../src/dicom/ul/client.js';
import { MPPS_SOP_CLASS_UID } from '../../src/dicom/mpps.port.js';
import dimse from 'dcmjs-dimse';
import { sendRequests } from '../../scripts/lib/raw-scu.js';

const CALLER = 'MODALITY1';

async function send(port: number, files: string[]): Promise<void> {
  const r = await runDcmtk('storescu', ['-aet', CALLER, '-aec', 'SECONDREAD', '127.0.0.1', String(port), ...files]);
  expect(r.code, r.stderr).to.equal(0);
}

function created(study: GeneratedStudy): NaturalDataset {
  return {
    PatientID: study.patientId,
    Modality: study.modality,
    PerformedProcedureStepStatus: 'IN PROGRESS',
    ScheduledStepAttributesSequence: [{ StudyInstanceUID: study.studyInstanceUid, AccessionNumber: study.accessionNumber }],
  };
}

function ended(study: GeneratedStudy, status: 'COMPLETED' | 'DISCONTINUED', listed = study.instances): NaturalDataset {
  return {
    PerformedProcedureStepStatus: status,
    PerformedSeriesSequence: study.seriesInstanceUids.map((series) => ({
      SeriesInstanceUID: series,
      ReferencedImageSequence: listed
        .filter((i) => i.seriesInstanceUid === series)
        .map((i) => ({ ReferencedSOPClassUID: i.sopClassUid, ReferencedSOPInstanceUID: i.sopInstanceUid })),
    })),
  };
}

describe('MPPS: completeness from the modality (storescu + the MPPS port)', function () {
  this.timeout(120_000);
  before(function () {
    if (!hasDcmtk()) {
      console.log('      skipped: DCMTK (storescu) not installed');
      this.skip();
    }
  });

  describe('with a long quiet period (60 s)', () => {
    let gw: DicomGateway;
    before(async () => {
      gw = new DicomGateway({ rules: [], dicom: { port: 0, stableAfterSeconds: 60, allowedCallers: [] } });
      await gw.start();
    });
    after(async () => gw?.stop());

    it('a study whose MPPS is COMPLETED is stable as soon as every listed instance has arrived, long before the quiet period', async () => {
      const study = generateStudy(path.join(gw.tmp.dir, 'early'), { instances: 4, series: 2, rows: 8, columns: 8 });
      const mppsUid = `${study.studyInstanceUid}.99`;
      expect((await gw.gw.mpps.nCreate({ sopInstanceUid: mppsUid, dataset: created(study), callingAeTitle: CALLER })).status).to.equal(0);
      await send(
        gw.dicomPort,
        study.instances.slice(0, 3).map((i) => i.path),
      );
      expect((await gw.gw.mpps.nSet({ sopInstanceUid: mppsUid, dataset: ended(study, 'COMPLETED'), callingAeTitle: CALLER })).status).to.equal(0);
      // three of four: still receiving, and the study page says what is missing
      const waiting = await gw.call('GET', `/api/studies/${study.studyInstanceUid}`);
      expect(waiting.body.state).to.equal('receiving');
      expect(waiting.body.completeness).to.deep.include({ verdict: 'waiting', referenced: 4, arrived: 3, missing: 1 });
      expect(waiting.body.completeness.mpps).to.deep.equal([{ sopInstanceUid: mppsUid, status: 'COMPLETED', referenced: 4 }]);
      const t0 = Date.now();
      await send(gw.dicomPort, [study.instances[3]!.path]);
      const stable = await eventually(
        async () => {
          const s = await gw.call('GET', `/api/studies/${study.studyInstanceUid}`);
          return s.body.state === 'stable' ? s.body : undefined;
        },
        'study stable by MPPS',
        15_000,
      );
      expect(Date.now() - t0).to.be.below(30_000);
      expect(stable.completeness).to.deep.include({ verdict: 'complete', referenced: 4, arrived: 4, missing: 0 });
      const audit = await gw.call('GET', `/api/audit?entityId=${study.studyInstanceUid}`);
      const actions = (audit.body.items as { action: string }[]).map((a) => a.action);
      expect(actions).to.include.members(['mpps.created', 'mpps.completed', 'study.complete']);
    });

    it('all listed instances before the N-SET: the N-SET COMPLETED itself completes the study', async () => {
      const study = generateStudy(path.join(gw.tmp.dir, 'nset-last'), { instances: 2, rows: 8, columns: 8 });
      const mppsUid = `${study.studyInstanceUid}.98`;
      await gw.gw.mpps.nCreate({ sopInstanceUid: mppsUid, dataset: created(study), callingAeTitle: CALLER });
      await send(
        gw.dicomPort,
        study.instances.map((i) => i.path),
      );
      expect((await gw.call('GET', `/api/studies/${study.studyInstanceUid}`)).body.state).to.equal('receiving');
      await gw.gw.mpps.nSet({ sopInstanceUid: mppsUid, dataset: ended(study, 'COMPLETED'), callingAeTitle: CALLER });
      await eventually(async () => (await gw.call('GET', `/api/studies/${study.studyInstanceUid}`)).body.state === 'stable', 'stable after the N-SET', 15_000);
    });

    it('DISCONTINUED is recorded and completes nothing early; the port answers the PS3.4 statuses', async () => {
      const study = generateStudy(path.join(gw.tmp.dir, 'disc'), { instances: 2, rows: 8, columns: 8 });
      const mppsUid = `${study.studyInstanceUid}.97`;
      await send(
        gw.dicomPort,
        study.instances.map((i) => i.path),
      );
      expect((await gw.gw.mpps.nCreate({ sopInstanceUid: mppsUid, dataset: created(study), callingAeTitle: CALLER })).status).to.equal(0);
      expect((await gw.gw.mpps.nCreate({ sopInstanceUid: mppsUid, dataset: created(study), callingAeTitle: CALLER })).status, 'duplicate').to.equal(0x0111);
      expect((await gw.gw.mpps.nSet({ sopInstanceUid: mppsUid, dataset: ended(study, 'DISCONTINUED'), callingAeTitle: CALLER })).status).to.equal(0);
      const row = await gw.gw.db.selectFrom('mpps').selectAll().where('sop_instance_uid', '=', mppsUid).executeTakeFirstOrThrow();
      expect(row).to.include({ status: 'DISCONTINUED', study_instance_uid: study.studyInstanceUid, calling_ae: CALLER });
      expect(row.ended_at).to.be.a('string');
      const s = await gw.call('GET', `/api/studies/${study.studyInstanceUid}`);
      expect(s.body.state).to.equal('receiving');
      expect(s.body.completeness.mpps[0].status).to.equal('DISCONTINUED');
      const audit = await gw.call('GET', `/api/audit?entityId=${study.studyInstanceUid}`);
      expect((audit.body.items as { action: string }[]).map((a) => a.action)).to.include('mpps.discontinued');
      // a step that ended may no longer be updated; an unknown one does not exist; a step is created IN PROGRESS
      expect((await gw.gw.mpps.nSet({ sopInstanceUid: mppsUid, dataset: ended(study, 'COMPLETED'), callingAeTitle: CALLER })).status).to.equal(0x0110);
      expect((await gw.gw.mpps.nSet({ sopInstanceUid: `${mppsUid}.404`, dataset: ended(study, 'COMPLETED'), callingAeTitle: CALLER })).status).to.equal(0x0112);
      expect(
        (
          await gw.gw.mpps.nCreate({
            sopInstanceUid: `${mppsUid}.2`,
            dataset: { ...created(study), PerformedProcedureStepStatus: 'COMPLETED' },
            callingAeTitle: CALLER,
          })
        ).status,
      ).to.equal(0x0106);
    });
  });

  describe("over the wire: N-CREATE / N-SET from a modality (our SCU through dicom/ul) to the gateway's DICOM port", () => {
    let gw: DicomGateway;
    before(async () => {
      gw = new DicomGateway({ rules: [], dicom: { port: 0, stableAfterSeconds: 60, allowedCallers: [] } });
      await gw.start();
    });
    after(async () => gw?.stop());

    it('the modality reports the step on the DICOM port: the study completes early; a duplicate N-CREATE and an unknown N-SET get the PS3.4 statuses', async () => {
      const study = generateStudy(path.join(gw.tmp.dir, 'wire'), { instances: 3, series: 1, rows: 8, columns: 8 });
      const mppsUid = `${study.studyInstanceUid}.77`;
      const scu = await DimseClient.connect({
        host: '127.0.0.1',
        port: gw.dicomPort,
        callingAe: CALLER,
        calledAe: 'SECONDREAD',
        contexts: proposeContexts([MPPS_SOP_CLASS_UID]),
        timeoutMs: 10_000,
      });
      try {
        expect((await scu.nCreate(mppsUid, created(study))).status).to.equal(0);
        // 0x0111 duplicate SOP instance: the step exists already
        expect((await scu.nCreate(mppsUid, created(study))).status).to.equal(0x0111);
        // 0x0112 no such SOP instance
        expect((await scu.nSet(`${mppsUid}.404`, ended(study, 'COMPLETED'))).status).to.equal(0x0112);
        await send(
          gw.dicomPort,
          study.instances.map((i) => i.path),
        );
        expect((await scu.nSet(mppsUid, ended(study, 'COMPLETED'))).status).to.equal(0);
      } finally {
        await scu.release();
      }
      const stable = await eventually(
        async () => {
          const s = await gw.call('GET', `/api/studies/${study.studyInstanceUid}`);
          return s.body.state === 'stable' ? s.body : undefined;
        },
        'study stable by an MPPS received on the DICOM port',
        15_000,
      );
      expect(stable.completeness).to.deep.include({ verdict: 'complete', referenced: 3, arrived: 3, missing: 0 });
      expect(stable.completeness.mpps).to.deep.equal([{ sopInstanceUid: mppsUid, status: 'COMPLETED', referenced: 3 }]);
    });
  });

  describe("cross-check: the same steps from a second implementation (dcmjs-dimse's Client, N-CREATE / N-SET)", () => {
    let gw: DicomGateway;
    before(async () => {
      gw = new DicomGateway({ rules: [], dicom: { port: 0, stableAfterSeconds: 60, allowedCallers: [] } });
      await gw.start();
    });
    after(async () => gw?.stop());

    it('dcmjs-dimse reports IN PROGRESS then COMPLETED: accepted, and the study completes early', async () => {
      const study = generateStudy(path.join(gw.tmp.dir, 'dcmjs-dimse'), { instances: 2, series: 1, rows: 8, columns: 8 });
      const mppsUid = `${study.studyInstanceUid}.55`;
      const target = { host: '127.0.0.1', port: gw.dicomPort, callingAe: CALLER, calledAe: 'SECONDREAD' };
      const create = new dimse.requests.NCreateRequest(MPPS_SOP_CLASS_UID, mppsUid);
      create.setDataset(new dimse.Dataset(created(study)));
      const r1 = await sendRequests(target, [create]);
      expect(r1.error, r1.error).to.equal(undefined);
      expect(r1.statuses).to.deep.equal([0]);
      await send(
        gw.dicomPort,
        study.instances.map((i) => i.path),
      );
      const set = new dimse.requests.NSetRequest(MPPS_SOP_CLASS_UID, mppsUid);
      set.setDataset(new dimse.Dataset(ended(study, 'COMPLETED')));
      const r2 = await sendRequests(target, [set]);
      expect(r2.statuses).to.deep.equal([0]);
      const stable = await eventually(
        async () => {
          const s = await gw.call('GET', `/api/studies/${study.studyInstanceUid}`);
          return s.body.state === 'stable' ? s.body : undefined;
        },
        'study stable by an MPPS from dcmjs-dimse',
        15_000,
      );
      expect(stable.completeness).to.deep.include({ verdict: 'complete', referenced: 2, arrived: 2, missing: 0 });
    });
  });

  describe('with a short quiet period (0.5 s)', () => {
    let gw: DicomGateway;
    before(async () => {
      gw = new DicomGateway({ rules: [], dicom: { port: 0, stableAfterSeconds: 0.5, allowedCallers: [] } });
      await gw.start();
    });
    after(async () => gw?.stop());

    it('a study still missing listed instances after the quiet period is held `incomplete`; the missing instance completes it', async () => {
      const study = generateStudy(path.join(gw.tmp.dir, 'short'), { instances: 3, rows: 8, columns: 8 });
      const mppsUid = `${study.studyInstanceUid}.96`;
      await gw.gw.mpps.nCreate({ sopInstanceUid: mppsUid, dataset: created(study), callingAeTitle: CALLER });
      await gw.gw.mpps.nSet({ sopInstanceUid: mppsUid, dataset: ended(study, 'COMPLETED'), callingAeTitle: CALLER });
      await send(
        gw.dicomPort,
        study.instances.slice(0, 2).map((i) => i.path),
      );
      const held = await eventually(
        async () => {
          const s = await gw.call('GET', `/api/studies/${study.studyInstanceUid}`);
          return s.body.state === 'held' ? s.body : s.body.state === 'stable' ? { stableInstead: true } : undefined;
        },
        'study held',
        15_000,
      );
      expect(held).to.deep.include({ state: 'held', holdReason: 'incomplete' });
      expect(held.holdDetail).to.match(/1 of 3 instances/);
      expect(held.completeness).to.deep.include({ verdict: 'incomplete', referenced: 3, arrived: 2, missing: 1 });
      await new Promise((r) => setTimeout(r, 1200)); // past another quiet period: still held, not turned stable
      expect((await gw.call('GET', `/api/studies/${study.studyInstanceUid}`)).body.state).to.equal('held');
      await send(gw.dicomPort, [study.instances[2]!.path]);
      const done = await eventually(
        async () => {
          const s = await gw.call('GET', `/api/studies/${study.studyInstanceUid}`);
          return s.body.state === 'stable' ? s.body : undefined;
        },
        'released by the last instance',
        15_000,
      );
      expect(done.holdReason).to.equal(null);
    });

    it('without MPPS the quiet period stays: a study goes stable with whatever arrived', async () => {
      const study = generateStudy(path.join(gw.tmp.dir, 'nompps'), { instances: 2, rows: 8, columns: 8 });
      await send(gw.dicomPort, [study.instances[0]!.path]);
      const s = await eventually(
        async () => {
          const r = await gw.call('GET', `/api/studies/${study.studyInstanceUid}`);
          return r.body.state === 'stable' ? r.body : undefined;
        },
        'stable by quiet period',
        15_000,
      );
      expect(s.completeness).to.equal(null);
      expect(s.instanceCount).to.equal(1);
    });
  });
});
