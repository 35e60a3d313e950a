import path from 'node:path';
import { expect } from 'chai';
import { generateStudy } from '../../scripts/lib/study-generator.js';
import { buildConfig } from '../../src/config/load.js';
import { createGateway, type Gateway } from '../../src/gateway.js';
import { planningRate, wilsonSampleSize } from '../../src/rules/sampling.js';
import { storeFiles } from '../helpers/dicom-peers.js';
import { eventually } from '../helpers/eventually.js';
import { RawMllpPeer, silentLogger } from '../helpers/hl7-peers.js';
import { oruR01 } from '../helpers/hl7-samples.js';
import { PoolScp } from '../helpers/pool-scp.js';
import { makeTempDir, testDatabaseUrl } from '../helpers/tmp.js';

const QA = 'qa-token-precision-dry-0123456';
const SYSTEM = 'system-token-precision-dry-0123';
const RULE = { id: 'precise', kind: 'sampling', priority: 'routine', rate: 1, period: 'month', mode: 'precision', targetHalfWidth: 0.1, confidence: 0.9 };

interface Reason {
  ruleId: string;
  detail: string;
}
interface DryRun {
  items: { studyInstanceUid: string; reasons: Reason[] }[];
  byRule: Record<string, number>;
  forecast: { quota: { ruleId: string; radiologist: string; modality: string; period: string; seen: number; drawn: number }[] };
}

/**
 * A precision cell plans from the reviews of the previous period's draws. The
 * dry run must read the same reviews as the live engine, so its forecast is
 * what the live engine decided on the same studies (not the planning rate of no reviews).
 */
