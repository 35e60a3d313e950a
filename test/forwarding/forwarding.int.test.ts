import { rmSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { generateStudy, type GeneratedStudy } from '../../scripts/lib/study-generator.js';
import { buildConfig } from '../../src/config/load.js';
import { resolvePseudonym } from '../../src/forwarding/pseudonym.service.js';
import { createGateway, type Gateway } from '../../src/gateway.js';
import { storeFiles } from '../helpers/dicom-peers.js';
import { eventually } from '../helpers/eventually.js';
import { silentLogger } from '../helpers/hl7-peers.js';
import { PoolScp } from '../helpers/pool-scp.js';
import { makeTempDir, testDatabaseUrl } from '../helpers/tmp.js';

const admin = 'admin-token-0123456789abcdef';

interface DeliveryBody {
  destinationId: string;
  state: string;
  attempts: number;
  lastError: string | null;
  instancesTotal: number;
  instancesSent: number;
}
interface CaseBody {
  id: string;
  state: string;
  deliveries: DeliveryBody[];
}

describe('forwarding through the durable outbox to a real DIMSE pool', function () {
  this.timeout(90_000);
  let tmp: ReturnType<typeof makeTempDir>;
  let pool: PoolScp;
  let anonPool: PoolScp;
  let downPort: number;
  let gw: Gateway;
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

  function config(dir: string) {
    return buildConfig({
      dicom: { port: 0, stableAfterSeconds: 0.2 },
      hl7: { port: 0 },
      http: { port: 0 },
      storage: { dir: path.join(dir, 'data'), minFreeMb: 0 },
      database: { url: testDatabaseUrl(path.join(dir, 'gw.db')) },
      destinations: [
        { id: 'pool', type: 'dimse', host: '127.0.0.1', port: pool.port, aeTitle: 'POOL', batchSize: 4 },
        { id: 'anon', type: 'dimse', host: '127.0.0.1', port: anonPool.port, aeTitle: 'ANONPOOL', deidentify: true },
        { id: 'flaky', type: 'dimse', host: '127.0.0.1', port: downPort, aeTitle: 'FLAKY' },
        { id: 'wrong-ae', type: 'dimse', host: '127.0.0.1', port: pool.port, aeTitle: 'NOT-POOL' },
        { id: 'wide', type: 'dimse', host: '127.0.0.1', port: pool.port, aeTitle: 'POOL', batchSize: 4, maxAssociations: 3 },
      ],
      forwarding: { pollIntervalSeconds: 0.1, backoffBaseSeconds: 0.2, backoffMaxSeconds: 0.5, maxAttempts: 50, holdBurnedInModalities: ['MR'] },
      auth: { tokens: [{ token: admin, role: 'admin', name: 'alice' }] },
    });
  }

  async function push(study: GeneratedStudy): Promise<void> {
    const stable = new Promise<void>((resolve) => gw.studies.subscribe({ onStable: (uid) => (uid === study.studyInstanceUid ? resolve() : undefined) }));
    const r = await storeFiles(
      { host: '127.0.0.1', port: gw.ports().dicom, callingAe: 'PACS1', calledAe: 'SECONDREAD' },
      study.instances.map((i) => i.path),
    );
    expect(r.statuses.every((s) => s === 0)).to.equal(true);
    await stable;
  }

  async function request(study: GeneratedStudy, destinationId: string): Promise<CaseBody> {
    const r = await call('POST', '/api/cases', { studyInstanceUid: study.studyInstanceUid, reason: 'forwarding test', destinationId });
    expect(r.status, JSON.stringify(r.body)).to.equal(201);
    return r.body as unknown as CaseBody;
  }

  const caseWhen = (id: string, what: string, ok: (c: CaseBody) => boolean, timeoutMs = 20_000) =>
    eventually(
      async () => {
        const c = (await call('GET', `/api/cases/${id}`)).body as unknown as CaseBody;
        return ok(c) ? c : undefined;
      },
      what,
      timeoutMs,
    );

  const study = (name: string, o: Partial<Parameters<typeof generateStudy>[1]> = {}) =>
    generateStudy(path.join(tmp.dir, name), { instances: 10, series: 2, rows: 32, columns: 32, ...o });

  before(async () => {
    tmp = makeTempDir();
    pool = new PoolScp(path.join(tmp.dir, 'pool'), 'POOL');
    await pool.start();
    anonPool = new PoolScp(path.join(tmp.dir, 'anon'), 'ANONPOOL');
    await anonPool.start();
    const flaky = new PoolScp(path.join(tmp.dir, 'flaky-probe'), 'FLAKY');
    await flaky.start();
    downPort = flaky.port;
    await flaky.close();
    gw = createGateway(config(tmp.dir), { logger: silentLogger });
    await gw.start();
    base = `http://127.0.0.1:${gw.ports().http}`;
  });
  after(async () => {
    await gw.stop();
    await pool.close();
    await anonPool.close();
    tmp.cleanup();
  });

  it('forwards a flagged stable study in batches: every instance once, same UIDs, case awaiting-read', async () => {
    const s = study('plain');
    await push(s);
    const c = await request(s, 'pool');
    const done = await caseWhen(c.id, 'delivery', (x) => x.state === 'awaiting-read');
    expect(done.deliveries).to.have.length(1);
    expect(done.deliveries[0]).to.deep.include({ destinationId: 'pool', state: 'delivered', instancesTotal: 10, instancesSent: 10, attempts: 0 });
    const got = pool.stores.filter((x) => x.studyInstanceUid === s.studyInstanceUid);
    expect(got.map((x) => x.sopInstanceUid).sort()).to.deep.equal(s.instances.map((i) => i.sopInstanceUid).sort());
    expect(got.every((x) => x.outcome === 'stored')).to.equal(true);
    const audit = (await call('GET', `/api/audit?entityType=case&entityId=${c.id}`)).body['items'] as { action: string }[];
    expect(audit.map((a) => a.action)).to.include.members(['case.created', 'case.forwarding', 'case.awaiting-read']);
    const metrics = (await call('GET', '/metrics')).body as unknown as string;
    expect(metrics).to.match(/gateway_delivery_queue\{[^}]*destination="pool"[^}]*state="delivered"[^}]*\} 1/);
    expect(metrics).to.match(/gateway_delivered_instances_total\{[^}]*destination="pool"[^}]*\} 10/);
  });

  it('a destination with maxAssociations 3: each batch goes over three associations; every instance once, case awaiting-read', async () => {
    const s = study('wide', { instances: 11 });
    await push(s);
    const c = await request(s, 'wide');
    const done = await caseWhen(c.id, 'delivery', (x) => x.state === 'awaiting-read');
    expect(done.deliveries[0]).to.deep.include({ destinationId: 'wide', state: 'delivered', instancesTotal: 11, instancesSent: 11, attempts: 0 });
    const got = pool.stores.filter((x) => x.studyInstanceUid === s.studyInstanceUid);
    expect(got.map((x) => x.sopInstanceUid).sort()).to.deep.equal(s.instances.map((i) => i.sopInstanceUid).sort());
    expect(got.every((x) => x.outcome === 'stored')).to.equal(true);
  });

  it('sends late instances of a forwarded study as a delta, not a whole resend', async () => {
    const s = study('late', { instances: 6, series: 1 });
    const first = { ...s, instances: s.instances.slice(0, 4) };
    await push(first);
    const c = await request(s, 'pool');
    await caseWhen(c.id, 'first delivery', (x) => x.deliveries[0]?.state === 'delivered');
    const before = pool.stores.length;
    await push({ ...s, instances: s.instances.slice(4) });
    const done = await caseWhen(c.id, 'delta', (x) => x.deliveries[0]?.state === 'delivered' && x.deliveries[0].instancesSent === 6);
    expect(done.deliveries[0]!.instancesTotal).to.equal(6);
    const delta = pool.stores.slice(before).map((x) => x.sopInstanceUid);
    expect(delta.sort()).to.deep.equal(
      s.instances
        .slice(4)
        .map((i) => i.sopInstanceUid)
        .sort(),
    );
  });

  it('de-identifies for a de-identifying destination, with pseudonyms stored so answers link back', async () => {
    const s = study('anon', { patientName: 'DOE^JANE', patientId: 'MRN-SECRET-1', accessionNumber: 'ACC-SECRET-1' });
    await push(s);
    const c = await request(s, 'anon');
    await caseWhen(c.id, 'de-identified delivery', (x) => x.state === 'awaiting-read');
    const studies = await anonPool.db.selectFrom('studies').selectAll().execute();
    expect(studies).to.have.length(1);
    const seen = studies[0]!;
    expect(seen.study_instance_uid).to.not.equal(s.studyInstanceUid);
    expect(seen.patient_id).to.not.equal('MRN-SECRET-1');
    expect(seen.accession_number ?? '').to.not.include('SECRET');
    expect(seen.instance_count).to.equal(10);
    const back = await resolvePseudonym(gw.db, 'anon', 'uid', seen.study_instance_uid);
    expect(back?.studyInstanceUid).to.equal(s.studyInstanceUid);
    expect(back?.original).to.equal(s.studyInstanceUid);
    // The same study to the same destination gets the same pseudonyms: a resend is idempotent there.
    const retry = await call('POST', `/api/cases/${c.id}/retry`);
    expect(retry.status).to.equal(409);
  });

  it('excludes every instance of a modality listed as risky; with nothing left to send the case is held, each instance listed with its reason', async () => {
    const s = study('burned', { modality: 'MR' });
    await push(s);
    const c = await request(s, 'anon');
    const held = await caseWhen(c.id, 'hold', (x) => x.state === 'held');
    expect(held.deliveries[0]!.state).to.equal('held');
    expect(held.deliveries[0]!.lastError).to.match(/every instance was excluded/);
    const excluded = (held as unknown as { excludedInstances: { sopInstanceUid: string; reason: string; detail: string }[] }).excludedInstances;
    expect(excluded.map((e) => e.sopInstanceUid).sort()).to.deep.equal(s.instances.map((i) => i.sopInstanceUid).sort());
    expect(excluded.every((e) => e.reason === 'burned-in-risk' && /holdBurnedInModalities/.test(e.detail))).to.equal(true);
    expect(anonPool.stores.filter((x) => x.studyInstanceUid === s.studyInstanceUid)).to.have.length(0);
  });

  it('sends the rest of a study when some instances are marked BurnedInAnnotation YES: those are excluded, the case goes on', async () => {
    const clean = study('burned-mixed', { instances: 3, series: 1 });
    const flagged = generateStudy(path.join(tmp.dir, 'burned-mixed-yes'), {
      instances: 2,
      series: 1,
      rows: 32,
      columns: 32,
      burnedInAnnotation: 'YES',
      studyInstanceUid: clean.studyInstanceUid,
      patientId: clean.patientId,
      patientName: clean.patientName,
      accessionNumber: clean.accessionNumber,
    });
    await push({ ...clean, instances: [...clean.instances, ...flagged.instances] });
    const c = await request(clean, 'anon');
    const done = await caseWhen(c.id, 'delivery', (x) => x.state === 'awaiting-read');
    expect(done.deliveries[0]).to.deep.include({ state: 'delivered', instancesTotal: 5, instancesSent: 3 });
    const excluded = (done as unknown as { excludedInstances: { sopInstanceUid: string; reason: string; detail: string }[] }).excludedInstances;
    expect(excluded.map((e) => e.sopInstanceUid).sort()).to.deep.equal(flagged.instances.map((i) => i.sopInstanceUid).sort());
    expect(excluded.every((e) => e.reason === 'burned-in-risk' && /Burned In Annotation/i.test(e.detail))).to.equal(true);
    const metrics = (await call('GET', '/metrics')).body as unknown as string;
    expect(metrics).to.match(/gateway_deid_excluded_instances_total\{[^}]*destination_id="anon"[^}]*reason="burned-in-risk"[^}]*\} \d+/);
  });

  it('retries a destination that is down with backoff, then delivers everything once it is up', async () => {
    const s = study('flaky');
    await push(s);
    const c = await request(s, 'flaky');
    const retrying = await caseWhen(c.id, 'a failed attempt', (x) => (x.deliveries[0]?.attempts ?? 0) >= 2);
    expect(retrying.deliveries[0]!.state).to.be.oneOf(['pending', 'sending']);
    expect(retrying.deliveries[0]!.lastError).to.be.a('string');
    const flaky = new PoolScp(path.join(tmp.dir, 'flaky'), 'FLAKY');
    await flaky.start(downPort);
    try {
      await caseWhen(c.id, 'delivery after recovery', (x) => x.state === 'awaiting-read');
      const sops = flaky.stores.map((x) => x.sopInstanceUid);
      expect(sops.sort()).to.deep.equal(s.instances.map((i) => i.sopInstanceUid).sort());
    } finally {
      await flaky.close();
    }
  });

  it('dead-letters a permanent refusal at once, lists it, and a retry runs it again', async () => {
    const s = study('refused', { instances: 2, series: 1 });
    await push(s);
    const c = await request(s, 'wrong-ae');
    const failed = await caseWhen(c.id, 'dead letter', (x) => x.state === 'failed');
    expect(failed.deliveries[0]).to.deep.include({ state: 'dead', attempts: 1 });
    const dead = (await call('GET', '/api/deliveries?state=dead')).body['items'] as { caseId: string }[];
    expect(dead.map((d) => d.caseId)).to.include(c.id);
    const retried = await call('POST', `/api/cases/${c.id}/retry`);
    expect(retried.status).to.equal(200);
    const again = await caseWhen(c.id, 'dead again', (x) => x.state === 'failed' && x.deliveries[0]?.attempts === 1 && x.deliveries[0].state === 'dead');
    expect(again.deliveries[0]!.lastError).to.be.a('string');
    const audit = (await call('GET', `/api/audit?entityType=case&entityId=${c.id}&actor=alice`)).body['items'] as { action: string }[];
    expect(audit.map((a) => a.action)).to.include('case.forwarding');
  });

  it('a poisonous case (its file vanished) dies alone; the case behind it on the same destination is delivered', async () => {
    const bad = study('poison', { instances: 3, series: 1 });
    const good = study('after-poison', { instances: 3, series: 1 });
    await push(bad);
    await push(good);
    const row = await gw.db.selectFrom('instances').select('file_path').where('study_instance_uid', '=', bad.studyInstanceUid).executeTakeFirstOrThrow();
    rmSync(path.join(tmp.dir, 'data', row.file_path));
    const c1 = await request(bad, 'pool');
    const c2 = await request(good, 'pool');
    const dead = await caseWhen(c1.id, 'the poisonous case to die', (x) => x.state === 'failed');
    expect(dead.deliveries[0]!.lastError).to.match(/ENOENT|no such file/i);
    await caseWhen(c2.id, 'the next case to be delivered', (x) => x.state === 'awaiting-read');
  });

  it('reports destination reachability in /healthz without failing start-up', async () => {
    const h = (await (await fetch(`${base}/healthz`)).json()) as { status: string; destinations: Record<string, { ok: boolean }> };
    expect(h.status).to.equal('ok');
    expect(h.destinations['pool']?.ok).to.equal(true);
    expect(h.destinations['flaky']?.ok).to.equal(false);
  });

  it('resumes a delivery interrupted by a restart: nothing missing, each instance stored once at the pool', async () => {
    const s = study('restart', { instances: 40, series: 2 });
    await push(s);
    const before = pool.stores.length;
    const c = await request(s, 'pool');
    await eventually(() => pool.stores.length - before >= 8 || undefined, 'the delivery to start');
    await gw.stop();
    gw = createGateway(config(tmp.dir), { logger: silentLogger });
    await gw.start();
    base = `http://127.0.0.1:${gw.ports().http}`;
    const done = await caseWhen(c.id, 'resumed delivery', (x) => x.state === 'awaiting-read', 30_000);
    expect(done.deliveries[0]!.instancesSent).to.equal(40);
    const mine = pool.stores.slice(before).filter((x) => x.studyInstanceUid === s.studyInstanceUid);
    expect(new Set(mine.map((x) => x.sopInstanceUid)).size).to.equal(40);
    // Only instances sent but not yet recorded when the gateway stopped may come twice; the pool stored them once.
    expect(mine.filter((x) => x.outcome === 'stored')).to.have.length(40);
  });
});
