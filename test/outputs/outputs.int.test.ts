import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { expect } from 'chai';
import type { Bundle, DiagnosticReport } from '@medplum/fhirtypes';
import { generateStudy, type GeneratedStudy } from '../../scripts/lib/study-generator.js';
import { buildConfig } from '../../src/config/load.js';
import { createGateway, type Gateway } from '../../src/gateway.js';
import { storeFiles } from '../helpers/dicom-peers.js';
import { eventually } from '../helpers/eventually.js';
import { RawMllpPeer, silentLogger } from '../helpers/hl7-peers.js';
import { oruR01, ormO01, seg } from '../helpers/hl7-samples.js';
import { PoolScp } from '../helpers/pool-scp.js';
import { startStorescp, type Storescp } from '../helpers/storescp.js';
import { TestRis } from '../helpers/test-ris.js';
import { makeTempDir, testDatabaseUrl } from '../helpers/tmp.js';
import { dciodvfy, dsrdump, hasDciodvfy, hasDsrdump, writeTemp } from './dicom-tools.js';
import { fhirErrors } from './fhir-schema.js';

const admin = 'admin-token-0123456789abcdef';
const system = 'system-token-0123456789abcdef';
const BASIC_TEXT_SR = '1.2.840.10008.5.1.4.1.1.88.11';
const KOS = '1.2.840.10008.5.1.4.1.1.88.59';

