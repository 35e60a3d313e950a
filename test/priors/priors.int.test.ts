/**
 * Priors from a real Orthanc as the hospital PACS, over DICOMweb (QIDO-RS + WADO-RS) and DIMSE (C-FIND +
 * C-MOVE to the gateway's SCP). The reader pool is DCMTK's storescp behind a de-identified destination: it
 * gets the current study and its relevant priors under one pseudonym; the irrelevant ones (other modality,
 * too old, same id under another issuer, another patient) stay at the PACS. Priors open no case of their own.
 * The database is the suite's (SQLite file, or PostgreSQL with GATEWAY_TEST_DATABASE_URL).
 */
import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { generateStudy, type GeneratedStudy } from '../../scripts/lib/study-generator.js';
import { hasDcmtk, runDcmtk } from '../helpers/dicom-peers.js';
import { DicomGateway, Storescp, freePort } from '../helpers/dicom-gateway.js';
import { eventually } from '../helpers/eventually.js';
import { orthancUnavailable, startOrthanc, type OrthancPeer } from '../helpers/orthanc.js';

const daysAgo = (n: number): string => new Date(Date.now() - n * 86_400_000).toISOString().slice(0, 10).replaceAll('-', '');

async function tag(file: string, t: string): Promise<string | undefined> {
  return (await runDcmtk('dcmdump', ['-q', '+P', t, '-s', file])).stdout.match(/\[([^\]]*)\]/)?.[1];
}

interface Fixture {
  current: GeneratedStudy;
  relevant: GeneratedStudy[];
  irrelevant: Record<string, GeneratedStudy>;
}

/** Studies of patient PRI-1 (issuer HOSP) and others, made with the study generator, issuer set with dcmodify. */
async function makeStudies(dir: string): Promise<Fixture> {
  const make = async (name: string, o: { modality?: 'CT' | 'MR'; date: string; patientId?: string; issuer?: string }) => {
    const s = generateStudy(path.join(dir, name), {
      instances: 2,
      series: 1,
      rows: 8,
      columns: 8,
      modality: o.modality ?? 'CT',
      studyDate: o.date,
      patientId: o.patientId ?? 'PRI-1',
      patientName: 'PRIOR^PATIENT',
      bodyPartExamined: 'CHEST',
    });
    for (const i of s.instances) {
      const r = await runDcmtk('dcmodify', ['-nb', '-i', `(0010,0021)=${o.issuer ?? 'HOSP'}`, i.path]);
      expect(r.code, r.stderr).to.equal(0);
    }
    return s;
  };
  return {
    current: await make('current', { date: daysAgo(0) }),
    relevant: [await make('recent', { date: daysAgo(30) }), await make('older', { date: daysAgo(200) })],
    irrelevant: {
      tooOld: await make('too-old', { date: daysAgo(700) }),
      otherModality: await make('mr', { modality: 'MR', date: daysAgo(100) }),
      otherIssuer: await make('other-issuer', { date: daysAgo(60), issuer: 'OTHERHOSP' }),
      otherPatient: await make('other-patient', { date: daysAgo(50), patientId: 'PRI-2' }),
    },
  };
}

