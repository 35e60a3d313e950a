import path from 'node:path';
import { expect } from 'chai';
import { generateStudy, type GeneratedStudy } from '../../scripts/lib/study-generator.js';
import { buildConfig } from '../../src/config/load.js';
import type { ReceivedInstance, StoreOutcome } from '../../src/dicom/instance-record.js';
import { createGateway, type Gateway } from '../../src/gateway.js';
import { storeFiles } from './dicom-peers.js';
import { eventually } from './eventually.js';
import { RawMllpPeer, silentLogger } from './hl7-peers.js';
import { ormO01, oruR01 } from './hl7-samples.js';
import { PoolScp } from './pool-scp.js';
import { TestRis } from './test-ris.js';
import { makeTempDir, testDatabaseUrl } from './tmp.js';

export const LT = {
  admin: 'lifecycle-admin-token-0123456789',
  qa: 'lifecycle-qa-token-0123456789abc',
  system: 'lifecycle-system-token-012345678',
};

export interface CaseBody {
  id: string;
  state: string;
  accessionNumber: string | null;
  deliveries: { destinationId: string; state: string; attempts: number; instancesSent: number; instancesTotal: number; lastError: string | null }[];
  secondReport: { version: number } | null;
  writeBack: { state: string; attempts: number; lastError: string | null; controlId: string | null } | null;
}

/** A reader pool SCP that takes `delayMs` to store each instance (a slow pool, so a cancel lands mid-delivery). */
export class SlowPoolScp extends PoolScp {
  constructor(
    dir: string,
    private readonly delayMs: number,
  ) {
    super(dir);
  }

  override async storeInstance(instance: ReceivedInstance): Promise<StoreOutcome> {
    await new Promise((r) => setTimeout(r, this.delayMs));
    return super.storeInstance(instance);
  }
}

export interface LifecycleOptions {
  deidentify?: boolean;
  /** ms the pool takes per instance. */
  poolDelayMs?: number;
  /** The pool's HL7 channel (destinations[].hl7); default: a TestRis started here. */
  poolHl7Port?: number;
  batchSize?: number;
  /** Start with the pool SCP down (its port reserved). */
  poolDown?: boolean;
}

/**
 * The whole gateway on loopback with one DIMSE reader pool (with an HL7
 * channel for orders), a RIS for write-backs, and the RIS's MLLP connection
 * in: what the case life-cycle tests drive.
 */
export class LifecycleGateway {
  readonly tmp = makeTempDir('gw-life-');
  gw!: Gateway;
  base = '';
  pool!: PoolScp;
  ris!: TestRis;
  poolChannel: TestRis | undefined;
  hl7!: RawMllpPeer;
  private n = 0;

  constructor(private readonly o: LifecycleOptions = {}) {}

  async start(): Promise<void> {
    const dir = path.join(this.tmp.dir, 'pool');
    this.pool = this.o.poolDelayMs ? new SlowPoolScp(dir, this.o.poolDelayMs) : new PoolScp(dir);
    await this.pool.start();
    if (this.o.poolDown) await this.pool.stop();
    this.ris = new TestRis();
    await this.ris.start();
    let poolHl7Port = this.o.poolHl7Port;
    if (poolHl7Port === undefined) {
      this.poolChannel = new TestRis();
      await this.poolChannel.start();
      poolHl7Port = this.poolChannel.port;
    }
    const config = buildConfig({
      dicom: { port: 0, stableAfterSeconds: 0.2 },
      hl7: { port: 0, ris: { host: '127.0.0.1', port: this.ris.port } },
      http: { port: 0 },
      storage: { dir: path.join(this.tmp.dir, 'data'), minFreeMb: 0 },
      database: { url: testDatabaseUrl(path.join(this.tmp.dir, 'gw.db')) },
      destinations: [
        {
          id: 'pool',
          type: 'dimse',
          host: '127.0.0.1',
          port: this.pool.port,
          aeTitle: 'POOL',
          deidentify: this.o.deidentify ?? false,
          batchSize: this.o.batchSize ?? 100,
          timeoutSeconds: 5,
          hl7: { host: '127.0.0.1', port: poolHl7Port },
        },
      ],
      forwarding: { pollIntervalSeconds: 0.1, backoffBaseSeconds: 0.1, backoffMaxSeconds: 0.3, maxAttempts: 1000 },
      writeBack: { ackTimeoutSeconds: 1, backoffBaseSeconds: 0.1, backoffMaxSeconds: 0.3, pollIntervalSeconds: 0.1, maxAttempts: 1000 },
      auth: {
        tokens: [
          { token: LT.admin, role: 'admin', name: 'alice' },
          { token: LT.qa, role: 'qa', name: 'quinn' },
          { token: LT.system, role: 'system', name: 'pool-system' },
        ],
      },
    });
    this.gw = createGateway(config, { logger: silentLogger });
    await this.gw.start();
    this.base = `http://127.0.0.1:${this.gw.ports().http}`;
    this.hl7 = await RawMllpPeer.connect(this.gw.ports().hl7);
  }

