import http from 'node:http';
import path from 'node:path';
import { expect } from 'chai';
import { generateStudy, type GeneratedStudy } from '../../scripts/lib/study-generator.js';
import { buildConfig } from '../../src/config/load.js';
import { createGateway, type Gateway } from '../../src/gateway.js';
import { Hl7Message } from '../../src/hl7/hl7-message.js';
import { hasDcmtk, runDcmtk, storeFiles } from '../helpers/dicom-peers.js';
import { eventually } from '../helpers/eventually.js';
import { RawMllpPeer, silentLogger } from '../helpers/hl7-peers.js';
import { oruR01, ormO01 } from '../helpers/hl7-samples.js';
import { PoolScp } from '../helpers/pool-scp.js';
import { havePythonHl7Server, PythonMllpServer } from '../helpers/python-mllp-server.js';
import { TestRis } from '../helpers/test-ris.js';
import { makeTempDir, testDatabaseUrl } from '../helpers/tmp.js';

const T = {
  admin: 'admin-token-0123456789abcdef',
  system: 'system-token-0123456789abcdef',
  drA: 'reader-a-token-0123456789abcdef',
  drB: 'reader-b-token-0123456789abcdef',
};

interface CaseBody {
  id: string;
  state: string;
  readerId: string | null;
  discrepant: boolean;
  escalationLevel: number;
  secondReport: { version: number; radpeerScore: string } | null;
  writeBack: { state: string; attempts: number; lastError: string | null; controlId: string } | null;
  deliveries: { destinationId: string; state: string }[];
}