for (const transport of ['dicomweb', 'dimse'] as const) {
  describe(`priors from Orthanc as the hospital PACS (${transport === 'dicomweb' ? 'QIDO-RS + WADO-RS' : 'C-FIND + C-MOVE'})`, function () {
    this.timeout(180_000);
    let orthanc: OrthancPeer | undefined;
    let gw: DicomGateway | undefined;
    let pool: Storescp | undefined;
    let fx: Fixture;

    before(async function () {
      const why = orthancUnavailable() ?? (hasDcmtk() ? undefined : 'DCMTK (storescu, storescp, dcmodify) not installed');
      if (why) {
        console.log(`      skipped: ${why}`);
        this.skip();
      }
      const dicomPort = await freePort();
      const poolPort = await freePort();
      orthanc = await startOrthanc({ modalities: [{ aeTitle: 'SECONDREAD', port: dicomPort }] });
      if (transport === 'dimse' && !orthanc.dicom) {
        console.log('      skipped: Orthanc DICOM port needs an isolated network namespace (unshare, root)');
        this.skip();
      }
      const pacs =
        transport === 'dicomweb'
          ? { type: 'dicomweb', url: orthanc.dicomwebUrl }
          : { type: 'dimse', host: orthanc.dicom!.host, port: orthanc.dicom!.port, aeTitle: orthanc.dicom!.aeTitle, moveDestination: 'SECONDREAD' };
      gw = new DicomGateway({
        rules: [],
        dicom: { port: dicomPort, aeTitle: 'SECONDREAD', stableAfterSeconds: 0.5, allowedCallers: [] },
        destinations: [{ id: 'pool', type: 'dimse', host: '127.0.0.1', port: poolPort, aeTitle: 'STORESCP', deidentify: true }],
        pacs,
        priors: { maxStudies: 3, lookbackDays: 365, sameModality: true },
      });
      await gw.start();
      pool = new Storescp(path.join(gw.tmp.dir, 'pool'));
      mkdirSync(pool.dir);
      await pool.start(poolPort);
      fx = await makeStudies(path.join(gw.tmp.dir, 'studies'));
      // The PACS holds everything, the current study too.
      for (const s of [fx.current, ...fx.relevant, ...Object.values(fx.irrelevant)]) {
        for (const i of s.instances) {
          const r = await fetch(`${orthanc.baseUrl}/instances`, { method: 'POST', body: readFileSync(i.path) });
          expect(r.status, `Orthanc upload: ${await r.text()}`).to.equal(200);
        }
      }
    });

    after(async () => {
      pool?.stop();
      await gw?.stop();
      await orthanc?.stop();
    });

    it('the pool receives the current study and its relevant priors under one pseudonym; the rest stays behind', async () => {
      const g = gw!;
      const r = await runDcmtk('storescu', [
        '-aet',
        'MODALITY',
        '-aec',
        'SECONDREAD',
        '127.0.0.1',
        String(g.dicomPort),
        ...fx.current.instances.map((i) => i.path),
      ]);
      expect(r.code, r.stderr).to.equal(0);
      await eventually(async () => (await g.call('GET', `/api/studies/${fx.current.studyInstanceUid}`)).body?.state === 'stable', 'current study stable');
      const opened = await g.call('POST', '/api/cases', { studyInstanceUid: fx.current.studyInstanceUid, reason: 'priors test' });
      expect(opened.status).to.equal(201);
      const caseId = opened.body.id as string;

      // The case shows its priors, most recent first, retrieved.
      const c = await eventually(
        async () => {
          const x = await g.call('GET', `/api/cases/${caseId}`);
          const priors = x.body.priors as { state: string }[];
          return priors.length === 2 && priors.every((p) => p.state === 'retrieved') ? x.body : undefined;
        },
        'priors retrieved',
        60_000,
      );
      expect(c.priors.map((p: { studyInstanceUid: string }) => p.studyInstanceUid)).to.deep.equal(fx.relevant.map((s) => s.studyInstanceUid));
      expect(c.priors[0]).to.include({ studyDate: daysAgo(30) });
      expect(c.priors[0].modalities).to.deep.equal(['CT']);

      // Priors are read-only context: stored, stable, and no decision or case of their own.
      for (const s of fx.relevant) {
        const st = await eventually(async () => {
          const x = await g.call('GET', `/api/studies/${s.studyInstanceUid}`);
          return x.body?.state === 'stable' ? x.body : undefined;
        }, 'prior stable');
        expect(st.instanceCount).to.equal(2);
        expect(st.caseId).to.equal(null);
        expect(st.decision).to.equal(null);
      }
      for (const s of Object.values(fx.irrelevant)) expect((await g.call('GET', `/api/studies/${s.studyInstanceUid}`)).status).to.equal(404);

      // The pool: 2 instances of each of 3 studies, every one under the same pseudonymous patient.
      const files = await eventually(async () => (pool!.files().length >= 6 ? pool!.files() : undefined), 'pool received current + priors', 60_000);
      await g.gw.forwarding.idle();
      expect(pool!.files()).to.have.length(6);
      const patientIds = new Set<string | undefined>();
      const studyUids = new Set<string | undefined>();
      for (const f of files) {
        const file = path.join(pool!.dir, f);
        patientIds.add(await tag(file, '0010,0020'));
        studyUids.add(await tag(file, '0020,000d'));
        const bytes = readFileSync(file).toString('latin1');
        expect(bytes).to.not.include('PRI-1');
        expect(bytes).to.not.include('PRIOR^PATIENT');
      }
      expect(patientIds.size, `patient ids: ${[...patientIds].join(',')}`).to.equal(1);
      expect([...patientIds][0]).to.match(/^ANON/);
      expect(studyUids.size).to.equal(3);
      for (const s of [fx.current, ...fx.relevant]) expect(studyUids.has(s.studyInstanceUid)).to.equal(false);

      // The case reached its reader; the audit says what was found and retrieved.
      const done = await eventually(async () => {
        const x = await g.call('GET', `/api/cases/${caseId}`);
        return x.body.state === 'awaiting-read' ? x.body : undefined;
      }, 'case awaiting read');
      expect(done.priors.every((p: { state: string }) => p.state === 'retrieved')).to.equal(true);
      const audit = await g.call('GET', `/api/audit?entityId=${caseId}`);
      const actions = (audit.body.items as { action: string; details?: Record<string, unknown> }[]).map((a) => a.action);
      expect(actions).to.include.members(['priors.found', 'prior.retrieved', 'prior.forward-planned']);
      const found = (audit.body.items as { action: string; details: { answered: number; relevant: number; leftOut: Record<string, number> } }[]).find(
        (a) => a.action === 'priors.found',
      )!;
      // Orthanc matched the issuer and the date range itself; the gateway left out the current study and the MR.
      expect(found.details).to.deep.include({ answered: 4, relevant: 2, leftOut: { 'current-study': 1, 'other-modality': 1 } });
    });
  });
}

