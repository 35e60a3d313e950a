/**
 * IHE IOCM: a Key Object Selection Document titled by a DICOM CID 7011 code (a rejection note) withdraws
 * the instances it lists. The note is built with dcmjs and sent by DCMTK's storescu; the gateway takes
 * the listed instances out of the study (counts, what the rules and deliveries see), shows them as
 * rejected, stores the note and never forwards it. DCM 113038 (Incorrect Modality Worklist Entry: the
 * images were taken for the wrong patient or order) also holds the study.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import dcmjs from 'dcmjs';
import { generateStudy, newUid, type GeneratedStudy } from '../../scripts/lib/study-generator.js';
import { hasDcmtk, runDcmtk } from '../helpers/dicom-peers.js';
import { DicomGateway, Storescp, freePort } from '../helpers/dicom-gateway.js';
import { eventually } from '../helpers/eventually.js';

const KOS = '1.2.840.10008.5.1.4.1.1.88.59';
const CT = '1.2.840.10008.5.1.4.1.1.2';

function rejectionNote(file: string, study: GeneratedStudy, rejected: { sop: string; series: string }[], code: string, meaning: string): string {
  const sop = newUid();
  const bySeries = new Map<string, string[]>();
  for (const r of rejected) bySeries.set(r.series, [...(bySeries.get(r.series) ?? []), r.sop]);
  const dataset = {
    SpecificCharacterSet: 'ISO_IR 192',
    SOPClassUID: KOS,
    SOPInstanceUID: sop,
    StudyInstanceUID: study.studyInstanceUid,
    SeriesInstanceUID: newUid(),
    Modality: 'KO',
    PatientID: study.patientId,
    PatientName: study.patientName,
    AccessionNumber: study.accessionNumber,
    SeriesNumber: '99',
    InstanceNumber: '1',
    ValueType: 'CONTAINER',
    ConceptNameCodeSequence: [{ CodeValue: code, CodingSchemeDesignator: 'DCM', CodeMeaning: meaning }],
    ContinuityOfContent: 'SEPARATE',
    CurrentRequestedProcedureEvidenceSequence: [
      {
        StudyInstanceUID: study.studyInstanceUid,
        ReferencedSeriesSequence: [...bySeries].map(([series, sops]) => ({
          SeriesInstanceUID: series,
          ReferencedSOPSequence: sops.map((s) => ({ ReferencedSOPClassUID: CT, ReferencedSOPInstanceUID: s })),
        })),
      },
    ],
  };
  const meta = {
    FileMetaInformationVersion: new Uint8Array([0, 1]).buffer,
    MediaStorageSOPClassUID: KOS,
    MediaStorageSOPInstanceUID: sop,
    TransferSyntaxUID: '1.2.840.10008.1.2.1',
    ImplementationClassUID: '2.25.1234567890',
  };
  const dict = new dcmjs.data.DicomDict(dcmjs.data.DicomMetaDictionary.denaturalizeDataset(meta));
  dict.dict = dcmjs.data.DicomMetaDictionary.denaturalizeDataset(dataset);
  writeFileSync(file, Buffer.from(dict.write()));
  return sop;
}

async function send(port: number, file: string): Promise<void> {
  const r = await runDcmtk('storescu', ['-v', '-aet', 'PACS1', '-aec', 'SECONDREAD', '127.0.0.1', String(port), file]);
  expect(r.stdout + r.stderr).to.match(/Received Store Response \(Success\)/);
}

describe('IOCM rejection notes (KOS titled by CID 7011)', function () {
  this.timeout(120_000);
  let gw: DicomGateway;
  let pool: Storescp;
  let study: GeneratedStudy;

  before(async function () {
    if (!hasDcmtk()) {
      console.log('      skipped: DCMTK (storescu, storescp) not installed');
      this.skip();
    }
    const poolPort = await freePort();
    gw = new DicomGateway({
      rules: [],
      destinations: [{ id: 'pool', type: 'dimse', host: '127.0.0.1', port: poolPort, aeTitle: 'STORESCP', deidentify: false }],
    });
    await gw.start();
    pool = new Storescp(path.join(gw.tmp.dir, 'pool'));
    mkdirSync(pool.dir);
    await pool.start(poolPort);
    study = generateStudy(path.join(gw.tmp.dir, 'study'), {
      instances: 4,
      series: 1,
      rows: 8,
      columns: 8,
      patientId: 'MRN-IOCM',
      accessionNumber: 'ACC-IOCM',
      modality: 'CT',
    });
    for (const i of study.instances) await send(gw.dicomPort, i.path);
    await eventually(
      async () => ((await gw.call('GET', `/api/studies/${study.studyInstanceUid}`)).body?.state === 'stable' ? true : undefined),
      'study stable',
    );
    expect((await gw.call('POST', '/api/cases', { studyInstanceUid: study.studyInstanceUid, reason: 'iocm test' })).status).to.equal(201);
    await eventually(async () => (pool.files().length === 4 ? true : undefined), 'the study at the pool', 20_000);
  });
  after(async () => {
    pool?.stop();
    await gw?.stop();
  });

  it('113001 Rejected for Quality Reasons: 2 instances leave the study, shown rejected; the note is stored, not forwarded', async () => {
    const [a, b] = study.instances;
    const note = rejectionNote(
      path.join(gw.tmp.dir, 'kos-quality.dcm'),
      study,
      [a!, b!].map((i) => ({ sop: i.sopInstanceUid, series: i.seriesInstanceUid })),
      '113001',
      'Rejected for Quality Reasons',
    );
    await send(gw.dicomPort, path.join(gw.tmp.dir, 'kos-quality.dcm'));
    const s = (await gw.call('GET', `/api/studies/${study.studyInstanceUid}`)).body;
    expect(s.instanceCount).to.equal(2);
    expect(s.state).to.not.equal('held');
    const rejected = s.versions
      .filter((v: any) => v.rejectionCode === 'DCM:113001')
      .map((v: any) => v.sopInstanceUid)
      .sort();
    expect(rejected).to.deep.equal([a!.sopInstanceUid, b!.sopInstanceUid].sort());
    expect(s.versions.filter((v: any) => v.current).map((v: any) => v.sopInstanceUid)).to.deep.equal([]);
    expect(s.versions.filter((v: any) => v.kind === 'iocm-rejection').map((v: any) => v.sopInstanceUid)).to.deep.equal([note]);
    const rows = await gw.gw.db.selectFrom('instances').select('sop_instance_uid').where('study_instance_uid', '=', study.studyInstanceUid).execute();
    expect(rows.map((r) => r.sop_instance_uid).sort()).to.deep.equal([study.instances[2]!.sopInstanceUid, study.instances[3]!.sopInstanceUid].sort());
    // the case's delivery lists what is left; after the quiet period nothing more goes to the pool (not the note)
    await eventually(async () => ((await gw.call('GET', `/api/studies/${study.studyInstanceUid}`)).body.state === 'stable' ? true : undefined), 'stable again');
    await new Promise((r) => setTimeout(r, 1500));
    expect(pool.files()).to.have.length(4);
    const delivery = await gw.gw.db
      .selectFrom('deliveries')
      .select(['instances_total', 'instances_sent'])
      .where('study_instance_uid', '=', study.studyInstanceUid)
      .executeTakeFirstOrThrow();
    expect(delivery).to.deep.equal({ instances_total: 2, instances_sent: 2 });
    // the same note again changes nothing
    await send(gw.dicomPort, path.join(gw.tmp.dir, 'kos-quality.dcm'));
    expect((await gw.call('GET', `/api/studies/${study.studyInstanceUid}`)).body.instanceCount).to.equal(2);
  });

  it('113038 Incorrect Modality Worklist Entry: the instance is withdrawn and the study held', async () => {
    const c = study.instances[2]!;
    rejectionNote(
      path.join(gw.tmp.dir, 'kos-mwl.dcm'),
      study,
      [{ sop: c.sopInstanceUid, series: c.seriesInstanceUid }],
      '113038',
      'Incorrect Modality Worklist Entry',
    );
    await send(gw.dicomPort, path.join(gw.tmp.dir, 'kos-mwl.dcm'));
    const s = (await gw.call('GET', `/api/studies/${study.studyInstanceUid}`)).body;
    expect(s).to.include({ instanceCount: 1, state: 'held', holdReason: 'iocm-incorrect-patient' });
    const audit = (await gw.call('GET', `/api/audit?entityType=study&entityId=${study.studyInstanceUid}`)).body.items.map((x: any) => x.action);
    expect(audit).to.include.members(['study.instances-rejected', 'study.held']);
    const rel = await gw.call('POST', `/api/studies/${study.studyInstanceUid}/release`, { reason: 'the remaining image is this patient' });
    expect(rel.status).to.equal(200);
    expect(rel.body.state).to.not.equal('held');
  });
});
