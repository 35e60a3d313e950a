import path from 'node:path';
import { expect } from 'chai';
import { generateStudy } from '../../scripts/lib/study-generator.js';
import { buildConfig } from '../../src/config/load.js';
import { createGateway, type Gateway } from '../../src/gateway.js';
import { storeFiles } from '../helpers/dicom-peers.js';
import { eventually } from '../helpers/eventually.js';
import { RawMllpPeer, silentLogger } from '../helpers/hl7-peers.js';
import { oruR01 } from '../helpers/hl7-samples.js';
import { gatewayInTempDir, makeTempDir } from '../helpers/tmp.js';

const QA = 'qa-token-forecast-0123456789';

const RULES = [
  { id: 'mr-review', kind: 'high-stakes', priority: 'routine', procedureCodes: ['*'], when: { modality: ['MR'] }, readerGroup: 'neuro' },
  { id: 'qa', kind: 'sampling', priority: 'routine', rate: 0.5, period: 'month', maximum: 2 },
];

interface DryRun {
  flagged: number;
  byRule: Record<string, number>;
  forecast: {
    days: number;
    casesPerDay: number;
    byRule: { ruleId: string; flagged: number; casesPerDay: number }[];
    readerLoad: { readerGroup: string | null; openCasesPeak: number; capacity: number | null }[];
    quota: { ruleId: string; radiologist: string; modality: string; period: string; seen: number; drawn: number; min: number; max: number | null }[];
  };
  diff: { activeVersion: number; newlyFlagged: string[]; noLongerFlagged: string[]; truncated: boolean };
}

/**
 * The forecast is the dry run, and the dry run is evaluate() over the stored
 * studies: its numbers must be what the live engine did with the same studies.
 */