describe('priors: a prior the PACS cannot send (C-MOVE to an AE it does not know)', function () {
  this.timeout(180_000);
  let orthanc: OrthancPeer | undefined;
  let gw: DicomGateway | undefined;
  let pool: Storescp | undefined;

  before(async function () {
    const why = orthancUnavailable() ?? (hasDcmtk() ? undefined : 'DCMTK (storescu, storescp, dcmodify) not installed');
    if (why) {
      console.log(`      skipped: ${why}`);
      this.skip();
    }
    const dicomPort = await freePort();
    const poolPort = await freePort();
    orthanc = await startOrthanc({ modalities: [{ aeTitle: 'SECONDREAD', port: dicomPort }] });
    if (!orthanc.dicom) {
      console.log('      skipped: Orthanc DICOM port needs an isolated network namespace (unshare, root)');
      this.skip();
    }
    gw = new DicomGateway({
      rules: [],
      dicom: { port: dicomPort, aeTitle: 'SECONDREAD', stableAfterSeconds: 0.5, allowedCallers: [] },
      destinations: [{ id: 'pool', type: 'dimse', host: '127.0.0.1', port: poolPort, aeTitle: 'STORESCP', deidentify: false }],
      pacs: { type: 'dimse', host: orthanc.dicom!.host, port: orthanc.dicom!.port, aeTitle: orthanc.dicom!.aeTitle, moveDestination: 'NOSUCHAE' },
      priors: { maxStudies: 3, lookbackDays: 365, sameModality: true },
    });
    await gw.start();
    pool = new Storescp(path.join(gw.tmp.dir, 'pool'));
    mkdirSync(pool.dir);
    await pool.start(poolPort);
  });
  after(async () => {
    pool?.stop();
    await gw?.stop();
    await orthanc?.stop();
  });

  it('the prior is shown failed and audited; the case is forwarded and awaits its read', async () => {
    const g = gw!;
    const dir = path.join(g.tmp.dir, 'studies');
    const current = generateStudy(path.join(dir, 'current'), { instances: 2, series: 1, rows: 8, columns: 8, studyDate: daysAgo(0), patientId: 'PRI-9' });
    const prior = generateStudy(path.join(dir, 'prior'), { instances: 2, series: 1, rows: 8, columns: 8, studyDate: daysAgo(40), patientId: 'PRI-9' });
    for (const i of prior.instances)
      expect((await fetch(`${orthanc!.baseUrl}/instances`, { method: 'POST', body: readFileSync(i.path) })).status).to.equal(200);
    const r = await runDcmtk('storescu', ['-aet', 'MODALITY', '-aec', 'SECONDREAD', '127.0.0.1', String(g.dicomPort), ...current.instances.map((i) => i.path)]);
    expect(r.code, r.stderr).to.equal(0);
    await eventually(async () => (await g.call('GET', `/api/studies/${current.studyInstanceUid}`)).body?.state === 'stable', 'stable');
    const opened = await g.call('POST', '/api/cases', { studyInstanceUid: current.studyInstanceUid, reason: 'prior cannot be moved' });
    const c = await eventually(
      async () => {
        const x = await g.call('GET', `/api/cases/${opened.body.id}`);
        return x.body.state === 'awaiting-read' && x.body.priors[0]?.state === 'failed' ? x.body : undefined;
      },
      'case awaiting read with a failed prior',
      60_000,
    );
    expect(c.priors).to.have.length(1);
    expect(c.priors[0]).to.include({ studyInstanceUid: prior.studyInstanceUid });
    expect(c.priors[0].detail).to.match(/C-MOVE|PACS/);
    expect(pool!.files()).to.have.length(2);
    const audit = await g.call('GET', `/api/audit?entityId=${opened.body.id}`);
    expect((audit.body.items as { action: string }[]).map((a) => a.action)).to.include('prior.retrieve-failed');
  });
});
