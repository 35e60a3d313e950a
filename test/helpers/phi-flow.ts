import path from 'node:path';
import { Writable } from 'node:stream';
import { expect } from 'chai';
import { generateStudy, type GeneratedStudy } from '../../scripts/lib/study-generator.js';
import { buildConfig } from '../../src/config/load.js';
import { createGateway, type Gateway } from '../../src/gateway.js';
import { storeFiles } from './dicom-peers.js';
import { eventually } from './eventually.js';
import { RawMllpPeer } from './hl7-peers.js';
import { oruR01, ormO01 } from './hl7-samples.js';
import { PoolScp } from './pool-scp.js';
import { TestRis } from './test-ris.js';

/** Identifiers and text no log line, metric or reader view may contain (each distinctive enough to search for). */
export interface PhiPatient {
  /** DICOM PN: Family^Given. */
  name: string;
  id: string;
  accession: string;
  reportText: string;
  modality: 'CT' | 'MR';
}

export const PHI_TOKENS = {
  admin: 'phi-admin-token-0123456789abcdef',
  drA: 'phi-reader-a-token-0123456789abcdef',
  drB: 'phi-reader-b-token-0123456789abcdef',
};

/**
 * The whole gateway in-process with two reader pools (dr-a reads CT at a
 * de-identifying destination, dr-b reads MR at one that is not), a test RIS,
 * and every log line captured through the real logger (format and PHI guard
 * included) instead of the console.
 */
export class PhiFlow {
  readonly logLines: string[] = [];
  gw!: Gateway;
  hl7!: RawMllpPeer;
  deidPool!: PoolScp;
  plainPool!: PoolScp;
  ris!: TestRis;
  base = '';
  private n = 0;

  constructor(readonly dir: string) {}

