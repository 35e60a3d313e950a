import path from 'node:path';
import { expect } from 'chai';
import { generateStudy, type GeneratedStudy } from '../../scripts/lib/study-generator.js';
import { buildConfig } from '../../src/config/load.js';
import type { ConfigInput } from '../../src/config/schema.js';
import { createGateway, type Gateway } from '../../src/gateway.js';
import { storeFiles } from './dicom-peers.js';
import { eventually } from './eventually.js';
import { RawMllpPeer, silentLogger } from './hl7-peers.js';
import { aiOru, ormO01, oruR01 } from './hl7-samples.js';
import { PoolScp } from './pool-scp.js';
import { TestRis } from './test-ris.js';
import { makeTempDir } from './tmp.js';

/** One token per role, two readers (so "another reader's case" exists). */
export const API_TOKENS = {
  admin: 'api-admin-token-0123456789abcdef',
  qa: 'api-qa-token-0123456789abcdef',
  reader: 'api-reader-a-token-0123456789abcdef',
  readerB: 'api-reader-b-token-0123456789abcdef',
  system: 'api-system-token-0123456789abcdef',
} as const;

export interface ApiResponse {
  status: number;
  contentType: string;
  text: string;
  /** Parsed when the answer is JSON. */
  body: unknown;
}

/**
 * The whole gateway in-process on loopback, with a reader pool (our own SCP),
 * a RIS that ACKs write-backs and an HL7 connection: what the API tests need
 * to make every route answer with real objects.
 */
export class ApiGateway {
  readonly tmp = makeTempDir('gw-api-');
  gw!: Gateway;
  base = '';
  pool!: PoolScp;
  ris!: TestRis;
  hl7!: RawMllpPeer;
  private n = 0;

  /** `deidentify`: the pool gets de-identified copies, so a reader sees cases under pseudonyms. */
  /** `configure`: adds to the config input (a feature's own keys) before the gateway is built. */
  constructor(private readonly o: { deidentify?: boolean; configure?: (input: ConfigInput) => ConfigInput } = {}) {}

  async start(): Promise<void> {
    this.pool = new PoolScp(path.join(this.tmp.dir, 'pool'));
    await this.pool.start();
    this.ris = new TestRis();
    await this.ris.start();
    const input: ConfigInput = {
      dicom: { port: 0, stableAfterSeconds: 0.2 },
      hl7: { port: 0, ris: { host: '127.0.0.1', port: this.ris.port }, aiSenders: ['AI_VENDOR'] },
      http: { port: 0 },
      storage: { dir: path.join(this.tmp.dir, 'data'), minFreeMb: 0 },
      database: { url: `sqlite:${path.join(this.tmp.dir, 'gw.db')}` },
      destinations: [{ id: 'pool', type: 'dimse', host: '127.0.0.1', port: this.pool.port, aeTitle: 'POOL', deidentify: this.o.deidentify ?? false }],
      readers: [
        { id: 'dr-a', name: 'Ada Reader', subspecialties: ['oncology'], modalities: ['CT', 'MR'], destination: 'pool', maxOpenCases: 50 },
        { id: 'dr-b', name: 'Ben Reader', subspecialties: ['oncology'], modalities: ['CT', 'MR'], destination: 'pool', maxOpenCases: 50 },
      ],
      assignment: { strategy: 'gateway' },
      forwarding: { pollIntervalSeconds: 0.1 },
      writeBack: { ackTimeoutSeconds: 1, backoffBaseSeconds: 0.1, backoffMaxSeconds: 0.3, pollIntervalSeconds: 0.1 },
      auth: {
        // The matrix sends many bad tokens on purpose; the limiter has its own tests.
        maxFailedPerMinute: 100_000,
        tokens: [
          { token: API_TOKENS.admin, role: 'admin', name: 'alice' },
          { token: API_TOKENS.qa, role: 'qa', name: 'quinn' },
          { token: API_TOKENS.reader, role: 'reader', readerId: 'dr-a', name: 'ada' },
          { token: API_TOKENS.readerB, role: 'reader', readerId: 'dr-b', name: 'ben' },
          { token: API_TOKENS.system, role: 'system', name: 'pool-system' },
        ],
      },
    };
    const config = buildConfig(this.o.configure ? this.o.configure(input) : input);
    this.gw = createGateway(config, { logger: silentLogger });
    await this.gw.start();
    this.base = `http://127.0.0.1:${this.gw.ports().http}`;
    this.hl7 = await RawMllpPeer.connect(this.gw.ports().hl7);
  }

