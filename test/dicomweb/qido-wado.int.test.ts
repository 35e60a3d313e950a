import { readFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { api } from 'dicomweb-client';
import XMLHttpRequest from 'xhr2';
import { generateStudy, type GeneratedStudy } from '../../scripts/lib/study-generator.js';
import { writePhiStudy } from '../helpers/phi-study.js';
import { DicomwebGateway, DW_TOKENS, files, multipartBody, parseMultipart } from './dicomweb-fixture.js';

type Ds = Record<string, { vr: string; Value?: unknown[] }>;
const v = (ds: Ds, tag: string): unknown => {
  const x = ds[tag]?.Value?.[0];
  return x && typeof x === 'object' ? (x as { Alphabetic?: string }).Alphabetic : x;
};

/** dicomweb-client as a reader's viewer would use it (it needs an XMLHttpRequest in Node). */
interface Client {
  searchForStudies(o?: { queryParams?: Record<string, string> }): Promise<Ds[]>;
  searchForSeries(o: { studyInstanceUID: string }): Promise<Ds[]>;
  searchForInstances(o: { studyInstanceUID: string; seriesInstanceUID?: string }): Promise<Ds[]>;
  retrieveStudy(o: { studyInstanceUID: string }): Promise<ArrayBuffer[]>;
  retrieveStudyMetadata(o: { studyInstanceUID: string }): Promise<Ds[]>;
}
function client(t: DicomwebGateway, token: string): Client {
  (globalThis as { XMLHttpRequest?: unknown }).XMLHttpRequest = XMLHttpRequest;
  return new api.DICOMwebClient({ url: t.dicomweb, headers: { Authorization: `Bearer ${token}` }, verbose: false } as never) as unknown as Client;
}
async function status(p: Promise<unknown>): Promise<number> {
  try {
    await p;
    return 200;
  } catch (err) {
    return Number((err as { status?: number }).status ?? -1);
  }
}

describe('DICOMweb QIDO-RS and WADO-RS (int)', function () {
  this.timeout(90_000);
  let t: DicomwebGateway;
  let mr: GeneratedStudy;
  let ct: GeneratedStudy;

  async function stowStudy(s: { instances: { path: string }[] }): Promise<void> {
    const { body, contentType } = multipartBody(files(s.instances.map((i) => i.path)));
    const r = await t.stow(body, contentType);
    expect(r.status).to.equal(200);
  }

  before(async () => {
    t = new DicomwebGateway();
    await t.start();
    mr = generateStudy(path.join(t.tmp.dir, 'mr'), {
      instances: 3,
      series: 2,
      rows: 16,
      columns: 16,
      modality: 'MR',
      patientName: 'DOE^JOHN',
      patientId: 'MRN-QIDO-1',
      accessionNumber: 'ACC-QIDO-1',
      studyDate: '20240105',
    });
    ct = generateStudy(path.join(t.tmp.dir, 'ct'), {
      instances: 2,
      series: 1,
      rows: 16,
      columns: 16,
      modality: 'CT',
      patientName: 'ROE^ANN',
      patientId: 'MRN-QIDO-2',
      accessionNumber: 'ACC-QIDO-2',
      studyDate: '20230101',
    });
    await stowStudy(mr);
    await stowStudy(ct);
  });
  after(async () => {
    await t.stop();
  });

  it('answers an admin search with the usual match keys, includefield, limit and offset', async () => {
    const c = client(t, DW_TOKENS.admin);
    const uids = async (q: Record<string, string>) => (await c.searchForStudies({ queryParams: q })).map((d) => v(d, '0020000D'));
    expect(await uids({ PatientName: 'doe*' })).to.deep.equal([mr.studyInstanceUid]);
    expect(await uids({ PatientID: 'MRN-QIDO-2' })).to.deep.equal([ct.studyInstanceUid]);
    expect(await uids({ AccessionNumber: 'ACC-QIDO-1' })).to.deep.equal([mr.studyInstanceUid]);
    expect(await uids({ StudyDate: '20240101-20241231' })).to.deep.equal([mr.studyInstanceUid]);
    expect(await uids({ StudyDate: '-20231231' })).to.deep.equal([ct.studyInstanceUid]);
    expect(await uids({ ModalitiesInStudy: 'CT' })).to.deep.equal([ct.studyInstanceUid]);
    expect(await uids({ StudyInstanceUID: `${mr.studyInstanceUid},${ct.studyInstanceUid}` })).to.have.members([mr.studyInstanceUid, ct.studyInstanceUid]);
    expect(await uids({ limit: '1', offset: '1' })).to.deep.equal([ct.studyInstanceUid]);
    const [study] = await c.searchForStudies({ queryParams: { PatientID: 'MRN-QIDO-1', includefield: 'Manufacturer' } });
    expect(v(study!, '00201206')).to.equal(2);
    expect(v(study!, '00201208')).to.equal(3);
    expect(study!['00080061']?.Value).to.deep.equal(['MR']);
    expect(v(study!, '00080070')).to.equal('SYNTHETIC');
    expect(v(study!, '00100010')).to.equal('DOE^JOHN');
    const series = await c.searchForSeries({ studyInstanceUID: mr.studyInstanceUid });
    expect(series.map((d) => v(d, '0020000E'))).to.have.members(mr.seriesInstanceUids);
    const instances = await c.searchForInstances({ studyInstanceUID: mr.studyInstanceUid });
    expect(instances.map((d) => v(d, '00080018'))).to.have.members(mr.instances.map((i) => i.sopInstanceUid));
    // An admin retrieves the stored bytes as they are.
    const parts = await c.retrieveStudy({ studyInstanceUID: ct.studyInstanceUid });
    expect(parts.map((p) => Buffer.from(p).length).sort()).to.deep.equal(ct.instances.map((i) => readFileSync(i.path).length).sort());
  });

  it('shows a reader only the study of their own case, bytes as stored; 404 for any other', async () => {
    const { readerId } = await t.caseFor(mr.studyInstanceUid);
    expect(readerId).to.equal('dr-b');
    const b = client(t, DW_TOKENS.drB);
    expect((await b.searchForStudies()).map((d) => v(d, '0020000D'))).to.deep.equal([mr.studyInstanceUid]);
    expect((await b.searchForStudies({ queryParams: { PatientID: 'MRN-QIDO-2' } })).length).to.equal(0);
    const parts = await b.retrieveStudy({ studyInstanceUID: mr.studyInstanceUid });
    const stored = mr.instances.map((i) => readFileSync(i.path));
    expect(parts.length).to.equal(stored.length);
    for (const p of parts) expect(stored.some((s) => s.equals(Buffer.from(p)))).to.equal(true);
    const meta = await b.retrieveStudyMetadata({ studyInstanceUID: mr.studyInstanceUid });
    expect(meta.map((d) => v(d, '00080018'))).to.have.members(mr.instances.map((i) => i.sopInstanceUid));
    // Another study, existing or not: 404, never 403.
    expect(await status(b.retrieveStudy({ studyInstanceUID: ct.studyInstanceUid }))).to.equal(404);
    expect(await status(b.searchForSeries({ studyInstanceUID: ct.studyInstanceUid }))).to.equal(404);
    expect(await status(b.retrieveStudyMetadata({ studyInstanceUID: '1.2.3.4.5' }))).to.equal(404);
    expect(
      (
        await t.get(
          `/studies/${ct.studyInstanceUid}/series/${ct.seriesInstanceUids[0]}/instances/${ct.instances[0]!.sopInstanceUid}`,
          DW_TOKENS.drB,
          'multipart/related; type="application/dicom"',
        )
      ).status,
    ).to.equal(404);
    // A reader without a case sees nothing.
    const c = client(t, DW_TOKENS.drC);
    expect(await c.searchForStudies()).to.deep.equal([]);
    expect(await status(c.retrieveStudy({ studyInstanceUID: mr.studyInstanceUid }))).to.equal(404);
  });

  it('serves a de-identified case only de-identified, under the stored pseudonyms, without the instances forwarding excludes', async () => {
    const phi = writePhiStudy(path.join(t.tmp.dir, 'phi'));
    const { body, contentType } = multipartBody(files(phi.files.map((f) => f.path)));
    expect((await t.stow(body, contentType)).status).to.equal(200);
    const { caseId, readerId } = await t.caseFor(phi.studyInstanceUid);
    expect(readerId).to.equal('dr-a');
    const a = client(t, DW_TOKENS.drA);
    const studies = await a.searchForStudies();
    expect(studies).to.have.length(1);
    const viewUid = String(v(studies[0]!, '0020000D'));
    expect(viewUid).to.not.equal(phi.studyInstanceUid);
    // The reader's case view shows the same pseudonym (stored by forwarding when it prepared the delivery).
    const readerCase = await fetch(`${t.base}/api/cases/${caseId}`, { headers: { authorization: `Bearer ${DW_TOKENS.drA}` } }).then(
      (r) => r.json() as Promise<Record<string, unknown>>,
    );
    expect(readerCase['studyInstanceUid']).to.equal(viewUid);
    expect(v(studies[0]!, '00100020')).to.equal(readerCase['patientId']);
    const qidoText = JSON.stringify(studies);
    for (const secret of phi.secrets) expect(qidoText, secret).to.not.include(secret);
    // The real UID is not theirs to ask for.
    expect(await status(a.retrieveStudy({ studyInstanceUID: phi.studyInstanceUid }))).to.equal(404);
    const res = await t.get(`/studies/${viewUid}`, DW_TOKENS.drA, 'multipart/related; type="application/dicom"');
    expect(res.status).to.equal(200);
    const parts = parseMultipart(res.body, res.contentType);
    const risky = phi.files.filter((f) => f.risk !== null);
    expect(parts).to.have.length(phi.files.length - risky.length);
    const all = Buffer.concat(parts.map((p) => p.data)).toString('latin1');
    for (const secret of phi.secrets) expect(all, secret).to.not.include(secret);
    for (const f of phi.files) expect(all).to.not.include(f.sopInstanceUid);
    expect(all).to.not.include(phi.studyInstanceUid);
    const meta = await a.retrieveStudyMetadata({ studyInstanceUID: viewUid });
    expect(meta).to.have.length(parts.length);
    const metaText = JSON.stringify(meta);
    for (const secret of phi.secrets) expect(metaText, secret).to.not.include(secret);
    expect(meta.every((d) => v(d, '0020000D') === viewUid)).to.equal(true);
    // The excluded instances are listed on the case and not served under any UID.
    const adminCase = (await t.api('GET', `/api/cases/${caseId}`)).json;
    expect((adminCase['excludedInstances'] as unknown[]).length).to.equal(risky.length);
  });
});