describe('dry run of a precision-sampling rule reads the reviews the live engine reads', function () {
  this.timeout(120_000);
  let tmp: ReturnType<typeof makeTempDir>;
  let pool: PoolScp;
  let gw: Gateway;
  let base: string;
  let hl7: RawMllpPeer;
  let control = 0;
  const uids: Record<string, string> = {};

  const call = async (method: string, p: string, token: string, body?: unknown) => {
    const res = await fetch(`${base}${p}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, text, body: (res.headers.get('content-type')?.includes('json') ? JSON.parse(text) : {}) as Record<string, unknown> };
  };
  /** One CT of RAD7 whose final report was signed at `signed` (HL7 TS): the cell's period is that month. */
  const study = async (acc: string, signed: string) => {
    const s = generateStudy(path.join(tmp.dir, acc), {
      instances: 1,
      series: 1,
      rows: 16,
      columns: 16,
      accessionNumber: acc,
      patientId: `MRN-${acc}`,
      modality: 'CT',
    });
    const stable = new Promise<void>((resolve) => gw.studies.subscribe({ onStable: (uid) => (uid === s.studyInstanceUid ? resolve() : undefined) }));
    const r = await storeFiles(
      { host: '127.0.0.1', port: gw.ports().dicom, callingAe: 'PACS1', calledAe: 'SECONDREAD' },
      s.instances.map((i) => i.path),
    );
    expect(r.statuses).to.deep.equal([0]);
    await stable;
    const msg = oruR01(
      { accession: acc, patientId: `MRN-${acc}`, controlId: `D${++control}` },
      { status: 'F', radiologist: 'RAD7', lines: ['IMPRESSION: No acute abnormality.'] },
    );
    // OBR-7 (then OBR-22) is when the report was observed: the sampling period's date.
    const ack = await hl7.send(msg.replace('20260301103000+0100', signed).replace('20260301110000+0100', signed));
    expect(ack.code, ack.text).to.equal('AA');
    uids[acc] = s.studyInstanceUid;
    return s.studyInstanceUid;
  };

  before(async () => {
    tmp = makeTempDir();
    pool = new PoolScp(path.join(tmp.dir, 'pool'));
    await pool.start();
    gw = createGateway(
      buildConfig({
        dicom: { port: 0, stableAfterSeconds: 0.2 },
        hl7: { port: 0, aiSenders: ['AI-VENDOR'] },
        http: { port: 0 },
        storage: { dir: path.join(tmp.dir, 'data'), minFreeMb: 0 },
        database: { url: testDatabaseUrl(path.join(tmp.dir, 'gw.db')) },
        destinations: [{ id: 'pool', type: 'dimse', host: '127.0.0.1', port: pool.port, aeTitle: 'POOL' }],
        forwarding: { pollIntervalSeconds: 0.1 },
        rules: [RULE],
        sampling: { secret: 'precision-dry-run-sampling-secret' },
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
    // February: the cell's first period, every study drawn (rate 1); the pool reads all three, none discrepant.
    for (const acc of ['PD1', 'PD2', 'PD3']) {
      const uid = await study(acc, '20260210110000+0100');
      const row = await eventually(
        async () => gw.db.selectFrom('cases').select(['id']).where('study_instance_uid', '=', uid).where('state', '=', 'awaiting-read').executeTakeFirst(),
        `case of ${acc} awaiting read`,
      );
      const r = await call('POST', `/api/cases/${row.id}/report`, SYSTEM, { text: 'Second read.', radpeerScore: '1', readerId: 'dr-pool' });
      expect(r.status, r.text).to.equal(201);
    }
    // March: the live engine plans from February's volume and reviews.
    for (const acc of ['PD4', 'PD5']) {
      const uid = await study(acc, '20260310110000+0100');
      await eventually(
        async () => ((await gw.db.selectFrom('decisions').select('id').where('study_instance_uid', '=', uid).execute()).length > 0 ? true : undefined),
        `decision ${acc}`,
      );
      await gw.decisions.idle();
    }
  });
  after(async () => {
    hl7?.socket.destroy();
    await gw?.stop();
    await pool?.stop();
    tmp?.cleanup();
  });

  it('GET /api/rules shows the configured AI senders with the built-in lists (the rule builder shows them read-only)', async () => {
    const r = await call('GET', '/api/rules', QA);
    expect(r.status, r.text).to.equal(200);
    expect((r.body['defaults'] as { aiSenders: string[] }).aiSenders).to.deep.equal(['AI-VENDOR']);
  });

  it('the forecast draws what the live engine drew, with the reviews-based sample size in its reasons', async () => {
    const buckets = await gw.db.selectFrom('sampling_buckets').selectAll().orderBy('period_key').execute();
    expect(buckets.map((b) => [b.period_key, b.seen, b.selected])).to.deep.equal([
      ['2026-02', 3, 3],
      ['2026-03', 2, 2],
    ]);
    const live = new Map<string, Reason[]>();
    for (const acc of ['PD4', 'PD5']) {
      // The decision that drew the study (a later re-evaluation only keeps that draw).
      const d = await gw.db
        .selectFrom('decisions')
        .select(['reasons'])
        .where('study_instance_uid', '=', uids[acc]!)
        .where('sampling_slots', '<>', '[]')
        .orderBy('id')
        .executeTakeFirstOrThrow();
      live.set(uids[acc]!, JSON.parse(d.reasons) as Reason[]);
    }
    // Three reviews, none discrepant: planning rate 2/7, not the 0.5 of a cell nobody has reviewed.
    const needed = wilsonSampleSize(planningRate({ reviewed: 3, discrepant: 0 }), 0.1, 0.9);
    expect(needed).to.not.equal(wilsonSampleSize(planningRate({ reviewed: 0, discrepant: 0 }), 0.1, 0.9));
    for (const reasons of live.values()) expect(reasons.map((r) => r.detail).join(' ')).to.contain(`precision: ${needed} reviews needed`);

    const r = await call('POST', '/api/rules/dry-run', QA, { rules: [RULE] });
    expect(r.status, r.text).to.equal(200);
    const dry = r.body as unknown as DryRun;
    expect(dry.byRule).to.deep.equal({ precise: 5 });
    expect(dry.forecast.quota.map((q) => [q.period, q.seen, q.drawn])).to.deep.equal(buckets.map((b) => [b.period_key, b.seen, b.selected]));
    for (const [uid, reasons] of live) expect(dry.items.find((i) => i.studyInstanceUid === uid)?.reasons).to.deep.equal(reasons);
  });
});