/** A FHIR server stand-in: answers each POST with the next queued status (200 once the queue is empty), keeps what was posted. */
class FhirReceiver {
  readonly posted: { status: number; body: Bundle; schemaErrors: string[] }[] = [];
  readonly statuses: number[] = [];
  /** While set, requests are read but answered only once it resolves. */
  holding: Promise<void> | undefined;
  /** Requests read and not answered yet. */
  waiting = 0;
  private server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', async () => {
      this.waiting++;
      await this.holding;
      this.waiting--;
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Bundle;
      const status = this.statuses.shift() ?? 200;
      // The resources as the server would check them: against the HL7 R4 JSON schema, shipped by a package.
      const schemaErrors = [...fhirErrors(body), ...(body.entry ?? []).flatMap((e) => fhirErrors(e.resource!))];
      this.posted.push({ status, body, schemaErrors });
      res.writeHead(status, { 'content-type': 'application/fhir+json' });
      res.end(
        JSON.stringify(
          status < 300
            ? { resourceType: 'Bundle', type: 'transaction-response', entry: (body.entry ?? []).map(() => ({ response: { status: '201 Created' } })) }
            : {
                resourceType: 'OperationOutcome',
                issue: [{ severity: 'error', code: status < 500 ? 'invalid' : 'transient', diagnostics: 'MRN-REAL quoted back' }],
              },
        ),
      );
    });
  });
  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/fhir`;
  }
  start(): Promise<void> {
    return new Promise((resolve) => this.server.listen(0, '127.0.0.1', resolve));
  }
  stop(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
  reportsFor(patientId: string): DiagnosticReport[] {
    return this.posted
      .filter((p) => p.status < 300)
      .flatMap((p) => (p.body.entry ?? []).map((e) => e.resource))
      .filter((r): r is DiagnosticReport => r?.resourceType === 'DiagnosticReport' && r.subject?.identifier?.value === patientId);
  }
}

describe('outputs of the second read: SR and KOS to the PACS (DCMTK storescp), FHIR to a server', function () {
  this.timeout(120_000);
  let tmp: ReturnType<typeof makeTempDir>;
  let pool: PoolScp;
  let ris: TestRis;
  let pacs: Storescp;
  let fhir: FhirReceiver;
  let gw: Gateway;
  let hl7: RawMllpPeer;

  const call = async (method: string, p: string, token: string, body?: unknown): Promise<{ status: number; body: Record<string, unknown> }> => {
    const res = await fetch(`http://127.0.0.1:${gw.ports().http}${p}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };
  // A GET is retried once on a connection reset: a kept-alive socket the server closed just as it was reused (loaded machine).
  const api = async (p: string) => (await call('GET', p, admin).catch(() => call('GET', p, admin))).body;
  const audit = async (caseId: string, action: string) =>
    ((await api(`/api/audit?entityType=case&entityId=${caseId}&action=${action}`))['items'] ?? []) as { details: Record<string, unknown> }[];

  /** A study stored, ordered and reported by the RIS, forwarded to the pool: its case, awaiting the second read. */
  async function openCase(n: number): Promise<{ study: GeneratedStudy; caseId: string; patientId: string; accession: string }> {
    const patientId = `MRN-REAL-${n}`;
    const accession = `ACC-REAL-${n}`;
    const study = generateStudy(path.join(tmp.dir, `s${n}`), {
      instances: 3,
      series: 2,
      rows: 32,
      columns: 32,
      accessionNumber: accession,
      patientId,
      patientName: `Real^Patient${n}`,
    });
    const stable = new Promise<void>((resolve) => gw.studies.subscribe({ onStable: (uid) => (uid === study.studyInstanceUid ? resolve() : undefined) }));
    await storeFiles(
      { host: '127.0.0.1', port: gw.ports().dicom, callingAe: 'MODALITY', calledAe: 'SECONDREAD' },
      study.instances.map((i) => i.path),
    );
    await stable;
    for (const m of [ormO01({ accession, patientId, controlId: `O${n}` }), oruR01({ accession, patientId, controlId: `R${n}` })]) {
      expect((await hl7.send(m)).code).to.equal('AA');
    }
    const caseId = await eventually(async () => ((await api(`/api/studies/${study.studyInstanceUid}`))['caseId'] as string | null) ?? undefined, 'the case');
    await eventually(async () => (await api(`/api/cases/${caseId}`))['state'] === 'awaiting-read' || undefined, 'delivery to the pool', 30_000);
    return { study, caseId, patientId, accession };
  }

  before(async function () {
    if (!hasDsrdump()) {
      console.log('      skipped: dcmtk not installed');
      return this.skip();
    }
    tmp = makeTempDir();
    pool = new PoolScp(path.join(tmp.dir, 'pool'));
    await pool.start();
    ris = new TestRis();
    await ris.start();
    pacs = await startStorescp('PACS');
    fhir = new FhirReceiver();
    await fhir.start();
    gw = createGateway(
      buildConfig({
        dicom: { port: 0, stableAfterSeconds: 0.2 },
        hl7: { port: 0, ris: { host: '127.0.0.1', port: ris.port } },
        http: { port: 0 },
        storage: { dir: path.join(tmp.dir, 'data'), minFreeMb: 0 },
        database: { url: testDatabaseUrl(path.join(tmp.dir, 'gw.db')) },
        destinations: [{ id: 'telerad', type: 'dimse', host: '127.0.0.1', port: pool.port, aeTitle: 'POOL', deidentify: true, hl7Sender: 'READPOOL' }],
        forwarding: { pollIntervalSeconds: 0.1 },
        writeBack: { pollIntervalSeconds: 0.1, ackTimeoutSeconds: 2 },
        pacs: { type: 'dimse', host: '127.0.0.1', port: pacs.port, aeTitle: 'PACS' },
        // The PACS here is the outputs' target only (a storescp answers no C-FIND): no prior lookups.
        priors: { maxStudies: 0 },
        readers: [{ id: 'dr-jones', name: 'Peter Jones' }],
        outputs: {
          dicomSr: { destination: 'pacs' },
          // The generated studies carry no Issuer of Patient ID: ids without one belong to this system.
          fhir: { url: fhir.url, identifierSystems: { '': 'urn:oid:1.2.826.0.1.3680043.8.498.77' }, accessionSystem: 'urn:oid:1.2.826.0.1.3680043.8.498.78' },
          maxAttempts: 4,
          backoffBaseSeconds: 0.05,
          backoffMaxSeconds: 0.2,
        },
        auth: {
          tokens: [
            { token: admin, role: 'admin' },
            { token: system, role: 'system', name: 'pool-system' },
          ],
        },
      }),
      { logger: silentLogger },
    );
    await gw.start();
    hl7 = await RawMllpPeer.connect(gw.ports().hl7);
  });
  after(async () => {
    hl7?.socket.destroy();
    await gw?.stop();
    await fhir?.stop();
    await pacs?.stop();
    await ris?.stop();
    await pool?.close();
    tmp?.cleanup();
  });

  it('a pseudonymised second read over HL7 comes back to the PACS and the FHIR server under the real identifiers', async () => {
    const { study, caseId, patientId, accession } = await openCase(1);
    const seen = (await pool.db.selectFrom('studies').selectAll().where('accession_number', '!=', accession).execute()).at(-1)!;
    expect(seen.patient_id).to.not.equal(patientId);
    const oru =
      [
        `MSH|^~\\&|READPOOL|TELERAD|SECONDREAD|GATEWAY|20261128120000||ORU^R01^ORU_R01|P1|P|2.5.1`,
        `PID|1||${seen.patient_id}^^^POOL^MR||ANON^PATIENT`,
        seg('OBR', { 1: '1', 3: seen.accession_number!, 4: 'CTCHEST^CT Chest^L', 7: '20261128110000', 25: 'F', 32: 'pool-reader-9&POOL&READER' }),
        seg('OBX', { 1: '1', 2: 'TX', 3: '18782-3^Radiology Study observation^LN', 5: 'Missed 9 mm nodule in the left lower lobe.', 11: 'F' }),
        seg('OBX', { 1: '2', 2: 'CWE', 3: 'RADPEER^RADPEER score^L', 5: '3b^RADPEER 3b^RADPEER', 11: 'F' }),
        `ZDS|${seen.study_instance_uid}^TELERAD^Application^DICOM`,
      ].join('\r') + '\r';
    expect((await hl7.send(oru)).code).to.equal('AA');

    const sr = await eventually(
      () => [...pacs.received().values()].find((b) => b.includes(Buffer.from(BASIC_TEXT_SR)) && b.includes(Buffer.from(patientId))),
      'the SR at the PACS',
      30_000,
    );
    const file = writeTemp(tmp.dir, 'received-sr.dcm', sr);
    const dump = dsrdump(file);
    expect(dump.code, dump.text).to.equal(0);
    expect(dump.text).to.include(`#${patientId}`).and.include('Real^Patient1');
    // Patient's Sex is not in the studies table: read from a stored instance of the study.
    expect(dump.text).to.match(/Real\^Patient1 \(O\b/);
    expect(dump.text).to.include('Missed 9 mm nodule in the left lower lobe.');
    expect(dump.text).to.match(/Person Observer Name"\)="pool-reader-9"/);
    expect(dump.text).to.match(/RADPEER score"\)=\(3b,99SRGW/);
    expect(dump.text).to.not.include(seen.patient_id!);
    // The same study (the real UID), the study's instances as evidence.
    const raw = sr.toString('latin1');
    expect(raw).to.include(study.studyInstanceUid);
    for (const i of study.instances) expect(raw).to.include(i.sopInstanceUid);
    expect(raw).to.not.include(seen.study_instance_uid);
    if (hasDciodvfy()) expect(dciodvfy(file).errors).to.deep.equal([]);

    const reports = await eventually(() => fhir.reportsFor(patientId).length > 0 && fhir.reportsFor(patientId), 'the FHIR DiagnosticReport', 30_000);
    const posted = fhir.posted.find((p) => p.body.entry?.some((e) => e.resource === reports[0]))!;
    expect(posted.schemaErrors).to.deep.equal([]);
    expect(reports[0]!.subject!.identifier).to.deep.equal({ system: 'urn:oid:1.2.826.0.1.3680043.8.498.77', value: patientId });
    expect(reports[0]!.basedOn![0]!.identifier).to.deep.include({ system: 'urn:oid:1.2.826.0.1.3680043.8.498.78', value: accession });
    expect(reports[0]!.performer![0]!.identifier!.value).to.equal('pool-reader-9');
    expect(JSON.stringify(posted.body)).to.not.include(seen.patient_id!).and.not.include(seen.accession_number!);
    await eventually(async () => (await audit(caseId, 'output.sent')).length === 2 || undefined, 'both outputs audited');
  });

  it("key images from the API go as a Key Object Selection; UIDs that are not the study's are refused; FHIR 5xx is retried", async () => {
    const { study, caseId, patientId } = await openCase(2);
    const bogus = await call('POST', `/api/cases/${caseId}/report`, system, {
      text: 'Concur.',
      radpeerScore: '1',
      readerId: 'dr-jones',
      keyImages: ['1.2.3.4.5'],
    });
    expect(bogus.status).to.equal(400);
    expect(JSON.stringify(bogus.body)).to.include('not instances of this study: 1.2.3.4.5');
    expect((await call('POST', `/api/cases/${caseId}/report`, system, { text: 'x', radpeerScore: '1', keyImages: 'nope' })).status).to.equal(400);
    expect((await api(`/api/cases/${caseId}`))['state']).to.equal('awaiting-read');

    fhir.statuses.push(503, 502);
    const marked = [study.instances[2]!.sopInstanceUid, study.instances[0]!.sopInstanceUid];
    const ok = await call('POST', `/api/cases/${caseId}/report`, system, {
      text: 'Concur with the primary report.',
      radpeerScore: '1',
      readerId: 'dr-jones',
      keyImages: marked,
    });
    expect(ok.status, JSON.stringify(ok.body)).to.equal(201);

    const kos = await eventually(
      () => [...pacs.received().values()].find((b) => b.includes(Buffer.from(KOS)) && b.includes(Buffer.from(patientId))),
      'the KOS at the PACS',
      30_000,
    );
    const file = writeTemp(tmp.dir, 'received-kos.dcm', kos);
    const dump = dsrdump(file);
    expect(dump.code, dump.text).to.equal(0);
    expect(dump.text).to.include('Key Object Selection Document').and.include('(,,"Of Interest")').and.include('Jones^Peter');
    expect(dump.text.match(/contains IMAGE/g)).to.have.length(2);
    const raw = kos.toString('latin1');
    for (const uid of marked) expect(raw).to.include(uid);
    expect(raw).to.not.include(study.instances[1]!.sopInstanceUid);
    if (hasDciodvfy()) expect(dciodvfy(file).errors).to.deep.equal([]);

    // Two 5xx answers, then accepted: the third attempt.
    const sent = await eventually(
      async () => (await audit(caseId, 'output.sent')).find((a) => a.details['output'] === 'fhir'),
      'the FHIR output after retries',
      30_000,
    );
    expect(sent.details['attempt']).to.equal(3);
    expect(fhir.reportsFor(patientId)).to.have.length(1);
    expect(fhir.posted.filter((p) => JSON.stringify(p.body).includes(patientId)).map((p) => p.status)).to.deep.equal([503, 502, 200]);
  });

  it('a FHIR 4xx fails at once and visibly: audited on the case, the job dead-lettered, nothing retried', async () => {
    const { caseId, patientId } = await openCase(3);
    fhir.statuses.push(422);
    const ok = await call('POST', `/api/cases/${caseId}/report`, system, { text: 'Concur.', radpeerScore: '2a', readerId: 'dr-jones' });
    expect(ok.status).to.equal(201);
    const failed = await eventually(async () => (await audit(caseId, 'output.failed'))[0], 'the failed output', 30_000);
    expect(failed.details).to.include({ output: 'fhir', permanent: true, attempt: 1 });
    expect(String(failed.details['error'])).to.equal('FHIR server answered 422 (error:invalid)');
    // The audit is written before the handler throws; the engine dead-letters the job just after.
    const reportId = (ok.body['report'] as { id: string }).id;
    const job = await eventually(
      async () =>
        (await gw.db
          .selectFrom('jobs')
          .selectAll()
          .where('kind', '=', 'output.fhir')
          .where('payload', 'like', `%${reportId}%`)
          .where('state', '=', 'dead')
          .executeTakeFirst()) ?? undefined,
      'the dead-lettered FHIR job',
    );
    expect(job.attempts).to.equal(1);
    expect(fhir.posted.filter((p) => JSON.stringify(p.body).includes(patientId))).to.have.length(1);
    // Shown where a person looks: the case's timeline in the console.
    const timeline = (await api(`/api/cases/${caseId}/timeline`))['items'] as { kind: string; title: string; details?: Record<string, unknown> }[];
    expect(timeline.find((e) => e.title === 'output.failed')?.details).to.include({ output: 'fhir', permanent: true });
    // The SR went all the same: one output's refusal does not hold the others.
    await eventually(async () => (await audit(caseId, 'output.sent')).find((a) => a.details['output'] === 'dicom-sr'), 'the SR');
  });

  it('a case cancelled while its FHIR output is being retried: nothing more is sent, and that is audited', async () => {
    const { caseId, patientId } = await openCase(4);
    // The RIS does not answer the write-back, so the case stays reported (cancellable) while the FHIR server is slow.
    ris.script.push('silence');
    let release!: () => void;
    fhir.holding = new Promise((resolve) => (release = resolve));
    fhir.statuses.push(503);
    expect((await call('POST', `/api/cases/${caseId}/report`, system, { text: 'Concur.', radpeerScore: '1', readerId: 'dr-jones' })).status).to.equal(201);
    await eventually(() => fhir.waiting > 0, 'the FHIR POST, held by the server', 30_000);
    const cancelled = await call('POST', `/api/cases/${caseId}/cancel`, admin, { reason: 'ordered on the wrong patient' });
    expect(cancelled.status, JSON.stringify(cancelled.body)).to.equal(200);
    fhir.holding = undefined;
    release();
    const audited = await eventually(
      async () => (await audit(caseId, 'output.cancelled')).find((a) => a.details['output'] === 'fhir'),
      'the cancelled output',
      30_000,
    );
    expect(audited.details['version']).to.equal(1);
    expect(fhir.posted.filter((p) => JSON.stringify(p.body).includes(patientId)).map((p) => p.status)).to.deep.equal([503]);
    expect(await audit(caseId, 'output.failed')).to.deep.equal([]);
  });
});