describe('dry-run forecast and diff equal what the live engine did', function () {
  this.timeout(90_000);
  let tmp: ReturnType<typeof makeTempDir>;
  let gw: Gateway;
  let base: string;
  let hl7: RawMllpPeer;
  const uids: Record<string, string> = {};

  const call = async (method: string, p: string, body?: unknown) => {
    const res = await fetch(`${base}${p}`, {
      method,
      headers: { authorization: `Bearer ${QA}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };

  before(async () => {
    tmp = makeTempDir();
    gw = createGateway(
      buildConfig({
        ...gatewayInTempDir(tmp.dir),
        rules: RULES,
        readers: [
          { id: 'dr-n', name: 'Nia Neuro', subspecialties: ['neuro'], modalities: ['MR'], maxOpenCases: 4 },
          { id: 'dr-g', name: 'Gus General', subspecialties: [], modalities: ['CT', 'MR'], maxOpenCases: 6 },
        ],
        sampling: { secret: 'forecast-test-sampling-secret' },
        auth: { tokens: [{ token: QA, role: 'qa', name: 'quinn-qa' }] },
      }),
      { logger: silentLogger },
    );
    await gw.start();
    base = `http://127.0.0.1:${gw.ports().http}`;
    hl7 = await RawMllpPeer.connect(gw.ports().hl7);
    // Two MR studies (flagged by mr-review) and six CT studies of RAD7 (drawn at 50 %, at most 2 a month).
    const plan: [string, 'CT' | 'MR'][] = [
      ['FMR1', 'MR'],
      ['FCT1', 'CT'],
      ['FCT2', 'CT'],
      ['FMR2', 'MR'],
      ['FCT3', 'CT'],
      ['FCT4', 'CT'],
      ['FCT5', 'CT'],
      ['FCT6', 'CT'],
    ];
    let control = 0;
    for (const [acc, modality] of plan) {
      const study = generateStudy(path.join(tmp.dir, acc), {
        instances: 1,
        series: 1,
        rows: 16,
        columns: 16,
        accessionNumber: acc,
        patientId: `MRN-${acc}`,
        modality,
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
          { accession: acc, patientId: `MRN-${acc}`, controlId: `F${++control}` },
          { status: 'F', radiologist: 'RAD7', lines: ['IMPRESSION: No acute abnormality.'] },
        ),
      );
      expect(ack.code, ack.text).to.equal('AA');
      await eventually(
        async () =>
          (await gw.db.selectFrom('decisions').select('id').where('study_instance_uid', '=', study.studyInstanceUid).execute()).length > 0 ? true : undefined,
        `decision ${acc}`,
      );
      await gw.decisions.idle();
      uids[acc] = study.studyInstanceUid;
    }
  });
  after(async () => {
    hl7?.socket.destroy();
    await gw?.stop();
    tmp?.cleanup();
  });

  it('studies flagged per rule, cases per day, reader load and quota use are the live numbers', async () => {
    const cases = await gw.db.selectFrom('cases').select(['study_instance_uid', 'reader_group']).execute();
    const buckets = await gw.db.selectFrom('sampling_buckets').selectAll().execute();
    const sampled = cases
      .filter((c) => c.reader_group === null)
      .map((c) => c.study_instance_uid)
      .sort();
    expect(cases.filter((c) => c.reader_group === 'neuro')).to.have.length(2);
    // The seeded draw takes some CTs but never more than the maximum.
    expect(sampled.length).to.be.within(1, 2);

    const r = await call('POST', '/api/rules/dry-run', {});
    expect(r.status).to.equal(200);
    const dry = r.body as unknown as DryRun;
    expect(dry.flagged).to.equal(cases.length);
    expect(dry.byRule).to.deep.equal({ 'mr-review': 2, qa: sampled.length });
    expect(dry.forecast.byRule.map((x) => [x.ruleId, x.flagged])).to.deep.equal([
      ['mr-review', 2],
      ['qa', sampled.length],
    ]);
    // Without from/to the period is first to last study received, at least a day.
    expect(dry.forecast.days).to.equal(1);
    expect(dry.forecast.casesPerDay).to.equal(cases.length);
    // Every case is still open (no destination) and within its 72 h SLA: the peak is the live count.
    expect(dry.forecast.readerLoad).to.deep.equal([
      { readerGroup: null, openCasesPeak: sampled.length, capacity: 10 },
      { readerGroup: 'neuro', openCasesPeak: 2, capacity: 4 },
    ]);
    expect(dry.forecast.quota).to.deep.equal(
      buckets.map((b) => ({
        ruleId: b.rule_id,
        radiologist: b.radiologist_id,
        modality: b.modality,
        period: b.period_key,
        seen: b.seen,
        drawn: b.selected,
        min: 0,
        max: 2,
      })),
    );
    expect(dry.forecast.quota[0]).to.deep.include({ radiologist: 'RAD7', modality: 'CT', seen: 6 });
    expect(dry.diff).to.deep.equal({ activeVersion: 1, newlyFlagged: [], noLongerFlagged: [], truncated: false });
  });

  it('a candidate shows the studies it newly flags and no longer flags against the active version', async () => {
    const sampled = (await gw.db.selectFrom('cases').select(['study_instance_uid', 'reader_group']).execute())
      .filter((c) => c.reader_group === null)
      .map((c) => c.study_instance_uid);
    const withoutSampling = (await call('POST', '/api/rules/dry-run', { rules: [RULES[0]] })).body as unknown as DryRun;
    expect(withoutSampling.diff.newlyFlagged).to.deep.equal([]);
    expect(withoutSampling.diff.noLongerFlagged).to.deep.equal([...sampled].sort());
    expect(withoutSampling.forecast.quota).to.deep.equal([]);

    const ctToo = (await call('POST', '/api/rules/dry-run', { rules: [{ ...RULES[0], when: { modality: ['MR', 'CT'] } }] })).body as unknown as DryRun;
    const ctUids = ['FCT1', 'FCT2', 'FCT3', 'FCT4', 'FCT5', 'FCT6'].map((a) => uids[a]!);
    expect(ctToo.diff.newlyFlagged).to.deep.equal(ctUids.filter((u) => !sampled.includes(u)).sort());
    expect(ctToo.diff.noLongerFlagged).to.deep.equal([]);
    expect(ctToo.forecast.readerLoad).to.deep.equal([{ readerGroup: 'neuro', openCasesPeak: 8, capacity: 4 }]);
  });
});
