import path from 'node:path';
import { expect } from 'chai';
import { generateStudy, type GeneratedStudy } from '../../scripts/lib/study-generator.js';
import { buildConfig } from '../../src/config/load.js';
import { PseudonymKind, resolvePseudonym } from '../../src/forwarding/pseudonym.service.js';
import { createGateway, type Gateway } from '../../src/gateway.js';
import { storeFiles } from '../helpers/dicom-peers.js';
import { eventually } from '../helpers/eventually.js';
import { silentLogger } from '../helpers/hl7-peers.js';
import { orthancUnavailable, startOrthanc, type OrthancPeer } from '../helpers/orthanc.js';
import { makeTempDir, testDatabaseUrl } from '../helpers/tmp.js';

/**
 * The whole gateway (our SCP in, the outbox worker out) forwarding to a real
 * Orthanc: STOW-RS to its DICOMweb plugin with de-identification, and C-STORE
 * to its DICOM port as stored. What Orthanc then answers over QIDO-RS / WADO-RS
 * metadata is the evidence, not what our sender believed it sent.
 */

const admin = 'admin-token-0123456789abcdef';

type DicomJson = Record<string, { vr?: string; Value?: unknown[] } | undefined>;

interface CaseBody {
  id: string;
  state: string;
  deliveries: { destinationId: string; state: string; lastError: string | null; instancesTotal: number; instancesSent: number; deidentified: boolean }[];
}