describe('second read: from C-STORE to the ORU^R01 at the RIS', function () {
  this.timeout(120_000);
  let tmp: ReturnType<typeof makeTempDir>;
  let pool: PoolScp;
  let ris: TestRis;
  let qa: TestRis;
  let gw: Gateway;
  let base: string;
  let hl7: RawMllpPeer;
  const hooks: { event: string; caseId: string }[] = [];
  let hookServer: http.Server;
  let hookPort = 0;
  let n = 0;

  const call = async (method: string, p: string, token: string, body?: unknown) => {
    const res = await fetch(`${base}${p}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };
  const getCase = async (id: string) => (await call('GET', `/api/cases/${id}`, T.admin)).body as unknown as CaseBody;
  const caseWhen = (id: string, what: string, ok: (c: CaseBody) => boolean, timeoutMs = 20_000) =>
    eventually(
      async () => {
        const c = await getCase(id);
        return ok(c) ? c : undefined;
      },
      what,
      timeoutMs,
    );

  function makeConfig(risPort: number) {
    return buildConfig({
      dicom: { port: 0, stableAfterSeconds: 0.2 },
      hl7: { port: 0, ris: { host: '127.0.0.1', port: risPort } },
      http: { port: 0 },
      storage: { dir: path.join(tmp.dir, 'data'), minFreeMb: 0 },
      database: { url: testDatabaseUrl(path.join(tmp.dir, 'gw.db')) },
      destinations: [{ id: 'pool', type: 'dimse', host: '127.0.0.1', port: pool.port, aeTitle: 'POOL' }],
      readers: [
        { id: 'dr-a', name: 'Ada Reader', subspecialties: ['oncology'], modalities: ['CT'], destination: 'pool', maxOpenCases: 20 },
        { id: 'dr-b', name: 'Ben Reader', subspecialties: ['oncology'], modalities: ['CT', 'MR'], destination: 'pool', maxOpenCases: 20 },
      ],
      assignment: { strategy: 'gateway' },
      forwarding: { pollIntervalSeconds: 0.1 },
      writeBack: { ackTimeoutSeconds: 1, backoffBaseSeconds: 0.1, backoffMaxSeconds: 0.3, pollIntervalSeconds: 0.1, maxAttempts: 100 },
      escalation: { webhook: { url: `http://127.0.0.1:${hookPort}/qa` }, hl7: { host: '127.0.0.1', port: qa.port } },
      auth: {
        tokens: [
          { token: T.admin, role: 'admin', name: 'alice' },
          { token: T.system, role: 'system', name: 'pool-system' },
          { token: T.drA, role: 'reader', readerId: 'dr-a', name: 'ada' },
          { token: T.drB, role: 'reader', readerId: 'dr-b', name: 'ben' },
        ],
      },
    });
  }

  async function startGateway(risPort = ris.port): Promise<void> {
    gw = createGateway(makeConfig(risPort), { logger: silentLogger });
    await gw.start();
    base = `http://127.0.0.1:${gw.ports().http}`;
    hl7 = await RawMllpPeer.connect(gw.ports().hl7);
  }

  async function stopGateway(): Promise<void> {
    hl7.socket.destroy();
    await gw.stop();
  }

  /** PACS pushes a study (DCMTK storescu when installed), the RIS sends order and final report; returns the case once it awaits its read. */
  async function flaggedCase(): Promise<{ caseId: string; study: GeneratedStudy; accession: string; mrn: string }> {
    const i = ++n;
    const accession = `ACC-FLOW-${i}`;
    const mrn = `MRN-FLOW-${i}`;
    const study = generateStudy(path.join(tmp.dir, `study-${i}`), {
      instances: 4,
      series: 1,
      rows: 32,
      columns: 32,
      accessionNumber: accession,
      patientId: mrn,
      modality: 'CT',
    });
    const stable = new Promise<void>((resolve) => gw.studies.subscribe({ onStable: (uid) => (uid === study.studyInstanceUid ? resolve() : undefined) }));
    if (hasDcmtk()) {
      const r = await runDcmtk('storescu', [
        '-aet',
        'PACS1',
        '-aec',
        'SECONDREAD',
        '127.0.0.1',
        String(gw.ports().dicom),
        ...study.instances.map((x) => x.path),
      ]);
      expect(r.code, r.stderr).to.equal(0);
    } else {
      const r = await storeFiles(
        { host: '127.0.0.1', port: gw.ports().dicom, callingAe: 'PACS1', calledAe: 'SECONDREAD' },
        study.instances.map((x) => x.path),
      );
      expect(r.statuses.every((s) => s === 0)).to.equal(true);
    }
    await stable;
    for (const msg of [
      ormO01({ accession, patientId: mrn, controlId: `ORM-${i}` }),
      oruR01({ accession, patientId: mrn, controlId: `ORU-${i}` }, { status: 'F', radiologist: 'RAD7' }),
    ]) {
      const ack = await hl7.send(msg);
      expect(ack.code, ack.text).to.equal('AA');
    }
    const uid = study.studyInstanceUid;
    const caseId = await eventually(async () => {
      const s = (await call('GET', `/api/studies/${uid}`, T.admin)).body;
      return (s['caseId'] as string | null) ?? undefined;
    }, 'the case');
    await caseWhen(caseId, 'forwarding to the pool', (c) => c.state === 'awaiting-read');
    return { caseId, study, accession, mrn };
  }

  before(async () => {
    tmp = makeTempDir();
    hookServer = http.createServer((req, res) => {
      let body = '';
      req.on('data', (d: Buffer) => (body += d.toString()));
      req.on('end', () => {
        hooks.push(JSON.parse(body) as { event: string; caseId: string });
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => hookServer.listen(0, '127.0.0.1', r));
    hookPort = (hookServer.address() as { port: number }).port;
    pool = new PoolScp(path.join(tmp.dir, 'pool'));
    await pool.start();
    ris = new TestRis();
    await ris.start();
    qa = new TestRis();
    await qa.start();
    await startGateway();
  });
  after(async () => {
    await stopGateway();
    await ris.stop();
    await qa.stop();
    await pool.close();
    hookServer.close();
    tmp.cleanup();
  });

  it('closes the loop: study, order and report in; rule flags; forwarded; reader reports; the RIS gets the ORU with accession, patient id, score and text', async () => {
    const { caseId, accession, mrn, study } = await flaggedCase();
    const c = await getCase(caseId);
    expect(c.readerId).to.equal('dr-a');
    expect(pool.stores.filter((s) => s.studyInstanceUid === study.studyInstanceUid)).to.have.length(4);
    // The reader sees only their own case.
    expect(((await call('GET', '/api/cases', T.drA)).body['items'] as { id: string }[]).map((x) => x.id)).to.include(caseId);
    expect(((await call('GET', '/api/cases', T.drB)).body['items'] as { id: string }[]).map((x) => x.id)).to.not.include(caseId);
    expect((await call('GET', `/api/cases/${caseId}`, T.drB)).status).to.equal(403);
    expect((await call('POST', `/api/cases/${caseId}/report`, T.drB, { text: 'x', radpeerScore: '1' })).status).to.equal(403);

    const before = ris.received.length;
    const text = 'FINDINGS: Mass 2.1 | 2.3 cm ^ stable ~ no change \\ see & compare.\nIMPRESSION: Missed nodal metastasis.';
    const posted = await call('POST', `/api/cases/${caseId}/report`, T.drA, { text, radpeerScore: '2b' });
    expect(posted.status, JSON.stringify(posted.body)).to.equal(201);
    const done = await caseWhen(caseId, 'written back', (x) => x.state === 'written-back');
    expect(done.discrepant).to.equal(true);
    expect(done.writeBack).to.deep.include({ state: 'accepted', attempts: 1 });

    const oru = ris.received.slice(before).find((m) => m.includes('ORU^R01'))!;
    const m = Hl7Message.parse(oru);
    expect(m.get('MSH-10')).to.equal(done.writeBack!.controlId);
    expect(m.get('PID-3.1')).to.equal(mrn);
    expect(m.get('OBR-3.1')).to.equal(accession);
    expect(m.get('OBR-25')).to.equal('F');
    expect(m.get('OBR-32.1.1')).to.equal('dr-a');
    expect(m.get('ZDS-1.1')).to.equal(study.studyInstanceUid);
    const obx = m.all('OBX');
    const values = obx.map((s) => ({ code: m.read(s, { field: 3 }), value: m.text(m.rawField(s, 5)) }));
    expect(values.find((v) => v.code === 'RADPEER')?.value).to.match(/^2b/);
    expect(values.find((v) => v.code === 'SRCONC')?.value).to.equal('DISCORDANT');
    const lines = values.filter((v) => v.code === '18782-3').map((v) => v.value);
    expect(lines.join('\n')).to.equal(text);
    expect(oru).to.include('\\F\\').and.include('\\S\\').and.include('\\R\\').and.include('\\E\\').and.include('\\T\\');

    // Discrepant: QA hears of it.
    await eventually(() => hooks.find((h) => h.event === 'discrepant' && h.caseId === caseId), 'the QA webhook');
    const qaMessage = await eventually(() => qa.received.find((m) => m.includes(caseId)), 'the QA HL7 message');
    expect(Hl7Message.parse(qaMessage).get('OBX-5')).to.match(/^discrepant: case/);
    expect(qaMessage).to.not.include(mrn);

    // A second report on the closed case is refused; an addendum is a new version, written back too.
    expect((await call('POST', `/api/cases/${caseId}/report`, T.drA, { text: 'again', radpeerScore: '1' })).status).to.equal(409);
    const add = await call('POST', `/api/cases/${caseId}/report`, T.drA, { text: 'Addendum: nodes re-measured.', radpeerScore: '2b', addendum: true });
    expect(add.status).to.equal(201);
    const again = await caseWhen(caseId, 'addendum written back', (x) => x.state === 'written-back' && x.secondReport?.version === 2);
    expect(again.writeBack!.controlId).to.not.equal(done.writeBack!.controlId);
  });

  it('refuses bad reports with every problem listed, and the first reader as second reader', async () => {
    const { caseId } = await flaggedCase();
    const bad = await call('POST', `/api/cases/${caseId}/report`, T.system, { text: '', radpeerScore: '4', foo: 1 });
    expect(bad.status).to.equal(400);
    const paths = (bad.body['error'] as { details: { errors: { path: string }[] } }).details.errors.map((e) => e.path);
    expect(paths).to.include.members(['text', 'radpeerScore', 'foo']);
    const self = await call('POST', `/api/cases/${caseId}/report`, T.system, { text: 'ok', radpeerScore: '1', readerId: 'RAD7' });
    expect(self.status).to.equal(409);
    expect((self.body['error'] as { message: string }).message).to.match(/first reader/);
    expect((await call('POST', `/api/cases/${caseId}/report`, T.admin, { text: 'ok', radpeerScore: '1' })).status).to.equal(403);
  });

  it('retries after AE with the same MSH-10, and an AR fails the write-back visibly without retrying', async () => {
    const a = await flaggedCase();
    ris.script.push('AE', 'AE');
    const before = ris.received.length;
    expect((await call('POST', `/api/cases/${a.caseId}/report`, T.system, { text: 'Concur.', radpeerScore: '1', readerId: 'dr-b' })).status).to.equal(201);
    const ok = await caseWhen(a.caseId, 'written back after AE', (x) => x.state === 'written-back');
    expect(ok.writeBack!.attempts).to.equal(3);
    const sent = ris.received.slice(before).map((m) => Hl7Message.parse(m).get('MSH-10'));
    expect(sent).to.deep.equal([ok.writeBack!.controlId, ok.writeBack!.controlId, ok.writeBack!.controlId]);

    const b = await flaggedCase();
    ris.script.push('AR');
    const beforeB = ris.received.length;
    await call('POST', `/api/cases/${b.caseId}/report`, T.system, { text: 'Concur.', radpeerScore: '1', readerId: 'dr-b' });
    const failed = await caseWhen(b.caseId, 'write-back refused', (x) => x.state === 'failed');
    expect(failed.writeBack).to.deep.include({ state: 'failed', attempts: 1 });
    expect(failed.writeBack!.lastError).to.match(/AR/);
    // Two more passes of the write-back queue: an AR'd message is not pending, so nothing is resent.
    await gw.outbound.idle();
    await gw.outbound.tick();
    await gw.outbound.tick();
    expect(ris.received.length - beforeB).to.equal(1);
  });

  it('holds the write-back while the RIS is down and delivers it when it is back, also across a gateway restart', async () => {
    const { caseId } = await flaggedCase();
    await ris.stop();
    expect((await call('POST', `/api/cases/${caseId}/report`, T.system, { text: 'Concur.', radpeerScore: '1', readerId: 'dr-b' })).status).to.equal(201);
    const waiting = await caseWhen(caseId, 'failed attempts', (x) => (x.writeBack?.attempts ?? 0) >= 2);
    expect(waiting.state).to.equal('reported');
    expect(waiting.writeBack!.lastError).to.match(/connect|closed/);
    await stopGateway();
    await ris.start(ris.port);
    await startGateway();
    const done = await caseWhen(caseId, 'written back after restart', (x) => x.state === 'written-back');
    expect(done.writeBack!.state).to.equal('accepted');
  });

  it('a first SLA breach goes to another reader with a fresh SLA', async () => {
    const { caseId } = await flaggedCase();
    const first = (await getCase(caseId)).readerId!;
    await gw.db.updateTable('cases').set({ due_at: '2000-01-01T00:00:00.000Z' }).where('id', '=', caseId).execute();
    const r = await gw.readers.checkSla();
    expect(r.reassigned).to.equal(1);
    const after = (await call('GET', `/api/cases/${caseId}`, T.admin)).body as unknown as CaseBody & { dueAt: string; slaBreachedAt: string };
    expect(after.readerId).to.not.equal(first);
    expect(after.escalationLevel).to.equal(1);
    expect(after.slaBreachedAt).to.be.a('string');
    expect(Date.parse(after.dueAt)).to.be.greaterThan(Date.now());
    // Nothing more to do until the new due time passes.
    expect(await gw.readers.checkSla()).to.deep.equal({ reassigned: 0, notified: 0 });
  });

  it('a case held before any delivery (no reader reads US) can be retried: it goes back to be planned', async () => {
    const i = ++n;
    const accession = `ACC-FLOW-US-${i}`;
    // The generator makes CT or MR images; only the Modality attribute (US, which no reader reads) matters here.
    const study = generateStudy(path.join(tmp.dir, `study-us-${i}`), {
      instances: 2,
      series: 1,
      rows: 16,
      columns: 16,
      accessionNumber: accession,
      patientId: `MRN-US-${i}`,
      modality: 'US' as 'MR',
    });
    const r = await storeFiles(
      { host: '127.0.0.1', port: gw.ports().dicom, callingAe: 'PACS1', calledAe: 'SECONDREAD' },
      study.instances.map((x) => x.path),
    );
    expect(r.statuses.every((s) => s === 0)).to.equal(true);
    const created = await call('POST', '/api/cases', T.admin, { studyInstanceUid: study.studyInstanceUid, reason: 'QA asked for it' });
    expect(created.status, JSON.stringify(created.body)).to.equal(201);
    const caseId = created.body['id'] as string;
    const held = await caseWhen(caseId, 'held for want of a reader', (c) => c.state === 'held');
    expect(held.deliveries).to.deep.equal([]);
    const retried = await call('POST', `/api/cases/${caseId}/retry`, T.admin);
    expect(retried.status, JSON.stringify(retried.body)).to.equal(200);
    // Back to flagged by the retry, planned again, and held again (still nobody reads US): two holds around it.
    const audit = (await call('GET', `/api/audit?entityType=case&entityId=${caseId}`, T.admin)).body['items'] as {
      action: string;
      actor: string;
      details?: { from?: string };
    }[];
    const actions = audit.map((a) => `${a.action} by ${a.actor}`).reverse();
    expect(actions.slice(0, 2)).to.deep.equal(['case.created by alice', 'case.held by forwarding']);
    expect(actions).to.include('case.flagged by alice');
    await eventually(async () => {
      const items = (await call('GET', `/api/audit?entityType=case&entityId=${caseId}`, T.admin)).body['items'] as { action: string }[];
      return items.filter((a) => a.action === 'case.held').length === 2 ? true : undefined;
    }, 'held again after the retry');
  });

  it('a decline reassigns; an SLA breach reassigns, a second one notifies QA', async () => {
    const { caseId } = await flaggedCase();
    const c = await getCase(caseId);
    const first = c.readerId!;
    const token = first === 'dr-a' ? T.drA : T.drB;
    const declined = await call('POST', `/api/cases/${caseId}/decline`, token, { reason: 'conflict of interest' });
    expect(declined.status).to.equal(200);
    const second = (await getCase(caseId)).readerId!;
    expect(second).to.not.equal(first);

    await gw.db.updateTable('cases').set({ due_at: '2000-01-01T00:00:00.000Z' }).where('id', '=', caseId).execute();
    // Both readers have had the case: the breach cannot be reassigned, so it is announced.
    const r = await gw.readers.checkSla();
    expect(r.notified).to.equal(1);
    const after = await getCase(caseId);
    expect(after.escalationLevel).to.equal(2);
    await eventually(() => hooks.find((h) => h.event === 'sla-breach' && h.caseId === caseId), 'the SLA webhook');
    const audit = (await call('GET', `/api/audit?entityType=case&entityId=${caseId}`, T.admin)).body['items'] as { action: string }[];
    expect(audit.map((x) => x.action)).to.include.members(['case.assigned', 'case.declined', 'case.sla-breached']);
    const metrics = await (await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${T.admin}` } })).text();
    expect(metrics).to.match(/gateway_sla_breached_cases\{[^}]*\} [1-9]/);
    expect(metrics).to.match(/gateway_outbound_messages\{[^}]*kind="write-back"[^}]*state="accepted"[^}]*\} [1-9]/);
  });

  it("writes back to an independent RIS (python-hl7's MLLP server), which parses our ORU", async function () {
    if (!havePythonHl7Server()) {
      console.log('      skipped: python3-hl7 is not installed (apt-get install python3-hl7)');
      this.skip();
    }
    const py = await PythonMllpServer.start();
    try {
      await stopGateway();
      await startGateway(py.port);
      const { caseId, accession, mrn, study } = await flaggedCase();
      await call('POST', `/api/cases/${caseId}/report`, T.system, { text: 'Line one | pipe\nLine two', radpeerScore: '3a', readerId: 'dr-b' });
      await caseWhen(caseId, 'written back to python', (x) => x.state === 'written-back');
      const seen = py.seen.at(-1)!;
      expect(seen.pid3.split('^')[0]).to.equal(mrn);
      expect(seen.obr3.split('^')[0]).to.equal(accession);
      expect(seen.zds1.split('^')[0]).to.equal(study.studyInstanceUid);
      expect(seen.obx.find((o) => o.code === 'RADPEER')?.valueCode).to.equal('3a');
      expect(seen.obx.find((o) => o.code === 'SRCONC')?.value).to.equal('DISCORDANT');
      expect(seen.obx.filter((o) => o.code === '18782-3').map((o) => o.value)).to.deep.equal(['Line one | pipe', 'Line two']);
    } finally {
      await stopGateway();
      await py.stop();
      await startGateway();
    }
  });
});
