import path from 'node:path';
import { expect } from 'chai';
import { generateStudy, type GeneratedStudy } from '../../scripts/lib/study-generator.js';
import { buildConfig } from '../../src/config/load.js';
import type { ReceivedInstance } from '../../src/dicom/instance-record.js';
import { createGateway, type Gateway } from '../../src/gateway.js';
import { storeFiles } from '../helpers/dicom-peers.js';
import { eventually } from '../helpers/eventually.js';
import { silentLogger } from '../helpers/hl7-peers.js';
import { PoolScp } from '../helpers/pool-scp.js';
import { makeTempDir, testDatabaseUrl } from '../helpers/tmp.js';

const admin = 'admin-token-0123456789abcdef';

/**
 * Found by scripts/chaos.ts: late instances that the outbox adds to a delivery while that delivery is being
 * sent are not in the list the attempt read; the delivery used to close as delivered with them still pending,
 * and nothing looked at it again.
 */
describe('a late instance that arrives while its delivery is being sent', function () {
  this.timeout(60_000);
  let tmp: ReturnType<typeof makeTempDir>;
  let pool: PoolScp | undefined;
  let gw: Gateway | undefined;

  beforeEach(() => {
    tmp = makeTempDir();
  });
  afterEach(async () => {
    await gw?.stop();
    await pool?.close();
    gw = undefined;
    pool = undefined;
    tmp.cleanup();
  });

  async function push(g: Gateway, study: GeneratedStudy): Promise<void> {
    const stable = new Promise<void>((resolve) => g.studies.subscribe({ onStable: (uid) => (uid === study.studyInstanceUid ? resolve() : undefined) }));
    const r = await storeFiles(
      { host: '127.0.0.1', port: g.ports().dicom, callingAe: 'PACS1', calledAe: 'SECONDREAD' },
      study.instances.map((i) => i.path),
    );
    expect(r.statuses.every((s) => s === 0)).to.equal(true);
    await stable;
  }

  it('is sent right after the attempt under way, not left pending when the delivery closes', async () => {
    pool = new PoolScp(path.join(tmp.dir, 'pool'));
    await pool.start();
    // The pool holds the first C-STORE until told: the delivery stays in flight while the late instance comes.
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let held = 0;
    const store = pool.storeInstance.bind(pool);
    pool.storeInstance = async (i: ReceivedInstance) => {
      held++;
      await gate;
      return store(i);
    };
    gw = createGateway(
      buildConfig({
        dicom: { port: 0, stableAfterSeconds: 0.2 },
        hl7: { port: 0 },
        http: { port: 0 },
        storage: { dir: path.join(tmp.dir, 'data'), minFreeMb: 0 },
        database: { url: testDatabaseUrl(path.join(tmp.dir, 'gw.db')) },
        destinations: [{ id: 'pool', type: 'dimse', host: '127.0.0.1', port: pool.port, aeTitle: 'POOL' }],
        forwarding: { pollIntervalSeconds: 0.1, backoffBaseSeconds: 0.2, backoffMaxSeconds: 0.5 },
        auth: { tokens: [{ token: admin, role: 'admin', name: 'alice' }] },
      }),
      { logger: silentLogger },
    );
    await gw.start();
    const g = gw;
    const ids = { accessionNumber: 'ACCRACE1', patientId: 'MRNRACE1', rows: 32, columns: 32 };
    const study = generateStudy(path.join(tmp.dir, 'first'), { instances: 2, series: 1, ...ids });
    await push(g, study);
    const res = await fetch(`http://127.0.0.1:${g.ports().http}/api/cases`, {
      method: 'POST',
      headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
      body: JSON.stringify({ studyInstanceUid: study.studyInstanceUid, reason: 'race test', destinationId: 'pool' }),
    });
    expect(res.status).to.equal(201);
    const caseId = ((await res.json()) as { id: string }).id;
    await eventually(() => held > 0, 'the delivery to be in flight at the pool');

    const late = generateStudy(path.join(tmp.dir, 'late'), { instances: 1, series: 1, studyInstanceUid: study.studyInstanceUid, ...ids });
    await push(g, late);
    const delivery = await eventually(async () => {
      const d = await g.db.selectFrom('deliveries').select(['id', 'instances_total']).where('case_id', '=', caseId).executeTakeFirst();
      return d && d.instances_total === 3 ? d : undefined;
    }, 'the late instance to be added to the delivery in flight');
    release();

    await eventually(async () => {
      const rows = await g.db.selectFrom('delivery_instances').select('state').where('delivery_id', '=', delivery.id).execute();
      const d = await g.db.selectFrom('deliveries').select('state').where('id', '=', delivery.id).executeTakeFirst();
      return d?.state === 'delivered' && rows.every((r) => r.state === 'sent') ? true : undefined;
    }, 'the delivery delivered with every instance sent');
    const atPool = new Set(pool.stores.map((s) => s.sopInstanceUid));
    expect([...study.instances, ...late.instances].every((i) => atPool.has(i.sopInstanceUid))).to.equal(true);
  });
});
