import { readFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { generateStudy } from '../../scripts/lib/study-generator.js';
import { orthancUnavailable, startOrthanc, type OrthancPeer } from '../helpers/orthanc.js';
import { DicomwebGateway, DW_TOKENS, files, multipartBody } from './dicomweb-fixture.js';

async function orthanc(o: OrthancPeer, method: string, p: string, body?: unknown): Promise<{ status: number; json: unknown }> {
  const res = await fetch(`${o.baseUrl}${p}`, {
    method,
    ...(body === undefined
      ? {}
      : {
          body: Buffer.isBuffer(body) ? body : JSON.stringify(body),
          headers: { 'content-type': Buffer.isBuffer(body) ? 'application/dicom' : 'application/json' },
        }),
  });
  const text = await res.text();
  let json: unknown = text;
  try {
    json = JSON.parse(text);
  } catch {
    // not JSON
  }
  return { status: res.status, json };
}

describe('DICOMweb with Orthanc as the peer (int)', function () {
  this.timeout(120_000);
  let t: DicomwebGateway;
  let o: OrthancPeer;

  before(async function () {
    const why = orthancUnavailable();
    if (why) {
      console.log(`      skipped: ${why.startsWith('Orthanc') ? 'Orthanc' : 'orthanc-dicomweb'} not installed`);
      this.skip();
    }
    t = new DicomwebGateway();
    await t.start();
    o = await startOrthanc({
      dicomwebServers: {
        'gw-pacs': { port: t.gw.ports().http, path: '/dicom-web/', headers: { Authorization: `Bearer ${DW_TOKENS.pacs}` } },
        'gw-reader': { port: t.gw.ports().http, path: '/dicom-web/', headers: { Authorization: `Bearer ${DW_TOKENS.drB}` } },
      },
    });
  });
  after(async () => {
    await o?.stop();
    await t?.stop();
  });

  it('Orthanc pushes a study to the gateway over STOW-RS (its DICOMweb plugin as the sender)', async () => {
    const study = generateStudy(path.join(t.tmp.dir, 'push'), { instances: 3, series: 1, rows: 16, columns: 16, modality: 'CT', patientId: 'MRN-ORTHANC-1' });
    let orthancStudy = '';
    for (const i of study.instances) {
      const r = await orthanc(o, 'POST', '/instances', readFileSync(i.path));
      expect(r.status).to.equal(200);
      orthancStudy = String((r.json as { ParentStudy: string }).ParentStudy);
    }
    const r = await orthanc(o, 'POST', '/dicom-web/servers/gw-pacs/stow', { Resources: [orthancStudy] });
    expect(r.status, JSON.stringify(r.json)).to.equal(200);
    const stored = await t.gw.db.selectFrom('instances').select('sop_instance_uid').where('study_instance_uid', '=', study.studyInstanceUid).execute();
    expect(stored.map((x) => x.sop_instance_uid).sort()).to.deep.equal(study.instances.map((i) => i.sopInstanceUid).sort());
    expect((await t.api('GET', `/api/studies/${study.studyInstanceUid}`)).json['patientId']).to.equal('MRN-ORTHANC-1');
  });

  it('Orthanc, as a reader pool with a reader token, pulls the case study from the gateway (its DICOMweb plugin as the consumer)', async () => {
    const study = generateStudy(path.join(t.tmp.dir, 'pull'), { instances: 2, series: 2, rows: 16, columns: 16, modality: 'MR', patientId: 'MRN-ORTHANC-2' });
    const other = generateStudy(path.join(t.tmp.dir, 'other'), { instances: 1, series: 1, rows: 16, columns: 16, modality: 'MR', patientId: 'MRN-ORTHANC-3' });
    for (const s of [study, other]) {
      const { body, contentType } = multipartBody(files(s.instances.map((i) => i.path)));
      expect((await t.stow(body, contentType)).status).to.equal(200);
    }
    const { readerId } = await t.caseFor(study.studyInstanceUid);
    expect(readerId).to.equal('dr-b');
    const r = await orthanc(o, 'POST', '/dicom-web/servers/gw-reader/retrieve', { Resources: [{ Study: study.studyInstanceUid }] });
    expect(r.status, JSON.stringify(r.json)).to.equal(200);
    const found = await orthanc(o, 'POST', '/tools/find', { Level: 'Instance', Query: { StudyInstanceUID: study.studyInstanceUid } });
    expect((found.json as unknown[]).length).to.equal(study.instances.length);
    // The bytes Orthanc holds are the stored ones.
    for (const id of found.json as string[]) {
      const tags = (await orthanc(o, 'GET', `/instances/${id}/simplified-tags`)).json as { SOPInstanceUID: string };
      const file = await fetch(`${o.baseUrl}/instances/${id}/file`).then(async (x) => Buffer.from(await x.arrayBuffer()));
      const source = study.instances.find((i) => i.sopInstanceUid === tags.SOPInstanceUID)!;
      expect(file.equals(readFileSync(source.path))).to.equal(true);
    }
    // A study that is not the reader's case stays out of reach.
    await orthanc(o, 'POST', '/dicom-web/servers/gw-reader/retrieve', { Resources: [{ Study: other.studyInstanceUid }] });
    const none = await orthanc(o, 'POST', '/tools/find', { Level: 'Instance', Query: { StudyInstanceUID: other.studyInstanceUid } });
    expect(none.json).to.deep.equal([]);
  });
});
