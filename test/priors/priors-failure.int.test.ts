/**
 * A hospital PACS that does not answer never holds a case back: the case is forwarded and read as without
 * priors, and the failed lookup is audited on it. Both transports, against a port nobody listens on.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { generateStudy } from '../../scripts/lib/study-generator.js';
import { hasDcmtk, runDcmtk } from '../helpers/dicom-peers.js';
import { DicomGateway, Storescp, freePort } from '../helpers/dicom-gateway.js';
import { eventually } from '../helpers/eventually.js';

for (const type of ['dimse', 'dicomweb'] as const) {
  describe(`priors: the hospital PACS is down (${type})`, function () {
    this.timeout(60_000);
    let gw: DicomGateway | undefined;
    let pool: Storescp | undefined;

    before(async function () {
      if (!hasDcmtk()) {
        console.log('      skipped: DCMTK (storescu, storescp) not installed');
        this.skip();
      }
      const dead = await freePort();
      const poolPort = await freePort();
      gw = new DicomGateway({
        rules: [],
        destinations: [{ id: 'pool', type: 'dimse', host: '127.0.0.1', port: poolPort, aeTitle: 'STORESCP', deidentify: false }],
        pacs:
          type === 'dimse'
            ? { type, host: '127.0.0.1', port: dead, aeTitle: 'PACS', timeoutSeconds: 5 }
            : { type, url: `http://127.0.0.1:${dead}/dicom-web`, timeoutSeconds: 5 },
      });
      await gw.start();
      pool = new Storescp(path.join(gw.tmp.dir, 'pool'));
      mkdirSync(pool.dir);
      await pool.start(poolPort);
    });
    after(async () => {
      pool?.stop();
      await gw?.stop();
    });

    it('the case is forwarded and awaits its read; the failed lookup is audited on the case', async () => {
      const g = gw!;
      const study = generateStudy(path.join(g.tmp.dir, 'study'), { instances: 2, rows: 8, columns: 8 });
      const r = await runDcmtk('storescu', ['-aet', 'MODALITY', '-aec', 'SECONDREAD', '127.0.0.1', String(g.dicomPort), ...study.instances.map((i) => i.path)]);
      expect(r.code, r.stderr).to.equal(0);
      await eventually(async () => (await g.call('GET', `/api/studies/${study.studyInstanceUid}`)).body?.state === 'stable', 'stable');
      const opened = await g.call('POST', '/api/cases', { studyInstanceUid: study.studyInstanceUid, reason: 'pacs down' });
      expect(opened.status).to.equal(201);
      const c = await eventually(
        async () => {
          const x = await g.call('GET', `/api/cases/${opened.body.id}`);
          return x.body.state === 'awaiting-read' ? x.body : undefined;
        },
        'awaiting read',
        30_000,
      );
      expect(c.priors).to.deep.equal([]);
      expect(pool!.files()).to.have.length(2);
      const audit = await eventually(
        async () => {
          const a = await g.call('GET', `/api/audit?entityId=${opened.body.id}`);
          return (a.body.items as { action: string; details: { error?: string } }[]).find((x) => x.action === 'priors.query-failed');
        },
        'lookup failure audited',
        30_000,
      );
      expect(audit.details.error).to.be.a('string').and.not.equal('');
    });
  });
}