  async start(log: { level?: 'info' | 'debug'; phi?: boolean } = {}): Promise<void> {
    this.deidPool = new PoolScp(path.join(this.dir, 'pool-deid'), 'POOLDEID');
    await this.deidPool.start();
    this.plainPool = new PoolScp(path.join(this.dir, 'pool-plain'), 'POOLPLAIN');
    await this.plainPool.start();
    this.ris = new TestRis();
    await this.ris.start();
    const config = buildConfig({
      dicom: { port: 0, stableAfterSeconds: 0.2 },
      hl7: { port: 0, ris: { host: '127.0.0.1', port: this.ris.port } },
      http: { port: 0 },
      storage: { dir: path.join(this.dir, 'data'), minFreeMb: 0 },
      database: { url: `sqlite:${path.join(this.dir, 'gw.db')}` },
      destinations: [
        { id: 'pool-deid', type: 'dimse', host: '127.0.0.1', port: this.deidPool.port, aeTitle: 'POOLDEID', deidentify: true },
        { id: 'pool-plain', type: 'dimse', host: '127.0.0.1', port: this.plainPool.port, aeTitle: 'POOLPLAIN', deidentify: false },
      ],
      readers: [
        { id: 'dr-a', name: 'Ada Reader', subspecialties: ['oncology'], modalities: ['CT'], destination: 'pool-deid' },
        { id: 'dr-b', name: 'Ben Reader', subspecialties: ['oncology'], modalities: ['MR'], destination: 'pool-plain' },
      ],
      assignment: { strategy: 'gateway' },
      forwarding: { pollIntervalSeconds: 0.1 },
      writeBack: { ackTimeoutSeconds: 2, backoffBaseSeconds: 0.1, backoffMaxSeconds: 0.3, pollIntervalSeconds: 0.1 },
      auth: {
        tokens: [
          { token: PHI_TOKENS.admin, role: 'admin', name: 'alice' },
          { token: PHI_TOKENS.drA, role: 'reader', readerId: 'dr-a', name: 'ada' },
          { token: PHI_TOKENS.drB, role: 'reader', readerId: 'dr-b', name: 'ben' },
        ],
      },
      log: { level: log.level ?? 'info', format: 'json', phi: log.phi ?? false },
    });
    const lines = this.logLines;
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        lines.push(chunk.toString());
        cb();
      },
    });
    this.gw = createGateway(config, { logSink: sink });
    await this.gw.start();
    this.base = `http://127.0.0.1:${this.gw.ports().http}`;
    this.hl7 = await RawMllpPeer.connect(this.gw.ports().hl7);
  }

  async stop(): Promise<void> {
    this.hl7?.socket.destroy();
    await this.gw?.stop();
    await this.ris?.stop();
    await this.deidPool?.close();
    await this.plainPool?.close();
  }

  async call(method: string, p: string, token: string, body?: unknown): Promise<{ status: number; text: string; json: Record<string, unknown> }> {
    const res = await fetch(`${this.base}${p}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let json: Record<string, unknown> = {};
    try {
      json = JSON.parse(text) as Record<string, unknown>;
    } catch {
      // /metrics is text
    }
    return { status: res.status, text, json };
  }

  /** The RIS's messages for this patient: PID with the patient's name and ids. */
  orm(p: PhiPatient, controlId: string): string {
    return withPatientName(ormO01({ accession: p.accession, patientId: p.id, controlId }), p.name);
  }

  oru(p: PhiPatient, controlId: string): string {
    return withPatientName(
      oruR01(
        { accession: p.accession, patientId: p.id, controlId },
        { status: 'F', radiologist: 'RAD7', lines: [`FINDINGS: ${p.reportText}.`, 'IMPRESSION: Suspicious for primary lung carcinoma.'] },
      ),
      p.name,
    );
  }

  /** PACS pushes the study (our SCU), the RIS sends order and final report; resolves with the case once it awaits its read. */
  async flaggedCase(p: PhiPatient): Promise<{ caseId: string; study: GeneratedStudy }> {
    const i = ++this.n;
    const study = generateStudy(path.join(this.dir, `study-${i}`), {
      instances: 3,
      series: 1,
      rows: 32,
      columns: 32,
      accessionNumber: p.accession,
      patientId: p.id,
      patientName: p.name,
      modality: p.modality,
    });
    const stable = new Promise<void>((resolve) => this.gw.studies.subscribe({ onStable: (uid) => (uid === study.studyInstanceUid ? resolve() : undefined) }));
    const r = await storeFiles(
      { host: '127.0.0.1', port: this.gw.ports().dicom, callingAe: 'PACS1', calledAe: 'SECONDREAD' },
      study.instances.map((x) => x.path),
    );
    expect(
      r.statuses.every((s) => s === 0),
      JSON.stringify(r.statuses),
    ).to.equal(true);
    await stable;
    for (const msg of [this.orm(p, `ORM-PHI-${i}`), this.oru(p, `ORU-PHI-${i}`)]) {
      const ack = await this.hl7.send(msg);
      expect(ack.code, ack.text).to.equal('AA');
    }
    const uid = study.studyInstanceUid;
    const caseId = await eventually(
      async () => {
        const s = (await this.call('GET', `/api/studies/${uid}`, PHI_TOKENS.admin)).json;
        return (s['caseId'] as string | null) ?? undefined;
      },
      'the case',
      20_000,
    );
    await eventually(async () => (await this.call('GET', `/api/cases/${caseId}`, PHI_TOKENS.admin)).json['state'] === 'awaiting-read', 'forwarding', 20_000);
    return { caseId, study };
  }
}

export function withPatientName(message: string, dicomName: string): string {
  const [family, given] = dicomName.split('^');
  return message.replace('DOE^JANE^Q', `${(family ?? '').toUpperCase()}^${(given ?? '').toUpperCase()}`);
}

/** Every distinctive value of a patient found in `text` (case-insensitive; names by their parts). */
export function phiFoundIn(text: string, p: PhiPatient, extra: string[] = []): string[] {
  const lower = text.toLowerCase();
  const values = [...p.name.split('^'), p.id, p.accession, p.reportText, ...p.reportText.split(' '), ...extra];
  return values.filter((v) => v.length >= 4 && lower.includes(v.toLowerCase()));
}