  async stop(): Promise<void> {
    this.hl7?.socket.destroy();
    await this.gw?.stop();
    await this.ris?.stop();
    await this.pool?.close();
    this.tmp.cleanup();
  }

  async call(method: string, p: string, token?: string, body?: unknown): Promise<ApiResponse> {
    const headers: Record<string, string> = {};
    if (token !== undefined) headers['authorization'] = `Bearer ${token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(`${this.base}${p}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    const contentType = res.headers.get('content-type') ?? '';
    let parsed: unknown;
    if (contentType.includes('application/json')) parsed = JSON.parse(text) as unknown;
    return { status: res.status, contentType, text, body: parsed };
  }

  /** A CT study stored over C-STORE, waited on until stable. */
  async storeStudy(): Promise<GeneratedStudy> {
    const i = ++this.n;
    const study = generateStudy(path.join(this.tmp.dir, `study-${i}`), {
      instances: 2,
      series: 1,
      rows: 16,
      columns: 16,
      accessionNumber: `ACC-API-${i}`,
      patientId: `MRN-API-${i}`,
      modality: 'CT',
    });
    const stable = new Promise<void>((resolve) => this.gw.studies.subscribe({ onStable: (uid) => (uid === study.studyInstanceUid ? resolve() : undefined) }));
    const r = await storeFiles(
      { host: '127.0.0.1', port: this.gw.ports().dicom, callingAe: 'PACS1', calledAe: 'SECONDREAD' },
      study.instances.map((x) => x.path),
    );
    expect(r.statuses.every((s) => s === 0)).to.equal(true);
    await stable;
    return study;
  }

  /**
   * A study with an order, a final primary report (oncology: the shipped rules
   * flag it) and an AI result; resolves once its case awaits its read.
   */
  async flaggedStudy(): Promise<{ study: GeneratedStudy; caseId: string; readerId: string }> {
    const study = await this.storeStudy();
    const ids = { accession: study.accessionNumber, patientId: study.patientId, studyUid: study.studyInstanceUid };
    const i = this.n;
    for (const msg of [
      ormO01({ ...ids, controlId: `API-ORM-${i}` }),
      oruR01({ ...ids, controlId: `API-ORU-${i}` }, { status: 'F', radiologist: 'RAD7' }),
      aiOru({ ...ids, controlId: `API-AI-${i}` }),
    ]) {
      const ack = await this.hl7.send(msg);
      expect(ack.code, ack.text).to.equal('AA');
    }
    const caseId = await this.caseOf(study.studyInstanceUid);
    const c = await this.awaitingRead(caseId);
    return { study, caseId, readerId: c.readerId };
  }

  async caseOf(studyInstanceUid: string): Promise<string> {
    return eventually(
      async () => {
        const s = await this.call('GET', `/api/studies/${studyInstanceUid}`, API_TOKENS.admin);
        return ((s.body as { caseId?: string | null } | undefined)?.caseId ?? undefined) || undefined;
      },
      'the case of the study',
      20_000,
    );
  }

  async awaitingRead(caseId: string): Promise<{ readerId: string }> {
    return eventually(
      async () => {
        const c = (await this.call('GET', `/api/cases/${caseId}`, API_TOKENS.admin)).body as { state: string; readerId: string | null };
        return c.state === 'awaiting-read' && c.readerId ? { readerId: c.readerId } : undefined;
      },
      'the case to await its read',
      20_000,
    );
  }

  /** Gives a case to a reader (the assignment strategy is tested elsewhere). */
  async assign(caseId: string, readerId: string): Promise<void> {
    await this.gw.db.updateTable('cases').set({ reader_id: readerId }).where('id', '=', caseId).execute();
  }
}
