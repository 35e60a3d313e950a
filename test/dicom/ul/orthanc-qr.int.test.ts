/**
 * The SCU client API (ul/client.ts) against a real Orthanc: C-FIND at study
 * and series level, and C-MOVE (to Orthanc itself, the one destination it can
 * reach from its network namespace) with the final sub-operation counts.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { DimseClient, proposeContexts } from '../../../src/dicom/ul/client.js';
import { SopClass } from '../../../src/dicom/uids.js';
import { generateStudy, type GeneratedStudy } from '../../../scripts/lib/study-generator.js';
import { storeFiles } from '../../helpers/dicom-peers.js';
import { orthancUnavailable, startOrthanc, type OrthancPeer } from '../../helpers/orthanc.js';
import { makeTempDir } from '../../helpers/tmp.js';

describe('DimseClient find() / move() against a real Orthanc', function () {
  this.timeout(120_000);
  let o: OrthancPeer | undefined;
  let tmp: ReturnType<typeof makeTempDir>;
  let study: GeneratedStudy;

  before(async function () {
    const why = orthancUnavailable();
    if (why) {
      console.log(`      skipped: ${why}`);
      this.skip();
    }
    o = await startOrthanc({
      config: {
        DicomAlwaysAllowFind: true,
        DicomAlwaysAllowMove: true,
        // inside its namespace 127.0.0.1:4242 is Orthanc itself
        DicomModalities: { self: ['ORTHANC', '127.0.0.1', 4242] },
      },
    });
    if (!o.dicom) {
      console.log("      skipped: Orthanc's DICOM port is only enabled when it runs in its own network namespace (unshare -n, needs root)");
      this.skip();
    }
    tmp = makeTempDir('gw-qr-');
    study = generateStudy(path.join(tmp.dir, 'study'), { instances: 4, series: 2, rows: 32, columns: 32, accessionNumber: 'ACC-QR-1', patientId: 'PID-QR-1' });
    const stored = await storeFiles(
      { host: o.dicom!.host, port: o.dicom!.port, callingAe: 'SECONDREAD', calledAe: 'ORTHANC' },
      study.instances.map((i) => i.path),
    );
    assert.deepEqual(
      stored.statuses,
      study.instances.map(() => 0),
      stored.error,
    );
  });
  after(async () => {
    await o?.stop();
    tmp?.cleanup();
  });

  const connect = (): Promise<DimseClient> =>
    DimseClient.connect({
      host: o!.dicom!.host,
      port: o!.dicom!.port,
      callingAe: 'SECONDREAD',
      calledAe: 'ORTHANC',
      contexts: proposeContexts([SopClass.studyRootFind, SopClass.studyRootMove]),
      timeoutMs: 20_000,
    });

  it('C-FIND STUDY by PatientID: one match with the study UID and accession; an unknown patient: none', async () => {
    const client = await connect();
    const found = await client.find({ PatientID: 'PID-QR-1', StudyInstanceUID: '', AccessionNumber: '' }, 'STUDY');
    assert.equal(found.status, 0);
    assert.equal(found.matches.length, 1);
    assert.equal(found.matches[0]!.StudyInstanceUID, study.studyInstanceUid);
    assert.equal(found.matches[0]!.AccessionNumber, 'ACC-QR-1');
    const none = await client.find({ PatientID: 'NOBODY', StudyInstanceUID: '' }, 'STUDY');
    assert.deepEqual([none.status, none.matches.length], [0, 0]);
    await client.release();
  });

  it('C-FIND SERIES within the study: every series', async () => {
    const client = await connect();
    const found = await client.find({ StudyInstanceUID: study.studyInstanceUid, SeriesInstanceUID: '', Modality: '' }, 'SERIES');
    assert.equal(found.status, 0);
    assert.deepEqual(found.matches.map((m) => m.SeriesInstanceUID).sort(), [...study.seriesInstanceUids].sort());
    await client.release();
  });

  it('C-MOVE the study: final status and counts; to an unknown AE: a failure status (Orthanc answers 0xC000)', async () => {
    const client = await connect();
    const moved = await client.move({ StudyInstanceUID: study.studyInstanceUid }, 'ORTHANC');
    assert.equal(moved.status, 0);
    assert.equal(moved.completed, study.instances.length);
    assert.equal(moved.failed, 0);
    const nowhere = await client.move({ StudyInstanceUID: study.studyInstanceUid }, 'NOWHERE');
    // PS3.4 C.4.2.1.5 suggests 0xA801 (move destination unknown); Orthanc 1.10 answers 0xC000 (unable to process)
    assert.ok([0xa801, 0xc000].includes(nowhere.status), `status 0x${nowhere.status.toString(16)}`);
    assert.equal(nowhere.completed, 0);
    await client.release();
  });
});
