import path from 'node:path';
import { expect } from 'chai';
import { generateStudy, type GeneratedStudy } from '../../scripts/lib/study-generator.js';
import { buildConfig } from '../../src/config/load.js';
import type { ReceivedInstance, StoreOutcome } from '../../src/dicom/instance-record.js';
import { createGateway, type Gateway } from '../../src/gateway.js';
import { EvaluationTrigger } from '../../src/states.js';
import { insertInstance } from '../../src/studies/study.repository.js';
import { storeFiles } from '../helpers/dicom-peers.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, writeGatewayConfig, type GatewayProcess } from '../helpers/gateway-process.js';
import { RawMllpPeer, silentLogger } from '../helpers/hl7-peers.js';
import { oruR01 } from '../helpers/hl7-samples.js';
import { PoolScp } from '../helpers/pool-scp.js';
import { TestRis } from '../helpers/test-ris.js';
import { createTestPostgresDatabase, makeTempDir, requirePostgres } from '../helpers/tmp.js';

const admin = 'admin-token-0123456789abcdef';
const system = 'system-token-0123456789abcdef';

/** A pool that takes its time per instance, so an instance can be killed while a delivery is half sent. */
class SlowPool extends PoolScp {
  constructor(
    dir: string,
    private readonly delayMs: number,
  ) {
    super(dir, 'POOL');
  }
  override async storeInstance(instance: ReceivedInstance): Promise<StoreOutcome> {
    await new Promise((r) => setTimeout(r, this.delayMs));
    return super.storeInstance(instance);
  }
}

async function call(base: string, method: string, p: string, body?: unknown, token = admin): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${base}${p}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