describe('forwarding from the whole gateway to a real Orthanc', function () {
  this.timeout(120_000);
  let orthanc: OrthancPeer | undefined;
  let tmp: ReturnType<typeof makeTempDir> | undefined;
  let gw: Gateway | undefined;
  let base: string;

  const call = async (method: string, p: string, body?: unknown) => {
    const res = await fetch(`${base}${p}`, {
      method,
      headers: { authorization: `Bearer ${admin}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: (res.headers.get('content-type')?.includes('json') ? JSON.parse(text) : text) as Record<string, unknown> };
  };

  /** GET on Orthanc (DICOMweb or REST); 204 (no match) reads as an empty list. */
  const orthancGet = async <T>(url: string): Promise<T> => {
    const res = await fetch(url, { headers: { accept: 'application/dicom+json, application/json' } });
    if (res.status === 204) return [] as T;
    expect(res.status, `${url}: ${res.status}`).to.equal(200);
    const text = await res.text();
    return (text.trim() === '' ? [] : JSON.parse(text)) as T;
  };
  const value = (ds: DicomJson | undefined, tag: string): unknown => ds?.[tag]?.Value?.[0];

  async function push(study: GeneratedStudy): Promise<void> {
    const g = gw!;
    const stable = new Promise<void>((resolve) => g.studies.subscribe({ onStable: (uid) => (uid === study.studyInstanceUid ? resolve() : undefined) }));
    const r = await storeFiles(
      { host: '127.0.0.1', port: g.ports().dicom, callingAe: 'PACS1', calledAe: 'SECONDREAD' },
      study.instances.map((i) => i.path),
    );
    expect(
      r.statuses.every((s) => s === 0),
      `C-STORE statuses ${JSON.stringify(r)}`,
    ).to.equal(true);
    await stable;
  }

  /** Requests a second read to the destination and waits until the case is awaiting-read (fails fast on failed/held). */
  async function forward(study: GeneratedStudy, destinationId: string): Promise<CaseBody> {
    const r = await call('POST', '/api/cases', { studyInstanceUid: study.studyInstanceUid, reason: 'Orthanc interop test', destinationId });
    expect(r.status, JSON.stringify(r.body)).to.equal(201);
    const id = (r.body as unknown as CaseBody).id;
    return eventually(
      async () => {
        const c = (await call('GET', `/api/cases/${id}`)).body as unknown as CaseBody;
        if (c.state === 'failed' || c.state === 'held') throw new Error(`case ${c.state}: ${JSON.stringify(c.deliveries)}`);
        return c.state === 'awaiting-read' ? c : undefined;
      },
      `case ${id} to reach awaiting-read at ${destinationId}`,
      60_000,
    );
  }

  /** Every SOPInstanceUID Orthanc lists for the study, series by series (QIDO-RS). */
  async function listedInstances(studyUid: string): Promise<string[]> {
    const o = orthanc!;
    const series = await orthancGet<DicomJson[]>(`${o.dicomwebUrl}/studies/${studyUid}/series`);
    const out: string[] = [];
    for (const s of series) {
      const seriesUid = value(s, '0020000E') as string;
      const inst = await orthancGet<DicomJson[]>(`${o.dicomwebUrl}/studies/${studyUid}/series/${seriesUid}/instances`);
      out.push(...inst.map((i) => value(i, '00080018') as string));
    }
    return out;
  }

  before(async function () {
    const why = orthancUnavailable();
    if (why) {
      console.log(`      skipped: ${why}`);
      this.skip();
    }
    orthanc = await startOrthanc();
    tmp = makeTempDir('gw-orthanc-fwd-');
    const destinations: object[] = [{ id: 'orthanc-web', type: 'dicomweb', url: orthanc.dicomwebUrl, deidentify: true, timeoutSeconds: 30, batchSize: 4 }];
    if (orthanc.dicom) {
      destinations.push({
        id: 'orthanc-dimse',
        type: 'dimse',
        host: orthanc.dicom.host,
        port: orthanc.dicom.port,
        aeTitle: orthanc.dicom.aeTitle,
        timeoutSeconds: 30,
      });
    }
    gw = createGateway(
      buildConfig({
        dicom: { port: 0, stableAfterSeconds: 0.2 },
        hl7: { port: 0 },
        http: { port: 0 },
        storage: { dir: path.join(tmp.dir, 'data'), minFreeMb: 0 },
        database: { url: testDatabaseUrl(path.join(tmp.dir, 'gw.db')) },
        destinations,
        forwarding: { pollIntervalSeconds: 0.1, backoffBaseSeconds: 0.2, backoffMaxSeconds: 1, maxAttempts: 20 },
        auth: { tokens: [{ token: admin, role: 'admin', name: 'alice' }] },
      }),
      { logger: silentLogger },
    );
    await gw.start();
    base = `http://127.0.0.1:${gw.ports().http}`;
  });
  after(async () => {
    await gw?.stop();
    await orthanc?.stop();
    tmp?.cleanup();
  });

  it('STOW-RS with de-identification: every instance under the stored pseudonymous UIDs, no original identifier anywhere', async () => {
    const o = orthanc!;
    const g = gw!;
    const secret = { patientName: 'QUIXOTE^ZEBEDIAH', patientId: 'MRN-ORTH-774411', accessionNumber: 'ACC-ORTH-998877' };
    const s = generateStudy(path.join(tmp!.dir, 'web'), { instances: 10, series: 2, rows: 32, columns: 32, ...secret });
    await push(s);
    const c = await forward(s, 'orthanc-web');
    expect(c.deliveries[0]).to.deep.include({ destinationId: 'orthanc-web', state: 'delivered', instancesTotal: 10, instancesSent: 10, deidentified: true });

    // The pseudonyms the gateway stored before sending, and the way back from what the reader will quote.
    const rows = await g.db
      .selectFrom('pseudonyms')
      .selectAll()
      .where('destination_id', '=', 'orthanc-web')
      .where('study_instance_uid', '=', s.studyInstanceUid)
      .execute();
    const pseudo = new Map(rows.filter((r) => r.kind === PseudonymKind.uid).map((r) => [r.original, r.pseudonym]));
    const pseudoStudyUid = pseudo.get(s.studyInstanceUid);
    expect(pseudoStudyUid, 'a stored pseudonym for the StudyInstanceUID').to.be.a('string');
    expect(pseudoStudyUid).to.not.equal(s.studyInstanceUid);
    const back = await resolvePseudonym(g.db, 'orthanc-web', PseudonymKind.uid, pseudoStudyUid!);
    expect(back).to.deep.equal({ studyInstanceUid: s.studyInstanceUid, original: s.studyInstanceUid });
    const expectedSops = s.instances.map((i) => pseudo.get(i.sopInstanceUid));
    expect(
      expectedSops.every((u) => typeof u === 'string' && u !== ''),
      'a stored pseudonym for every SOPInstanceUID',
    ).to.equal(true);

    // QIDO-RS: the study is there under its pseudonym only, with every instance.
    const studies = await orthancGet<DicomJson[]>(`${o.dicomwebUrl}/studies?StudyInstanceUID=${pseudoStudyUid}`);
    expect(studies).to.have.length(1);
    expect(await orthancGet<DicomJson[]>(`${o.dicomwebUrl}/studies?StudyInstanceUID=${s.studyInstanceUid}`)).to.have.length(0);
    expect(await orthancGet<DicomJson[]>(`${o.dicomwebUrl}/studies?PatientID=${secret.patientId}`)).to.have.length(0);
    expect(await orthancGet<DicomJson[]>(`${o.dicomwebUrl}/studies?AccessionNumber=${secret.accessionNumber}`)).to.have.length(0);
    const listed = await listedInstances(pseudoStudyUid!);
    expect(listed.sort()).to.deep.equal([...expectedSops].sort());

    // WADO-RS metadata of the whole study: none of the originals, in any attribute, and the de-identification declared.
    const metadataText = await (await fetch(`${o.dicomwebUrl}/studies/${pseudoStudyUid}/metadata`, { headers: { accept: 'application/dicom+json' } })).text();
    const metadata = JSON.parse(metadataText) as DicomJson[];
    expect(metadata).to.have.length(10);
    const originals = [
      secret.patientName,
      ...secret.patientName.split('^'),
      secret.patientId,
      secret.accessionNumber,
      s.studyInstanceUid,
      ...s.seriesInstanceUids,
      ...s.instances.map((i) => i.sopInstanceUid),
    ];
    for (const x of originals) expect(metadataText, `Orthanc's metadata contains the original "${x}"`).to.not.include(x);
    for (const m of metadata) {
      expect(value(m, '00120062'), 'PatientIdentityRemoved').to.equal('YES');
      expect(value(m, '0020000D')).to.equal(pseudoStudyUid);
      expect(value(m, '00100020')).to.not.equal(secret.patientId);
    }
    // Orthanc's own index (its REST API) saw no original either: patients, studies and their main tags.
    const restText = JSON.stringify([await orthancGet(`${o.baseUrl}/patients?expand`), await orthancGet(`${o.baseUrl}/studies?expand`)]);
    for (const x of [secret.patientId, secret.accessionNumber, s.studyInstanceUid, ...secret.patientName.split('^')]) {
      expect(restText, `Orthanc's index contains the original "${x}"`).to.not.include(x);
    }
  });

  it("C-STORE to Orthanc's DICOM port as stored: original UIDs, every instance", async function () {
    const o = orthanc!;
    if (!o.dicom) {
      console.log(
        "      skipped: Orthanc's DICOM port is only enabled when it runs in its own network namespace (unshare -n, needs root): " +
          'Orthanc 1.10.1 has no bind-address option and would otherwise listen on every interface',
      );
      this.skip();
    }
    const s = generateStudy(path.join(tmp!.dir, 'dimse'), {
      instances: 12,
      series: 3,
      rows: 32,
      columns: 32,
      patientId: 'MRN-ORTH-DIMSE-1',
      accessionNumber: 'ACC-ORTH-DIMSE-1',
    });
    await push(s);
    const c = await forward(s, 'orthanc-dimse');
    expect(c.deliveries[0]).to.deep.include({ destinationId: 'orthanc-dimse', state: 'delivered', instancesTotal: 12, instancesSent: 12, deidentified: false });

    const studies = await orthancGet<DicomJson[]>(`${o.dicomwebUrl}/studies?StudyInstanceUID=${s.studyInstanceUid}`);
    expect(studies).to.have.length(1);
    expect(value(studies[0], '00100020')).to.equal('MRN-ORTH-DIMSE-1');
    expect(value(studies[0], '00080050')).to.equal('ACC-ORTH-DIMSE-1');
    const listed = await listedInstances(s.studyInstanceUid);
    expect(listed.sort()).to.deep.equal(s.instances.map((i) => i.sopInstanceUid).sort());
    const series = await orthancGet<DicomJson[]>(`${o.dicomwebUrl}/studies/${s.studyInstanceUid}/series`);
    expect(series.map((x) => value(x, '0020000E')).sort()).to.deep.equal([...s.seriesInstanceUids].sort());
    // Nothing went out under a pseudonym for this destination.
    const rows = await gw!.db.selectFrom('pseudonyms').select('pseudonym').where('destination_id', '=', 'orthanc-dimse').execute();
    expect(rows).to.have.length(0);
  });
});
