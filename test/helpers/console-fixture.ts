import path from 'node:path';
import { expect } from 'chai';
import { generateStudy, type GeneratedStudy } from '../../scripts/lib/study-generator.js';
import { buildConfig } from '../../src/config/load.js';
import { createGateway, type Gateway } from '../../src/gateway.js';
import { storeFiles } from './dicom-peers.js';
import { eventually } from './eventually.js';
import { RawMllpPeer, silentLogger } from './hl7-peers.js';
import { oruR01, ormO01 } from './hl7-samples.js';
import { PoolScp } from './pool-scp.js';
import { TestRis } from './test-ris.js';
import { makeTempDir } from './tmp.js';

/** Tokens of the console tests: one per role, two readers. */
export const CONSOLE_TOKENS = {
  admin: 'console-admin-token-0123456789',
  qa: 'console-qa-token-0123456789abc',
  drA: 'console-reader-a-token-0123456',
  drB: 'console-reader-b-token-0123456',
  system: 'console-system-token-012345678',
};

export interface ApiAnswer {
  status: number;
  type: string;
  body: Record<string, unknown>;
  text: string;
}

/**
 * A whole second-read setup on loopback for the console tests: a gateway
 * (gateway assignment, two CT readers on one DIMSE pool), the pool SCP, a
 * simulated RIS taking the write-backs, and an MLLP connection to send orders
 * and primary reports.
 */
export class ConsoleFixture {
  tmp = makeTempDir('gw-console-');
  pool = new PoolScp(path.join(this.tmp.dir, 'pool'));
  ris = new TestRis();
  gw!: Gateway;
  hl7!: RawMllpPeer;
  base = '';
  private n = 0;

  async start(): Promise<void> {
    await this.pool.start();
    await this.ris.start();
    const config = buildConfig({
      dicom: { port: 0, stableAfterSeconds: 0.2 },
      hl7: { port: 0, ris: { host: '127.0.0.1', port: this.ris.port } },
      http: { port: 0 },
      storage: { dir: path.join(this.tmp.dir, 'data'), minFreeMb: 0 },
      database: { url: `sqlite:${path.join(this.tmp.dir, 'gw.db')}` },
      destinations: [{ id: 'pool', type: 'dimse', host: '127.0.0.1', port: this.pool.port, aeTitle: 'POOL' }],
      readers: [
        { id: 'dr-a', name: 'Ada Reader', subspecialties: ['oncology'], modalities: ['CT'], destination: 'pool', maxOpenCases: 20 },
        { id: 'dr-b', name: 'Ben Reader', subspecialties: ['oncology'], modalities: ['CT', 'MR'], destination: 'pool', maxOpenCases: 20 },
      ],
      assignment: { strategy: 'gateway' },
      forwarding: { pollIntervalSeconds: 0.1 },
      writeBack: { ackTimeoutSeconds: 1, backoffBaseSeconds: 0.1, backoffMaxSeconds: 0.3, pollIntervalSeconds: 0.1, maxAttempts: 3 },
      auth: {
        tokens: [
          { token: CONSOLE_TOKENS.admin, role: 'admin', name: 'alice-admin' },
          { token: CONSOLE_TOKENS.qa, role: 'qa', name: 'quinn-qa' },
          { token: CONSOLE_TOKENS.drA, role: 'reader', readerId: 'dr-a', name: 'ada' },
          { token: CONSOLE_TOKENS.drB, role: 'reader', readerId: 'dr-b', name: 'ben' },
          { token: CONSOLE_TOKENS.system, role: 'system', name: 'pool-system' },
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
    await this.ris.stop();
    await this.pool.close();
    this.tmp.cleanup();
  }

  async call(method: string, p: string, token: string | undefined, body?: unknown): Promise<ApiAnswer> {
    const headers: Record<string, string> = {};
    if (token) headers['authorization'] = `Bearer ${token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(`${this.base}${p}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    const type = res.headers.get('content-type') ?? '';
    return { status: res.status, type, text, body: type.includes('json') ? (JSON.parse(text) as Record<string, unknown>) : {} };
  }

  async caseOf(id: string): Promise<Record<string, unknown>> {
    return (await this.call('GET', `/api/cases/${id}`, CONSOLE_TOKENS.admin)).body;
  }

  async caseWhen(id: string, what: string, ok: (c: Record<string, unknown>) => boolean, timeoutMs = 20_000): Promise<Record<string, unknown>> {
    return eventually(
      async () => {
        const c = await this.caseOf(id);
        return ok(c) ? c : undefined;
      },
      what,
      timeoutMs,
    );
  }

  /** The PACS pushes a small CT study with our SCU; resolves once it is stable. */
  async pushStudy(): Promise<{ study: GeneratedStudy; accession: string; mrn: string; i: number }> {
    const i = ++this.n;
    const accession = `ACC-CON-${i}-${Date.now() % 100000}`;
    const mrn = `MRN-CON-${i}`;
    const study = generateStudy(path.join(this.tmp.dir, `study-${i}`), {
      instances: 2,
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
    expect(
      r.statuses.every((s) => s === 0),
      JSON.stringify(r),
    ).to.equal(true);
    await stable;
    return { study, accession, mrn, i };
  }

  /**
   * The PACS pushes a CT study (our SCU), the RIS sends the order and the
   * final report (oncology: the shipped rules flag it); resolves once the case
   * awaits its read.
   */
  async flaggedCase(o: { radiologist?: string } = {}): Promise<{ caseId: string; study: GeneratedStudy; accession: string; mrn: string }> {
    const { study, accession, mrn, i } = await this.pushStudy();
    for (const msg of [
      ormO01({ accession, patientId: mrn, controlId: `ORM-C${i}-${accession}` }),
      oruR01({ accession, patientId: mrn, controlId: `ORU-C${i}-${accession}` }, { status: 'F', radiologist: o.radiologist ?? 'RAD7' }),
    ]) {
      const ack = await this.hl7.send(msg);
      expect(ack.code, ack.text).to.equal('AA');
    }
    const caseId = await eventually(
      async () => {
        const s = (await this.call('GET', `/api/studies/${study.studyInstanceUid}`, CONSOLE_TOKENS.admin)).body;
        return (s['caseId'] as string | null) ?? undefined;
      },
      'the case',
      15_000,
    );
    await this.caseWhen(caseId, 'forwarding to the pool', (c) => c['state'] === 'awaiting-read');
    return { caseId, study, accession, mrn };
  }
}
