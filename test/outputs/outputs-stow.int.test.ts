import path from 'node:path';
import { expect } from 'chai';
import { generateStudy } from '../../scripts/lib/study-generator.js';
import { buildConfig } from '../../src/config/load.js';
import { createGateway, type Gateway } from '../../src/gateway.js';
import { storeFiles } from '../helpers/dicom-peers.js';
import { eventually } from '../helpers/eventually.js';
import { RawMllpPeer, silentLogger } from '../helpers/hl7-peers.js';
import { oruR01, ormO01 } from '../helpers/hl7-samples.js';
import { startStowServer, type StowServer } from '../helpers/stow-server.js';
import { TestRis } from '../helpers/test-ris.js';
import { makeTempDir, testDatabaseUrl } from '../helpers/tmp.js';
import { dciodvfy, hasDciodvfy, writeTemp } from './dicom-tools.js';

const admin = 'admin-token-0123456789abcdef';
const system = 'system-token-0123456789abcdef';
const BASIC_TEXT_SR = '1.2.840.10008.5.1.4.1.1.88.11';
const KOS = '1.2.840.10008.5.1.4.1.1.88.59';

describe('outputs of the second read to a DICOMweb PACS (STOW-RS)', function () {
  this.timeout(120_000);
  let tmp: ReturnType<typeof makeTempDir>;
  let pool: StowServer;
  let pacs: StowServer;
  let ris: TestRis;
  let gw: Gateway;
  let hl7: RawMllpPeer;

  const call = async (method: string, p: string, token: string, body?: unknown): Promise<{ status: number; body: Record<string, unknown> }> => {
    const res = await fetch(`http://127.0.0.1:${gw.ports().http}${p}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };
  const api = async (p: string) => (await call('GET', p, admin).catch(() => call('GET', p, admin))).body;
  const audit = async (caseId: string, action: string) =>
    ((await api(`/api/audit?entityType=case&entityId=${caseId}&action=${action}`))['items'] ?? []) as { details: Record<string, unknown> }[];

  async function openCase(n: number) {
    const patientId = `MRN-STOW-${n}`;
    const accession = `ACC-STOW-${n}`;
    const study = generateStudy(path.join(tmp.dir, `s${n}`), { instances: 2, series: 1, rows: 32, columns: 32, accessionNumber: accession, patientId });
    const stable = new Promise<void>((resolve) => gw.studies.subscribe({ onStable: (uid) => (uid === study.studyInstanceUid ? resolve() : undefined) }));
    await storeFiles(
      { host: '127.0.0.1', port: gw.ports().dicom, callingAe: 'MODALITY', calledAe: 'SECONDREAD' },
      study.instances.map((i) => i.path),
    );
    await stable;
    for (const m of [ormO01({ accession, patientId, controlId: `O${n}` }), oruR01({ accession, patientId, controlId: `R${n}` })]) {
      expect((await hl7.send(m)).code).to.equal('AA');
    }
    const caseId = await eventually(async () => ((await api(`/api/studies/${study.studyInstanceUid}`))['caseId'] as string | null) ?? undefined, 'the case');
    await eventually(async () => (await api(`/api/cases/${caseId}`))['state'] === 'awaiting-read' || undefined, 'delivery to the pool', 30_000);
    return { study, caseId, patientId };
  }

  before(async () => {
    tmp = makeTempDir();
    pool = await startStowServer();
    pacs = await startStowServer();
    ris = new TestRis();
    await ris.start();
    gw = createGateway(
      buildConfig({
        dicom: { port: 0, stableAfterSeconds: 0.2 },
        hl7: { port: 0, ris: { host: '127.0.0.1', port: ris.port } },
        http: { port: 0 },
        storage: { dir: path.join(tmp.dir, 'data'), minFreeMb: 0 },
        database: { url: testDatabaseUrl(path.join(tmp.dir, 'gw.db')) },
        destinations: [{ id: 'pool', type: 'dicomweb', url: pool.url }],
        forwarding: { pollIntervalSeconds: 0.1 },
        writeBack: { pollIntervalSeconds: 0.1 },
        pacs: { type: 'dicomweb', url: pacs.url },
        // The PACS here is the outputs' target only: no prior lookups (QIDO) in its request log.
        priors: { maxStudies: 0 },
        outputs: { dicomSr: { destination: 'pacs' }, maxAttempts: 3, backoffBaseSeconds: 0.05, backoffMaxSeconds: 0.2 },
        auth: {
          tokens: [
            { token: admin, role: 'admin' },
            { token: system, role: 'system', name: 'pool-system' },
          ],
        },
      }),
      { logger: silentLogger },
    );
    await gw.start();
    hl7 = await RawMllpPeer.connect(gw.ports().hl7);
  });
  after(async () => {
    hl7?.socket.destroy();
    await gw?.stop();
    await ris?.stop();
    await pacs?.close();
    await pool?.close();
    tmp?.cleanup();
  });

  it('the SR and the KOS are stored with STOW-RS in the study, and nothing of them goes to the pool', async () => {
    const { study, caseId, patientId } = await openCase(1);
    const key = study.instances[1]!.sopInstanceUid;
    const posted = await call('POST', `/api/cases/${caseId}/report`, system, { text: 'Concur.', radpeerScore: '1', readerId: 'dr-x', keyImages: [key] });
    expect(posted.status, JSON.stringify(posted.body)).to.equal(201);
    const parts = await eventually(
      () => {
        const all = pacs.requests.flatMap((r) => r.parts);
        return all.length >= 2 && all;
      },
      'the SR and KOS at the PACS',
      30_000,
    );
    // The PACS also answers the priors lookup of each new case (QIDO-RS GETs, src/priors): the outputs are its POSTs.
    const stows = pacs.requests.filter((r) => r.method === 'POST');
    expect(stows.length).to.be.greaterThan(0);
    expect(stows.every((r) => r.type === 'application/dicom')).to.equal(true);
    const sr = parts.find((p) => p.body.includes(Buffer.from(BASIC_TEXT_SR)))!;
    const kos = parts.find((p) => p.body.includes(Buffer.from(KOS)))!;
    for (const p of [sr, kos]) {
      const raw = p.body.toString('latin1');
      expect(raw).to.include(patientId).and.include(study.studyInstanceUid);
      if (hasDciodvfy()) expect(dciodvfy(writeTemp(tmp.dir, `${p.sopInstanceUid}.dcm`, p.body)).errors).to.deep.equal([]);
    }
    expect(kos.body.toString('latin1')).to.include(key);
    await eventually(async () => (await audit(caseId, 'output.sent')).length === 2 || undefined, 'both outputs audited');
    const poolUids = pool.requests.flatMap((r) => r.parts.map((p) => p.sopInstanceUid));
    expect(poolUids).to.not.include(sr.sopInstanceUid).and.not.include(kos.sopInstanceUid);
  });

  it('a PACS that refuses the SR (4xx): dead at once, audited; one that is down (503): retried until the attempts run out, audited', async () => {
    const refused = await openCase(2);
    pacs.behaviour = { kind: 'status', status: 400 };
    expect((await call('POST', `/api/cases/${refused.caseId}/report`, system, { text: 'Concur.', radpeerScore: '1', readerId: 'dr-x' })).status).to.equal(201);
    const failed = await eventually(async () => (await audit(refused.caseId, 'output.failed'))[0], 'the refused SR', 30_000);
    expect(failed.details).to.include({ output: 'dicom-sr', permanent: true, attempt: 1 });

    const down = await openCase(3);
    pacs.behaviour = { kind: 'status', status: 503 };
    const posts = () => pacs.requests.filter((r) => r.method === 'POST').length;
    const before = posts();
    expect((await call('POST', `/api/cases/${down.caseId}/report`, system, { text: 'Concur.', radpeerScore: '1', readerId: 'dr-x' })).status).to.equal(201);
    const last = await eventually(async () => (await audit(down.caseId, 'output.failed'))[0], 'the SR given up on', 30_000);
    expect(last.details).to.include({ output: 'dicom-sr', permanent: false, attempt: 3 });
    expect(posts() - before).to.equal(3);
    pacs.behaviour = { kind: 'store' };
  });
});
