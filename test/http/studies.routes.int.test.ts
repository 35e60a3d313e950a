import path from 'node:path';
import { expect } from 'chai';
import winston from 'winston';
import { generateStudy } from '../../scripts/lib/study-generator.js';
import { buildConfig } from '../../src/config/load.js';
import { createGateway, type Gateway } from '../../src/gateway.js';
import { storeFiles } from '../helpers/dicom-peers.js';
import { makeTempDir, testDatabaseUrl } from '../helpers/tmp.js';

const tokens = {
  admin: 'admin-token-0123456789abcdef',
  qa: 'qa-token-0123456789abcdef',
  reader: 'reader-token-0123456789abcdef',
  system: 'system-token-0123456789abcdef',
};

describe('studies API (whole gateway in-process)', function () {
  this.timeout(30_000);
  let tmp: ReturnType<typeof makeTempDir>;
  let gw: Gateway;
  let base: string;
  const get = (p: string, token?: string) => fetch(`${base}${p}`, token ? { headers: { authorization: `Bearer ${token}` } } : {});

  before(async () => {
    tmp = makeTempDir();
    const config = buildConfig({
      dicom: { port: 0, stableAfterSeconds: 0.3, allowedCallers: ['PACS1'] },
      hl7: { port: 0 },
      http: { port: 0 },
      storage: { dir: path.join(tmp.dir, 'data'), minFreeMb: 0 },
      database: { url: testDatabaseUrl(path.join(tmp.dir, 'gw.db')) },
      auth: {
        tokens: [
          { token: tokens.admin, role: 'admin' },
          { token: tokens.qa, role: 'qa' },
          { token: tokens.reader, role: 'reader', readerId: 'dr-a' },
          { token: tokens.system, role: 'system' },
        ],
      },
    });
    gw = createGateway(config, { logger: winston.createLogger({ silent: true }) });
    await gw.start();
    base = `http://127.0.0.1:${gw.ports().http}`;
  });
  after(async () => {
    await gw.stop();
    tmp.cleanup();
  });

  it('GET /healthz needs no token', async () => {
    const r = await get('/healthz');
    expect(r.status).to.equal(200);
    expect(await r.json()).to.include({ status: 'ok' });
  });

  it('answers 401 without a token, 403 for a reader, 200 for admin, qa and system', async () => {
    expect((await get('/api/studies')).status).to.equal(401);
    const forbidden = await get('/api/studies', tokens.reader);
    expect(forbidden.status).to.equal(403);
    expect(((await forbidden.json()) as { error: { code: string } }).error.code).to.equal('forbidden');
    for (const t of [tokens.admin, tokens.qa, tokens.system]) expect((await get('/api/studies', t)).status).to.equal(200);
  });

  it('shows a pushed study as receiving, then stable, with its fields', async () => {
    const study = generateStudy(path.join(tmp.dir, 'study'), { instances: 6, series: 2, rows: 64, columns: 64, accessionNumber: 'ACC-77', modality: 'MR' });
    const stable = new Promise<string>((resolve) => gw.studies.subscribe({ onStable: resolve }));
    const r = await storeFiles(
      { host: '127.0.0.1', port: gw.ports().dicom, callingAe: 'PACS1', calledAe: 'SECONDREAD' },
      study.instances.map((i) => i.path),
    );
    expect(r.statuses).to.deep.equal([0, 0, 0, 0, 0, 0]);

    const receiving = (await (await get(`/api/studies/${study.studyInstanceUid}`, tokens.qa)).json()) as Record<string, unknown>;
    expect(receiving).to.include({ studyInstanceUid: study.studyInstanceUid, accessionNumber: 'ACC-77', patientId: study.patientId, instanceCount: 6 });
    expect(receiving['modalities']).to.deep.equal(['MR']);
    expect(await stable).to.equal(study.studyInstanceUid);
    const after = (await (await get(`/api/studies/${study.studyInstanceUid}`, tokens.qa)).json()) as Record<string, unknown>;
    expect(after['state']).to.equal('stable');
    expect(after['stableAt']).to.be.a('string');

    const byAccession = (await (await get('/api/studies?accessionNumber=ACC-77&state=stable', tokens.admin)).json()) as {
      items: { studyInstanceUid: string }[];
    };
    expect(byAccession.items.map((s) => s.studyInstanceUid)).to.deep.equal([study.studyInstanceUid]);
    const none = (await (await get('/api/studies?accessionNumber=OTHER', tokens.admin)).json()) as { items: unknown[] };
    expect(none.items).to.deep.equal([]);
  });

  it('answers 404 for an unknown study and 400 for a bad filter', async () => {
    expect((await get('/api/studies/1.2.3.4', tokens.admin)).status).to.equal(404);
    const bad = await get('/api/studies?state=bogus', tokens.admin);
    expect(bad.status).to.equal(400);
    expect(((await bad.json()) as { error: { message: string } }).error.message).to.match(/state must be one of/);
    expect((await get('/api/studies?limit=0', tokens.admin)).status).to.equal(400);
    expect((await get('/api/nothing-here', tokens.admin)).status).to.equal(404);
  });
});