  async stop(): Promise<void> {
    this.hl7?.socket.destroy();
    await this.gw?.stop();
    await this.ris?.stop();
    await this.poolChannel?.stop();
    await this.pool?.close();
    this.tmp.cleanup();
  }

  async call(method: string, p: string, token: string, body?: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
    const res = await fetch(`${this.base}${p}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  }

  async getCase(id: string): Promise<CaseBody> {
    return (await this.call('GET', `/api/cases/${id}`, LT.admin)).body as unknown as CaseBody;
  }

  caseWhen(id: string, what: string, ok: (c: CaseBody) => boolean, timeoutMs = 20_000): Promise<CaseBody> {
    return eventually(
      async () => {
        const c = await this.getCase(id);
        return ok(c) ? c : undefined;
      },
      what,
      timeoutMs,
    );
  }

  /** A CT study over C-STORE, waited on until stable. */
  async storeStudy(instances = 2): Promise<GeneratedStudy & { accession: string; mrn: string }> {
    const i = ++this.n;
    const accession = `ACC-LIFE-${i}`;
    const mrn = `MRN-LIFE-${i}`;
    const study = generateStudy(path.join(this.tmp.dir, `study-${i}`), {
      instances,
      series: 1,
      rows: 16,
      columns: 16,
      accessionNumber: accession,
      patientId: mrn,
      modality: 'CT',
    });
    const stable = new Promise<void>((resolve) => this.gw.studies.subscribe({ onStable: (uid) => (uid === study.studyInstanceUid ? resolve() : undefined) }));
    const r = await storeFiles(
      { host: '127.0.0.1', port: this.gw.ports().dicom, callingAe: 'PACS1', calledAe: 'SECONDREAD' },
      study.instances.map((x) => x.path),
    );
    expect(r.statuses.every((s) => s === 0)).to.equal(true);
    await stable;
    return { ...study, accession, mrn };
  }

  /** The primary final report from the RIS (PID and OBR a write-back copies). */
  async sendPrimary(study: { accession: string; mrn: string }, controlId: string): Promise<void> {
    const ack = await this.hl7.send(oruR01({ accession: study.accession, patientId: study.mrn, controlId }, { status: 'F', radiologist: 'RAD7' }));
    expect(ack.code, ack.text).to.equal('AA');
  }

  /** A study flagged by the shipped rules (oncology order and final report); resolves with its case id. */
  async flaggedCase(instances = 2): Promise<{ caseId: string; study: GeneratedStudy & { accession: string; mrn: string } }> {
    const study = await this.storeStudy(instances);
    const ack = await this.hl7.send(ormO01({ accession: study.accession, patientId: study.mrn, controlId: `ORM-${study.accession}` }));
    expect(ack.code, ack.text).to.equal('AA');
    await this.sendPrimary(study, `ORU-${study.accession}`);
    return { caseId: await this.caseOf(study.studyInstanceUid), study };
  }

  /** A manual request for a study with no report at all (it is forwarded once stable). */
  async manualCase(instances = 2): Promise<{ caseId: string; study: GeneratedStudy & { accession: string; mrn: string } }> {
    const study = await this.storeStudy(instances);
    const r = await this.call('POST', '/api/cases', LT.qa, { studyInstanceUid: study.studyInstanceUid, reason: 'QA asked for it' });
    expect(r.status, JSON.stringify(r.body)).to.equal(201);
    return { caseId: r.body['id'] as string, study };
  }

  async caseOf(studyInstanceUid: string): Promise<string> {
    return eventually(
      async () => {
        const s = await this.call('GET', `/api/studies/${studyInstanceUid}`, LT.admin);
        return (s.body['caseId'] as string | null | undefined) ?? undefined;
      },
      'the case of the study',
      20_000,
    );
  }

  storesOf(studyInstanceUid: string, deidentified = false): number {
    return deidentified ? this.pool.stores.length : this.pool.stores.filter((s) => s.studyInstanceUid === studyInstanceUid).length;
  }

  /** Lets both workers run a few passes of their own (the loops also run by themselves). */
  async passes(n = 5): Promise<void> {
    for (let i = 0; i < n; i++) {
      await this.gw.forwarding.idle();
      await this.gw.outbound.tick();
      await new Promise((r) => setTimeout(r, 150));
    }
  }
}
