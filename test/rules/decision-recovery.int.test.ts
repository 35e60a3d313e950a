import path from 'node:path';
import { expect } from 'chai';
import { generateStudy } from '../../scripts/lib/study-generator.js';
import { buildConfig } from '../../src/config/load.js';
import { createGateway, type Gateway } from '../../src/gateway.js';
import { storeFiles } from '../helpers/dicom-peers.js';
import { RawMllpPeer, silentLogger } from '../helpers/hl7-peers.js';
import { oruR01 } from '../helpers/hl7-samples.js';
import { makeTempDir, testDatabaseUrl } from '../helpers/tmp.js';

/**
 * The rules run on in-memory events fired after their trigger commits (study stable, HL7 linked). A crash
 * between that commit and the evaluation's commit must not lose the evaluation: found by scripts/chaos.ts,
 * where a flagged study killed at that moment never got its case.
 */
describe('rule evaluations lost to a crash are caught up at start-up', function () {
  this.timeout(60_000);
  let tmp: ReturnType<typeof makeTempDir>;
  const running: Gateway[] = [];

  beforeEach(() => {
    tmp = makeTempDir();
  });
  afterEach(async () => {
    for (const g of running.splice(0)) await g.stop().catch(() => undefined);
    tmp.cleanup();
  });

  const config = () =>
    buildConfig({
      // Nothing becomes stable by itself during the test: the "crash" is played by marking the row directly.
      dicom: { port: 0, stableAfterSeconds: 3600 },
      hl7: { port: 0 },
      http: { port: 0 },
      storage: { dir: path.join(tmp.dir, 'data'), minFreeMb: 0 },
      database: { url: testDatabaseUrl(path.join(tmp.dir, 'gw.db')) },
      sampling: { secret: 'a-test-sampling-secret-000' },
    });
  const start = async () => {
    const g = createGateway(config(), { logger: silentLogger });
    await g.start();
    running.push(g);
    return g;
  };

  it('a study that became stable (committed) just before a crash, with its final oncology report linked, gets its case after the restart, once', async () => {
    let gw = await start();
    const study = generateStudy(path.join(tmp.dir, 'study'), { instances: 2, series: 1, rows: 32, columns: 32, accessionNumber: 'ACCREC1', patientId: 'MRNREC1' });
    const r = await storeFiles({ host: '127.0.0.1', port: gw.ports().dicom, callingAe: 'PACS1', calledAe: 'SECONDREAD' }, study.instances.map((i) => i.path));
    expect(r.statuses).to.deep.equal([0, 0]);
    const peer = await RawMllpPeer.connect(gw.ports().hl7);
    const ack = await peer.send(oruR01({ controlId: 'RECORU1', accession: 'ACCREC1', patientId: 'MRNREC1' }));
    expect(ack.code, ack.text).to.equal('AA');
    peer.end();
    await gw.decisions.idle();
    // The sweep's commit without the evaluation that should have followed it (the process died in between).
    const now = new Date().toISOString();
    await gw.db.updateTable('studies').set({ state: 'stable', stable_at: now, updated_at: now }).where('study_instance_uid', '=', study.studyInstanceUid).execute();
    expect(await gw.db.selectFrom('cases').selectAll().execute()).to.have.length(0);
    await gw.stop();
    running.length = 0;

    gw = await start();
    const cases = await gw.db.selectFrom('cases').select(['study_instance_uid', 'state']).execute();
    expect(cases).to.deep.equal([{ study_instance_uid: study.studyInstanceUid, state: 'flagged' }]);
    const decisions = await gw.db.selectFrom('decisions').select('id').execute();
    await gw.stop();
    running.length = 0;

    // Looking again after another restart changes nothing: the decision is newer than every input.
    gw = await start();
    expect(await gw.db.selectFrom('cases').select('id').execute()).to.have.length(1);
    expect(await gw.db.selectFrom('decisions').select('id').execute()).to.have.length(decisions.length);
  });
});
