import path from 'node:path';
import { expect } from 'chai';
import { generateStudy } from '../../scripts/lib/study-generator.js';
import { buildConfig } from '../../src/config/load.js';
import { createGateway, type Gateway } from '../../src/gateway.js';
import { samplingCountersOfRadiologist } from '../../src/rules/rules.repository.js';
import { planningRate, wilsonInterval, wilsonSampleSize } from '../../src/rules/sampling.js';
import { storeFiles } from '../helpers/dicom-peers.js';
import { eventually } from '../helpers/eventually.js';
import { RawMllpPeer, silentLogger } from '../helpers/hl7-peers.js';
import { oruR01 } from '../helpers/hl7-samples.js';
import { PoolScp } from '../helpers/pool-scp.js';
import { gatewayInTempDir, makeTempDir } from '../helpers/tmp.js';

const QA = 'qa-token-precision-0123456789';
const SYSTEM = 'system-token-precision-012345';

interface Cell {
  ruleId: string;
  radiologist: string;
  modality: string;
  reviewed: number;
  discrepant: number;
  rate: number | null;
  ciLow: number | null;
  ciHigh: number | null;
  drawProbability: number;
  mode: string;
  needed: number | null;
}

/** The live path of precision sampling: draws, second reads coming back, the cell's estimate and the weights. */
describe('precision sampling in the running gateway: reviews feed the cells, the statistics weigh the draws', function () {
  this.timeout(90_000);
  let tmp: ReturnType<typeof makeTempDir>;
  let pool: PoolScp;
  let gw: Gateway;
  let base: string;
  let hl7: RawMllpPeer;
  const caseIds: string[] = [];

  const call = async (method: string, p: string, token: string, body?: unknown) => {
    const res = await fetch(`${base}${p}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, text, body: (res.headers.get('content-type')?.includes('json') ? JSON.parse(text) : {}) as Record<string, unknown> };
  };

  before(async () => {
    tmp = makeTempDir();
    pool = new PoolScp(path.join(tmp.dir, 'pool'));
    await pool.start();
    gw = createGateway(
      buildConfig({
        ...gatewayInTempDir(tmp.dir),
        destinations: [{ id: 'pool', type: 'dimse', host: '127.0.0.1', port: pool.port, aeTitle: 'POOL' }],
        forwarding: { pollIntervalSeconds: 0.1 },
        // Rate 1 in the cell's first period (no volume estimate yet): every CT of RAD7 is drawn.
        rules: [{ id: 'precise', kind: 'sampling', priority: 'routine', rate: 1, period: 'month', mode: 'precision', targetHalfWidth: 0.1, confidence: 0.9 }],
        sampling: { secret: 'precision-test-sampling-secret' },
        auth: {
          tokens: [
            { token: QA, role: 'qa', name: 'quinn-qa' },
            { token: SYSTEM, role: 'system', name: 'pool-system' },
          ],
        },
      }),
      { logger: silentLogger },
    );
    await gw.start();
    base = `http://127.0.0.1:${gw.ports().http}`;
    hl7 = await RawMllpPeer.connect(gw.ports().hl7);
    let control = 0;
    for (const acc of ['PS1', 'PS2', 'PS3']) {
      const study = generateStudy(path.join(tmp.dir, acc), {
        instances: 1,
        series: 1,
        rows: 16,
        columns: 16,
        accessionNumber: acc,
        patientId: `MRN-${acc}`,
        modality: 'CT',
      });
      const stable = new Promise<void>((resolve) => gw.studies.subscribe({ onStable: (uid) => (uid === study.studyInstanceUid ? resolve() : undefined) }));
      const r = await storeFiles(
        { host: '127.0.0.1', port: gw.ports().dicom, callingAe: 'PACS1', calledAe: 'SECONDREAD' },
        study.instances.map((i) => i.path),
      );
      expect(r.statuses).to.deep.equal([0]);
      await stable;
      const ack = await hl7.send(
        oruR01(
          { accession: acc, patientId: `MRN-${acc}`, controlId: `P${++control}` },
          { status: 'F', radiologist: 'RAD7', lines: ['IMPRESSION: No acute abnormality.'] },
        ),
      );
      expect(ack.code, ack.text).to.equal('AA');
      const row = await eventually(
        async () =>
          gw.db
            .selectFrom('cases')
            .select(['id', 'state'])
            .where('study_instance_uid', '=', study.studyInstanceUid)
            .where('state', '=', 'awaiting-read')
            .executeTakeFirst(),
        `case of ${acc} awaiting read`,
      );
      caseIds.push(row.id);
    }
  });
  after(async () => {
    hl7?.socket.destroy();
    await gw?.stop();
    await pool?.stop();
    tmp?.cleanup();
  });

  it("second reads of drawn studies come back as the cell's reviews; the cell shows its Wilson interval and the planned sample", async () => {
    const scores = ['2a', '1', '1'];
    for (const [i, id] of caseIds.entries()) {
      const r = await call('POST', `/api/cases/${id}/report`, SYSTEM, { text: 'Second read.', radpeerScore: scores[i], readerId: 'dr-pool' });
      expect(r.status, r.text).to.equal(201);
    }
    const counters = [...(await samplingCountersOfRadiologist(gw.db, 'RAD7', { outcomesSince: '2000-01-01T00:00:00.000Z' })).values()];
    expect([...(await samplingCountersOfRadiologist(gw.db, 'RAD7')).values()]).to.deep.equal([{ seen: 3, selected: 3 }]);
    expect(counters).to.deep.equal([{ seen: 3, selected: 3, reviewed: 3, discrepant: 1 }]);

    const s = await call('GET', '/api/sampling', QA);
    expect(s.status).to.equal(200);
    const cells = s.body['cells'] as Cell[];
    expect(cells).to.have.length(1);
    const ci = wilsonInterval(1, 3, 0.9);
    expect(cells[0]).to.deep.include({
      ruleId: 'precise',
      radiologist: 'RAD7',
      modality: 'CT',
      reviewed: 3,
      discrepant: 1,
      mode: 'precision',
      ciLow: ci.low,
      ciHigh: ci.high,
    });
    expect(cells[0]!.rate).to.be.closeTo(1 / 3, 1e-12);
    // planning rate (1 + 2) / (3 + 4) = 3/7; no previous period yet, so the rule's rate (1) still applies.
    expect(cells[0]!.needed).to.equal(wilsonSampleSize(planningRate({ reviewed: 3, discrepant: 1 }), 0.1, 0.9));
    expect(cells[0]!.drawProbability).to.equal(1);
  });

  it('the statistics know each read was a random draw and weigh it 1/p; the peer-review CSV has a row per second read', async () => {
    const st = await call('GET', '/api/stats', QA);
    expect(st.status).to.equal(200);
    expect(st.body['enrichment']).to.deep.equal([{ selection: 'sampling', secondReads: 3, meanWeight: 1, minWeight: 1, maxWeight: 1 }]);
    const rad = (st.body['byRadiologist'] as { radiologistId: string; weightedDiscordanceRate: number; discordanceCiLow: number }[])[0]!;
    expect(rad).to.deep.include({ radiologistId: 'RAD7', weightedDiscordanceRate: 0.3333 });
    const one = await call('GET', '/api/stats?radiologist=RAD7', QA);
    expect((one.body['totals'] as { secondReads: number }).secondReads).to.equal(3);
    expect(((await call('GET', '/api/stats?radiologist=nobody', QA)).body['totals'] as { secondReads: number }).secondReads).to.equal(0);

    const csv = await call('GET', '/api/stats?format=csv&table=peer-review', QA);
    expect(csv.status).to.equal(200);
    const lines = csv.text.split('\r\n').filter((l) => l !== '');
    expect(lines).to.have.length(4);
    expect(lines.slice(1).map((l) => l.split(',').slice(1, 7).join(','))).to.have.members([
      'RAD7,dr-pool,CT,2a,true,false',
      'RAD7,dr-pool,CT,1,false,false',
      'RAD7,dr-pool,CT,1,false,false',
    ]);
    for (const l of lines.slice(1)) expect(l).to.match(/,false,sampling,1$/);
  });
});