describe('two gateway instances on one PostgreSQL (shared spool)', function () {
  this.timeout(180_000);
  let tmp: ReturnType<typeof makeTempDir>;
  let url: string;

  beforeEach(function () {
    requirePostgres(this);
    tmp = makeTempDir('gw-two-');
    url = createTestPostgresDatabase(tmp.dir);
  });
  afterEach(() => tmp?.cleanup());

  function config(
    instanceId: string,
    o: { destinations?: unknown[]; rules?: unknown[]; leaseSeconds?: number; stableAfterSeconds?: number; risPort?: number },
  ) {
    return buildConfig({
      instanceId,
      dicom: { port: 0, stableAfterSeconds: o.stableAfterSeconds ?? 0.3 },
      hl7: { port: 0, ...(o.risPort ? { ris: { host: '127.0.0.1', port: o.risPort } } : {}) },
      writeBack: { pollIntervalSeconds: 0.1 },
      http: { port: 0 },
      // One spool folder for both: either instance can send what the other received.
      storage: { dir: path.join(tmp.dir, 'data'), minFreeMb: 0 },
      database: { url },
      destinations: o.destinations ?? [],
      forwarding: { pollIntervalSeconds: 0.1, backoffBaseSeconds: 0.2, backoffMaxSeconds: 0.5, leaseSeconds: o.leaseSeconds ?? 30 },
      ...(o.rules ? { rules: o.rules } : {}),
      auth: {
        tokens: [
          { token: admin, role: 'admin', name: 'alice' },
          { token: system, role: 'system', name: 'pool-system' },
        ],
      },
    });
  }

  it('a burst of flagged studies sent to both instances is forwarded exactly once each, and each write-back sent once', async () => {
    const pools = [new PoolScp(path.join(tmp.dir, 'pool1'), 'POOL'), new PoolScp(path.join(tmp.dir, 'pool2'), 'POOL')];
    for (const p of pools) await p.start();
    const ris = new TestRis();
    await ris.start();
    const destinations = pools.map((p, i) => ({ id: `pool${i + 1}`, type: 'dimse', host: '127.0.0.1', port: p.port, aeTitle: 'POOL', batchSize: 5 }));
    const a = createGateway(config('gw-a', { destinations, risPort: ris.port, rules: [] }), { logger: silentLogger });
    const b = createGateway(config('gw-b', { destinations, risPort: ris.port, rules: [] }), { logger: silentLogger });
    await a.start();
    await b.start();
    try {
      const gws = [a, b];
      const studies: GeneratedStudy[] = [];
      for (let i = 0; i < 12; i++) studies.push(generateStudy(path.join(tmp.dir, `s${i}`), { instances: 5, series: 1, rows: 32, columns: 32 }));
      // Each study arrives at one instance; the manual request goes to the other one.
      await Promise.all(
        studies.map(async (s, i) => {
          const gw = gws[i % 2]!;
          const r = await storeFiles(
            { host: '127.0.0.1', port: gw.ports().dicom, callingAe: 'PACS1', calledAe: 'SECONDREAD' },
            s.instances.map((x) => x.path),
          );
          expect(r.statuses.every((x) => x === 0)).to.equal(true);
        }),
      );
      await eventually(
        async () => (await a.db.selectFrom('studies').select('state').where('state', '=', 'stable').execute()).length === 12,
        'all stable',
        20_000,
      );
      // The primary reports (the write-back copies PID and OBR from them), to either instance.
      const peers = await Promise.all(gws.map((g) => RawMllpPeer.connect(g.ports().hl7)));
      for (const [i, s] of studies.entries()) {
        const ack = await peers[i % 2]!.send(
          oruR01(
            { controlId: `P${i}`, accession: s.accessionNumber, patientId: s.patientId, studyUid: s.studyInstanceUid },
            { lines: ['IMPRESSION: normal.'] },
          ),
        );
        expect(ack.code).to.equal('AA');
      }
      for (const p of peers) p.destroy();
      const caseIds = await Promise.all(
        studies.map(async (s, i) => {
          const r = await call(`http://127.0.0.1:${gws[(i + 1) % 2]!.ports().http}`, 'POST', '/api/cases', {
            studyInstanceUid: s.studyInstanceUid,
            reason: 'burst',
            destinationId: `pool${(i % 2) + 1}`,
          });
          expect(r.status, JSON.stringify(r.body)).to.be.oneOf([200, 201]);
          return r.body['id'] as string;
        }),
      );
      expect(new Set(caseIds).size).to.equal(12);
      await eventually(
        async () => (await a.db.selectFrom('cases').select('state').where('state', '=', 'awaiting-read').execute()).length === 12,
        'every case awaiting-read',
        60_000,
      );
      const stores = pools.flatMap((p) => p.stores);
      const perSop = new Map<string, number>();
      for (const s of stores) perSop.set(s.sopInstanceUid, (perSop.get(s.sopInstanceUid) ?? 0) + 1);
      const all = studies.flatMap((s) => s.instances.map((x) => x.sopInstanceUid));
      expect(perSop.size).to.equal(all.length);
      expect(
        [...perSop.values()].every((n) => n === 1),
        'each instance sent exactly once',
      ).to.equal(true);
      const deliveries = await a.db.selectFrom('deliveries').select(['state', 'attempts']).execute();
      expect(deliveries).to.have.length(12);
      expect(deliveries.every((d) => d.state === 'delivered' && d.attempts === 0)).to.equal(true);
      // Both instances are registered and beating; no claim is left behind.
      const view = await call(`http://127.0.0.1:${b.ports().http}`, 'GET', '/api/instances');
      const items = view.body['items'] as { instanceId: string; alive: boolean; self: boolean; claims: { leases: unknown[]; deliveries: unknown[] } }[];
      expect(items.map((x) => x.instanceId).sort()).to.deep.equal(['gw-a', 'gw-b']);
      expect(items.every((x) => x.alive)).to.equal(true);
      expect(items.find((x) => x.self)?.instanceId).to.equal('gw-b');
      expect(items.every((x) => x.claims.deliveries.length === 0)).to.equal(true);
      const health = await (await fetch(`http://127.0.0.1:${a.ports().http}/healthz`)).json();
      expect(JSON.stringify(health)).to.include('gw-a');

      // Second reports through both instances: both outbound workers poll the same queue; each ORU goes out once.
      await Promise.all(
        caseIds.map(async (id, i) => {
          const r = await call(
            `http://127.0.0.1:${gws[i % 2]!.ports().http}`,
            'POST',
            `/api/cases/${id}/report`,
            { text: 'Concur.', radpeerScore: '1', readerId: 'dr-x' },
            system,
          );
          expect(r.status, JSON.stringify(r.body)).to.equal(201);
        }),
      );
      await eventually(
        async () => (await a.db.selectFrom('cases').select('state').where('state', '=', 'written-back').execute()).length === 12,
        'every case written back',
        30_000,
      );
      await new Promise((r) => setTimeout(r, 500));
      const controlIds = ris.received.filter((m) => m.includes('ORU^R01')).map((m) => m.split('\r')[0]!.split('|')[9]);
      expect(controlIds).to.have.length(12);
      expect(new Set(controlIds).size).to.equal(12);
    } finally {
      await a.stop();
      await b.stop();
      for (const p of pools) await p.close();
      await ris.stop();
    }
  });

  it('an instance killed mid-delivery: the other finishes the delivery once the lease expires', async () => {
    const pool = new SlowPool(path.join(tmp.dir, 'pool'), 150);
    await pool.start();
    const common = {
      instanceId: 'gw-a',
      dicom: { host: '127.0.0.1', port: 0, aeTitle: 'SECONDREAD', allowedCallers: [], stableAfterSeconds: 0.3 },
      storage: { dir: path.join(tmp.dir, 'data'), minFreeMb: 0 },
      database: { url },
      destinations: [{ id: 'pool', type: 'dimse', host: '127.0.0.1', port: pool.port, aeTitle: 'POOL', batchSize: 2 }],
      forwarding: { pollIntervalSeconds: 0.1, leaseSeconds: 3 },
      auth: { tokens: [{ token: admin, role: 'admin', name: 'alice' }] },
    };
    const dirA = path.join(tmp.dir, 'a');
    const dirB = path.join(tmp.dir, 'b');
    const { mkdirSync } = await import('node:fs');
    mkdirSync(dirA);
    mkdirSync(dirB);
    let procA: GatewayProcess | undefined;
    let procB: GatewayProcess | undefined;
    try {
      procA = await startGatewayProcess(writeGatewayConfig(dirA, common));
      const s = generateStudy(path.join(tmp.dir, 'big'), { instances: 30, series: 2, rows: 32, columns: 32 });
      const r = await storeFiles(
        { host: '127.0.0.1', port: procA.ports.dicom, callingAe: 'PACS1', calledAe: 'SECONDREAD' },
        s.instances.map((x) => x.path),
      );
      expect(r.statuses.every((x) => x === 0)).to.equal(true);
      const baseA = `http://127.0.0.1:${procA.ports.http}`;
      await eventually(async () => (await call(baseA, 'GET', `/api/studies/${s.studyInstanceUid}`)).body['state'] === 'stable', 'stable', 20_000);
      const created = await call(baseA, 'POST', '/api/cases', { studyInstanceUid: s.studyInstanceUid, reason: 'kill test' });
      expect(created.status).to.equal(201);
      const caseId = created.body['id'] as string;
      // A has sent a few batches of the 30 instances: kill it without any chance to release its claims.
      await eventually(() => pool.stores.length >= 4 || undefined, 'A started sending', 20_000);
      procB = await startGatewayProcess(writeGatewayConfig(dirB, { ...common, instanceId: 'gw-b' }));
      procA.child.kill('SIGKILL');
      await procA.exited;
      const killedAt = Date.now();
      const sentByA = pool.stores.length;
      expect(sentByA).to.be.lessThan(30);
      const baseB = `http://127.0.0.1:${procB.ports.http}`;
      // B sees A's claims (and A not beating any more) until the lease runs out.
      const view = await call(baseB, 'GET', '/api/instances');
      const a = (view.body['items'] as { instanceId: string; claims: { deliveries: { caseId: string; leaseExpiresAt: string | null }[] } }[]).find(
        (x) => x.instanceId === 'gw-a',
      );
      // The claim is the delivery's running job (its destination's queue keeps B from any other delivery meanwhile).
      expect(a?.claims.deliveries.map((d) => d.caseId)).to.deep.equal([caseId]);
      expect(a?.claims.deliveries[0]?.leaseExpiresAt).to.be.a('string');
      const done = await eventually(
        async () => {
          const c = await call(baseB, 'GET', `/api/cases/${caseId}`);
          return c.body['state'] === 'awaiting-read' ? c.body : undefined;
        },
        'B finishes the delivery',
        60_000,
      );
      const finishedAfterMs = Date.now() - killedAt;
      expect(finishedAfterMs, 'not before the 3 s lease ran out').to.be.greaterThan(2000);
      const deliveries = done['deliveries'] as { state: string; instancesSent: number; instancesTotal: number }[];
      expect(deliveries[0]).to.deep.include({ state: 'delivered', instancesSent: 30, instancesTotal: 30 });
      const perSop = new Map<string, number>();
      for (const x of pool.stores) perSop.set(x.sopInstanceUid, (perSop.get(x.sopInstanceUid) ?? 0) + 1);
      expect(perSop.size, 'every instance reached the pool').to.equal(30);
      // At most the batch A was sending when it died goes twice (its success was never recorded).
      expect(pool.stores.length - 30).to.be.at.most(2);
      const after = await call(baseB, 'GET', '/api/instances');
      const items = after.body['items'] as { instanceId: string; alive: boolean }[];
      expect(items.find((x) => x.instanceId === 'gw-a')?.alive).to.equal(false);
      expect(items.find((x) => x.instanceId === 'gw-b')?.alive).to.equal(true);
    } finally {
      if (procA && procA.child.exitCode === null && procA.child.signalCode === null) procA.child.kill('SIGKILL');
      if (procB) {
        procB.child.kill('SIGTERM');
        await procB.exited;
      }
      await pool.close();
    }
  });

  it('sampling quotas hold exactly when both instances evaluate at once', async () => {
    const rules = [{ id: 'qa', kind: 'sampling', priority: 'routine', rate: 1, period: 'month', minimum: 0, maximum: 5 }];
    const a = createGateway(config('gw-a', { rules, stableAfterSeconds: 3600 }), { logger: silentLogger });
    const b = createGateway(config('gw-b', { rules, stableAfterSeconds: 3600 }), { logger: silentLogger });
    await a.start();
    await b.start();
    try {
      const n = 24;
      const uids: string[] = [];
      const now = new Date().toISOString();
      for (let i = 0; i < n; i++) {
        const uid = `1.2.826.0.1.3680043.10.9.${i + 1}`;
        uids.push(uid);
        await a.db.transaction().execute((trx) =>
          insertInstance(
            trx,
            {
              sopClassUid: '1.2.840.10008.5.1.4.1.1.2',
              sopInstanceUid: `${uid}.1.1`,
              transferSyntaxUid: '1.2.840.10008.1.2.1',
              studyInstanceUid: uid,
              seriesInstanceUid: `${uid}.1`,
              accessionNumber: `QA${i}`,
              patientId: `MRN${i}`,
              modality: 'CT',
              studyDescription: null,
              seriesDescription: null,
              bodyPartExamined: null,
              studyDate: null,
              referringPhysicianName: null,
              seriesNumber: 1,
              instanceNumber: 1,
              filePath: 'none',
              sizeBytes: 1,
              sha256: '0'.repeat(64),
              callingAe: 'PACS1',
            },
            now,
          ),
        );
      }
      // One radiologist's final reports, linked to the studies (rules do not run yet: the studies are not stable).
      const peer = await RawMllpPeer.connect(a.ports().hl7);
      for (let i = 0; i < n; i++) {
        const ack = await peer.send(
          oruR01(
            { controlId: `QA${i}`, accession: `QA${i}`, patientId: `MRN${i}`, studyUid: uids[i] },
            { radiologist: 'RAD-Q', lines: ['IMPRESSION: normal.'] },
          ),
        );
        expect(ack.code).to.equal('AA');
      }
      peer.destroy();
      await a.decisions.idle();
      await a.db.updateTable('studies').set({ state: 'stable', stable_at: now }).execute();
      // Half the studies decided on each instance, all at the same time.
      const outcomes = await Promise.all(uids.map((u, i) => ((i % 2 === 0 ? a : b) as Gateway).decisions.evaluateStudy(u, EvaluationTrigger.stable)));
      const sampled = outcomes.filter((o) => o?.decision.flagged).length;
      expect(sampled).to.equal(5);
      const buckets = await a.db.selectFrom('sampling_buckets').select(['seen', 'selected']).execute();
      expect(buckets).to.deep.equal([{ seen: n, selected: 5 }]);
      expect((await a.db.selectFrom('cases').select('id').execute()).length).to.equal(5);
    } finally {
      await a.stop();
      await b.stop();
    }
  });
});
