import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import dcmjs from 'dcmjs';
import { generateStudy } from '../../scripts/lib/study-generator.js';
import { buildConfig } from '../../src/config/load.js';
import { createGateway, type Gateway } from '../../src/gateway.js';
import { hasDcmtk, rawFromPart10, storeFiles } from '../helpers/dicom-peers.js';
import { eventually } from '../helpers/eventually.js';
import { RawMllpPeer, silentLogger } from '../helpers/hl7-peers.js';
import { orthancUnavailable, startOrthanc, type OrthancPeer } from '../helpers/orthanc.js';
import { PHI, SOP, writePhiStudy, type PhiStudy } from '../helpers/phi-study.js';
import { startStorescp, type Storescp } from '../helpers/storescp.js';
import { makeTempDir, testDatabaseUrl } from '../helpers/tmp.js';

/**
 * De-identified forwarding end to end: a study laden with identifiers (CT
 * images, an SR, an Encapsulated PDF requisition, a CT dose screen saved as
 * Secondary Capture) goes through the whole gateway to a real DCMTK storescp
 * and to Orthanc's DICOMweb. The received files are the evidence: no byte of
 * any identifier in them, the images there, the risky instances listed as
 * excluded with reasons, a released one sent. An identifier the profile keeps
 * (a private element marked safe) is stopped by the verifier before it leaves.
 */

const admin = 'admin-token-0123456789abcdef';
const qa = 'qa-token-0123456789abcdef-qa';

interface Excluded {
  sopInstanceUid: string;
  sopClassUid: string;
  seriesDescription: string | null;
  reason: string;
  detail: string | null;
  destinationId: string;
}
interface CaseBody {
  id: string;
  state: string;
  deliveries: { destinationId: string; state: string; lastError: string | null; instancesTotal: number; instancesSent: number }[];
  excludedInstances: Excluded[];
}

/** Every spelling a leak could take: as planted, upper and lower case, PN carets as spaces. */
function spellings(secret: string): string[] {
  return [...new Set([secret, secret.toUpperCase(), secret.toLowerCase(), secret.replace(/\^/g, ' '), secret.replace(/\^/g, ', ')])].filter(
    (s) => s.length >= 4,
  );
}

/** The secrets whose bytes (latin1 or UTF-8) occur anywhere in `bytes`. */
function leaks(bytes: Buffer, secrets: readonly string[]): string[] {
  const found: string[] = [];
  for (const s of secrets) {
    for (const v of spellings(s)) {
      if (bytes.includes(Buffer.from(v, 'latin1')) || bytes.includes(Buffer.from(v, 'utf8'))) {
        found.push(v);
        break;
      }
    }
  }
  return found;
}

/** A hand-made ORM^O01 (HL7 2.3 chapter 4) for the study: the RIS knows the patient by more than the DICOM header says. */
function orm(o: {
  controlId: string;
  patientId: string;
  issuer: string;
  name: string;
  birthDate: string;
  accession: string;
  studyUid: string;
  phone: string;
  otherId: string;
  address: string;
}): string {
  return (
    [
      `MSH|^~\\&|RIS|ZEBEDEE|SECONDREAD|GW|20260301101500||ORM^O01|${o.controlId}|P|2.3`,
      `PID|1||${o.patientId}^^^${o.issuer}^MR~${o.otherId}^^^NATIONAL^NH||${o.name}||${o.birthDate}|M|||${o.address}^^ZEBEDEEVILLE^^ZB1 7QQ||${o.phone}`,
      'PV1|1|O|RAD^^^ZEB||||9911^YQUELLDOC^URSULA',
      `ORC|NW|PLC-${o.accession}|FIL-${o.accession}||SC||||20260301100000|||9911^YQUELLDOC^URSULA`,
      `OBR|1|PLC-${o.accession}|${o.accession}|CTCHEST^CT Chest^L|||20260301100000|||||||||9911^YQUELLDOC^URSULA||${o.accession}||||||CT`,
      `ZDS|${o.studyUid}^SECONDREAD^Application^DICOM`,
    ].join('\r') + '\r'
  );
}

/** Puts a private block that the config marks safe into a stored file, with `value` in it (what the profile keeps). */
function plantSafePrivate(file: string, value: string): void {
  const bytes = readFileSync(file);
  const dict = dcmjs.data.DicomMessage.readFile(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length) as ArrayBuffer);
  dict.dict['00190010'] = { vr: 'LO', Value: ['ZEBPLANT SAFE'] };
  dict.dict['00191010'] = { vr: 'LO', Value: [value] };
  writeFileSync(file, Buffer.from(dict.write()));
}

describe('de-identified forwarding: per-instance exclusion, release and verification before sending', function () {
  this.timeout(180_000);
  let tmp: ReturnType<typeof makeTempDir>;
  let scp: Storescp;
  let orthanc: OrthancPeer | undefined;
  let gw: Gateway;
  let base: string;
  let skipped: string | undefined;

  const call = async (method: string, p: string, body?: unknown, token = admin) => {
    const res = await fetch(`${base}${p}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: (res.headers.get('content-type')?.includes('json') ? JSON.parse(text) : text) as Record<string, unknown> };
  };
  const caseWhen = (id: string, what: string, ok: (c: CaseBody) => boolean, timeoutMs = 30_000) =>
    eventually(
      async () => {
        const c = (await call('GET', `/api/cases/${id}`)).body as unknown as CaseBody;
        return ok(c) ? c : undefined;
      },
      what,
      timeoutMs,
    );

  async function push(studyUid: string, files: string[]): Promise<void> {
    const stable = new Promise<void>((resolve) => gw.studies.subscribe({ onStable: (uid) => (uid === studyUid ? resolve() : undefined) }));
    const r = await storeFiles({ host: '127.0.0.1', port: gw.ports().dicom, callingAe: 'PACS1', calledAe: 'SECONDREAD' }, files);
    expect(
      r.statuses.every((s) => s === 0),
      `C-STORE statuses ${r.statuses.join(',')}`,
    ).to.equal(true);
    await stable;
  }
  async function sendHl7(text: string): Promise<void> {
    const peer = await RawMllpPeer.connect(gw.ports().hl7);
    const ack = await peer.send(text);
    expect(ack.code, ack.text).to.equal('AA');
    peer.socket.destroy();
  }
  async function request(studyUid: string, destinationId: string): Promise<CaseBody> {
    const r = await call('POST', '/api/cases', { studyInstanceUid: studyUid, reason: 'de-identified second read', destinationId });
    expect(r.status, JSON.stringify(r.body)).to.equal(201);
    return r.body as unknown as CaseBody;
  }

  before(async function () {
    if (!hasDcmtk()) {
      skipped = 'DCMTK (storescp) is not installed';
      console.log(`skipped: ${skipped}`);
      this.skip();
    }
    tmp = makeTempDir();
    scp = await startStorescp('ANONPOOL');
    const why = orthancUnavailable();
    if (why) console.log(`skipped (Orthanc part): ${why}`);
    else orthanc = await startOrthanc();
    gw = createGateway(
      buildConfig({
        dicom: { port: 0, stableAfterSeconds: 0.3 },
        hl7: { port: 0 },
        http: { port: 0 },
        storage: { dir: path.join(tmp.dir, 'data'), minFreeMb: 0 },
        database: { url: testDatabaseUrl(path.join(tmp.dir, 'gw.db')) },
        destinations: [
          { id: 'dcmtk-anon', type: 'dimse', host: '127.0.0.1', port: scp.port, aeTitle: 'ANONPOOL', deidentify: true, batchSize: 3 },
          ...(orthanc ? [{ id: 'web-anon', type: 'dicomweb' as const, url: orthanc.dicomwebUrl, deidentify: true }] : []),
        ],
        rules: [],
        forwarding: {
          pollIntervalSeconds: 0.1,
          backoffBaseSeconds: 0.2,
          backoffMaxSeconds: 0.5,
          deidentification: { safePrivateTags: ['0019xx10@ZEBPLANT SAFE'] },
        },
        auth: {
          tokens: [
            { token: admin, role: 'admin', name: 'alice' },
            { token: qa, role: 'qa', name: 'quinn' },
          ],
        },
      }),
      { logger: silentLogger },
    );
    await gw.start();
    base = `http://127.0.0.1:${gw.ports().http}`;
  });
  after(async () => {
    if (skipped) return;
    await gw?.stop();
    await scp?.stop();
    await orthanc?.stop();
    tmp?.cleanup();
  });

  let study: PhiStudy;
  let caseId: string;

  it('to DCMTK storescp: the CT images and the cleaned SR arrive without a byte of any identifier; the PDF and the dose screen are listed as excluded', async () => {
    study = writePhiStudy(path.join(tmp.dir, 'phi-dimse'));
    await sendHl7(
      orm({
        controlId: 'ZEB-ORM-1',
        patientId: PHI.patientId,
        issuer: PHI.issuer,
        name: PHI.patientName,
        birthDate: PHI.birthDate,
        accession: PHI.accession,
        studyUid: study.studyInstanceUid,
        phone: PHI.phone,
        otherId: PHI.otherPatientId,
        address: PHI.patientAddress,
      }),
    );
    await push(
      study.studyInstanceUid,
      study.files.map((f) => f.path),
    );
    const c = await request(study.studyInstanceUid, 'dcmtk-anon');
    caseId = c.id;
    const done = await caseWhen(c.id, 'the de-identified delivery', (x) => x.state === 'awaiting-read');
    const received = scp.received();
    const cts = study.files.filter((f) => f.kind === 'ct');
    const sr = study.files.find((f) => f.kind === 'sr')!;
    expect(received.size, 'CT images and the SR').to.equal(cts.length + 1);
    expect([...received.values()].filter((b) => rawFromPart10(b).sopClassUid === SOP.ct)).to.have.length(cts.length);
    const srOut = [...received.values()].find((b) => rawFromPart10(b).sopClassUid === sr.sopClassUid);
    expect(srOut, 'the SR arrived').to.not.equal(undefined);
    for (const [sop, bytes] of received) {
      expect(leaks(bytes, study.secrets), `identifiers in received ${sop}`).to.deep.equal([]);
      expect(bytes.includes(Buffer.from(study.studyInstanceUid, 'latin1')), 'the real StudyInstanceUID').to.equal(false);
    }
    expect(done.deliveries[0]).to.deep.include({ state: 'delivered', instancesSent: cts.length + 1, instancesTotal: study.files.length });
    const byReason = Object.fromEntries(done.excludedInstances.map((e) => [e.sopInstanceUid, e.reason]));
    for (const f of study.files.filter((x) => x.risk)) expect(byReason[f.sopInstanceUid], f.kind).to.equal(f.risk);
    expect(done.excludedInstances).to.have.length(2);
    expect(done.excludedInstances.every((e) => e.destinationId === 'dcmtk-anon' && e.sopClassUid.length > 0)).to.equal(true);
  });

  it('releasing the dose screen (QA, audited) sends it, de-identified and verified; the PDF stays excluded', async () => {
    const sc = study.files.find((f) => f.kind === 'sc-dose')!;
    const r = await call('POST', `/api/cases/${caseId}/excluded/${sc.sopInstanceUid}/release`, { reason: 'looked at it: dose numbers only' }, qa);
    expect(r.status, JSON.stringify(r.body)).to.equal(200);
    await eventually(async () => (scp.received().size === 5 ? true : undefined), 'the released instance at storescp', 30_000);
    const scOut = [...scp.received().values()].find((b) => rawFromPart10(b).sopClassUid === SOP.sc)!;
    expect(leaks(scOut, study.secrets)).to.deep.equal([]);
    const after = await caseWhen(caseId, 'delivered again', (x) => x.deliveries[0]?.state === 'delivered' && x.deliveries[0].instancesSent === 5);
    expect(after.state).to.equal('awaiting-read');
    expect(after.excludedInstances.map((e) => e.reason)).to.deep.equal(['encapsulated-document']);
    const audit = (await call('GET', `/api/audit?entityType=case&entityId=${caseId}`)).body['items'] as {
      action: string;
      actor: string;
      details: Record<string, unknown> | null;
    }[];
    const release = audit.find((a) => a.action === 'case.excluded-instance-released');
    expect(release?.actor).to.equal('quinn');
    expect(release?.details).to.deep.include({ sopInstanceUid: sc.sopInstanceUid, reason: 'looked at it: dose numbers only' });
    // Again: it is no longer excluded. Unknown instance: 404.
    expect((await call('POST', `/api/cases/${caseId}/excluded/${sc.sopInstanceUid}/release`, {}, qa)).status).to.equal(409);
    expect((await call('POST', `/api/cases/${caseId}/excluded/1.2.3.4.5/release`, {}, qa)).status).to.equal(404);
    expect((await call('POST', `/api/cases/no-such-case/excluded/1.2.3.4.5/release`, {}, qa)).status).to.equal(404);
  });

  it('an identifier the profile keeps (a private block marked safe) is caught by the verifier: phi-detected, not sent, counted, audited with the path and not the value', async () => {
    const g = generateStudy(path.join(tmp.dir, 'planted'), {
      instances: 3,
      series: 1,
      rows: 16,
      columns: 16,
      patientName: 'PLANTPERSON^OSWALD',
      patientId: 'MRN-PLANT-0042',
      accessionNumber: 'ACC-PLANT-0042',
    });
    const phone = '555-0199-3217';
    // One instance carries the patient id (known from its own header); another a phone number only the RIS knows.
    plantSafePrivate(g.instances[0]!.path, `legacy id MRN-PLANT-0042`);
    plantSafePrivate(g.instances[1]!.path, `call back ${phone}`);
    await sendHl7(
      orm({
        controlId: 'ZEB-ORM-2',
        patientId: 'MRN-PLANT-0042',
        issuer: 'PLANTHOSP',
        name: 'PLANTPERSON^OSWALD',
        birthDate: '19700101',
        accession: 'ACC-PLANT-0042',
        studyUid: g.studyInstanceUid,
        phone,
        otherId: 'NAT-PLANT-9',
        address: '9 PLANTAIN ROAD',
      }),
    );
    const before = scp.received().size;
    await push(
      g.studyInstanceUid,
      g.instances.map((i) => i.path),
    );
    const c = await request(g.studyInstanceUid, 'dcmtk-anon');
    const done = await caseWhen(c.id, 'the delivery', (x) => x.state === 'awaiting-read');
    expect(done.deliveries[0]).to.deep.include({ state: 'delivered', instancesSent: 1 });
    expect(done.excludedInstances.map((e) => [e.sopInstanceUid, e.reason]).sort()).to.deep.equal(
      [
        [g.instances[0]!.sopInstanceUid, 'phi-detected'],
        [g.instances[1]!.sopInstanceUid, 'phi-detected'],
      ].sort(),
    );
    const received = [...scp.received().values()].slice(0);
    expect(received.length - before).to.equal(1);
    for (const b of received) expect(leaks(b, ['MRN-PLANT-0042', phone, 'PLANTPERSON'])).to.deep.equal([]);
    const audit = (await call('GET', `/api/audit?entityType=case&entityId=${c.id}`)).body['items'] as {
      action: string;
      details: Record<string, unknown> | null;
    }[];
    const rows = audit.filter((a) => a.action === 'case.instance-excluded');
    expect(rows).to.have.length(2);
    const text = JSON.stringify(rows);
    expect(text).to.match(/0019/);
    // the phone number is known only from the order (PID-13): the verifier was seeded with the HL7 identifiers
    expect(text).to.match(/\(phone\)/);
    expect(text).to.not.include('MRN-PLANT-0042');
    expect(text).to.not.include(phone);
    // any part of the number that could not occur by chance in ids and times (which may contain "555")
    expect(text).to.not.include('0199-3217');
    expect(text).to.not.include('01993217');
    expect(rows.map((a) => a.details?.['paths'])).to.satisfy((p: unknown[]) => p.every((x) => Array.isArray(x) && x.length > 0));
    const metrics = (await call('GET', '/metrics')).body as unknown as string;
    expect(
      metrics,
      metrics
        .split('\n')
        .filter((l) => l.includes('deid'))
        .join('\n'),
    ).to.match(/gateway_deid_phi_detected_total\{destination_id="dcmtk-anon"[^}]*\} 2/);
    // It can never pass the verifier: a release is refused with the reason.
    const r = await call('POST', `/api/cases/${c.id}/excluded/${g.instances[0]!.sopInstanceUid}/release`, {}, qa);
    expect(r.status).to.equal(409);
    expect(JSON.stringify(r.body)).to.match(/identifier/);
  });

  it("to Orthanc's DICOMweb: the same, judged on what Orthanc stored", async function () {
    if (!orthanc) {
      console.log('skipped: Orthanc is not available');
      this.skip();
    }
    const s = writePhiStudy(path.join(tmp.dir, 'phi-web'));
    await push(
      s.studyInstanceUid,
      s.files.map((f) => f.path),
    );
    const c = await request(s.studyInstanceUid, 'web-anon');
    const done = await caseWhen(c.id, 'the STOW-RS delivery', (x) => x.state === 'awaiting-read');
    const ids = (await (await fetch(`${orthanc!.baseUrl}/instances`)).json()) as string[];
    const files = await Promise.all(ids.map(async (id) => Buffer.from(await (await fetch(`${orthanc!.baseUrl}/instances/${id}/file`)).arrayBuffer())));
    expect(files.filter((b) => rawFromPart10(b).sopClassUid === SOP.ct)).to.have.length(s.files.filter((f) => f.kind === 'ct').length);
    expect(files.filter((b) => rawFromPart10(b).sopClassUid === SOP.comprehensiveSr)).to.have.length(1);
    for (const b of files) expect(leaks(b, s.secrets), `identifiers in ${rawFromPart10(b).sopInstanceUid}`).to.deep.equal([]);
    expect(done.excludedInstances.map((e) => e.reason).sort()).to.deep.equal(['burned-in-risk', 'encapsulated-document']);
    const sc = s.files.find((f) => f.kind === 'sc-dose')!;
    expect((await call('POST', `/api/cases/${c.id}/excluded/${sc.sopInstanceUid}/release`, {}, qa)).status).to.equal(200);
    await eventually(
      async () => {
        const n = ((await (await fetch(`${orthanc!.baseUrl}/instances`)).json()) as string[]).length;
        return n === files.length + 1 ? true : undefined;
      },
      'the released dose screen in Orthanc',
      30_000,
    );
  });
});

describe('de-identified forwarding with exclusionPolicy hold-case', function () {
  this.timeout(120_000);
  let tmp: ReturnType<typeof makeTempDir>;
  let scp: Storescp;
  let gw: Gateway;
  let base: string;
  let skipped = false;

  const call = async (method: string, p: string, body?: unknown) => {
    const res = await fetch(`${base}${p}`, {
      method,
      headers: { authorization: `Bearer ${admin}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: (res.headers.get('content-type')?.includes('json') ? JSON.parse(text) : text) as Record<string, unknown> };
  };
  const caseWhen = (id: string, what: string, ok: (c: CaseBody) => boolean) =>
    eventually(
      async () => {
        const c = (await call('GET', `/api/cases/${id}`)).body as unknown as CaseBody;
        return ok(c) ? c : undefined;
      },
      what,
      30_000,
    );

  before(async function () {
    if (!hasDcmtk()) {
      skipped = true;
      console.log('skipped: DCMTK (storescp) is not installed');
      this.skip();
    }
    tmp = makeTempDir();
    scp = await startStorescp('ANONPOOL');
    gw = createGateway(
      buildConfig({
        dicom: { port: 0, stableAfterSeconds: 0.3 },
        hl7: { port: 0 },
        http: { port: 0 },
        storage: { dir: path.join(tmp.dir, 'data'), minFreeMb: 0 },
        database: { url: testDatabaseUrl(path.join(tmp.dir, 'gw.db')) },
        destinations: [{ id: 'dcmtk-anon', type: 'dimse', host: '127.0.0.1', port: scp.port, aeTitle: 'ANONPOOL', deidentify: true }],
        rules: [],
        forwarding: { pollIntervalSeconds: 0.1, deidentification: { exclusionPolicy: 'hold-case' } },
        auth: { tokens: [{ token: admin, role: 'admin', name: 'alice' }] },
      }),
      { logger: silentLogger },
    );
    await gw.start();
    base = `http://127.0.0.1:${gw.ports().http}`;
  });
  after(async () => {
    if (skipped) return;
    await gw?.stop();
    await scp?.stop();
    tmp?.cleanup();
  });

  it('holds the whole case, listing the risky instances; once each is released the case goes, and the PDF that names the patient is still stopped by the verifier', async () => {
    const s = writePhiStudy(path.join(tmp.dir, 'phi-hold'));
    const stable = new Promise<void>((resolve) => gw.studies.subscribe({ onStable: (uid) => (uid === s.studyInstanceUid ? resolve() : undefined) }));
    const r = await storeFiles(
      { host: '127.0.0.1', port: gw.ports().dicom, callingAe: 'PACS1', calledAe: 'SECONDREAD' },
      s.files.map((f) => f.path),
    );
    expect(r.statuses.every((x) => x === 0)).to.equal(true);
    await stable;
    const created = await call('POST', '/api/cases', { studyInstanceUid: s.studyInstanceUid, reason: 'hold-case', destinationId: 'dcmtk-anon' });
    expect(created.status).to.equal(201);
    const id = (created.body as unknown as CaseBody).id;
    const held = await caseWhen(id, 'the hold', (x) => x.state === 'held');
    expect(held.deliveries[0]!.state).to.equal('held');
    expect(held.excludedInstances.map((e) => e.reason).sort()).to.deep.equal(['burned-in-risk', 'encapsulated-document']);
    expect(scp.received().size).to.equal(0);

    const sc = s.files.find((f) => f.kind === 'sc-dose')!;
    const pdf = s.files.find((f) => f.kind === 'pdf')!;
    // A retry does not send around the listed instances: held again.
    expect((await call('POST', `/api/cases/${id}/retry`)).status).to.equal(200);
    await caseWhen(id, 'held again', (x) => x.state === 'held' && x.deliveries[0]!.state === 'held');
    expect(scp.received().size).to.equal(0);
    expect((await call('POST', `/api/cases/${id}/excluded/${sc.sopInstanceUid}/release`, {})).status).to.equal(200);
    // One still kept back: the case stays held.
    expect(((await call('GET', `/api/cases/${id}`)).body as unknown as CaseBody).state).to.equal('held');
    expect((await call('POST', `/api/cases/${id}/excluded/${pdf.sopInstanceUid}/release`, {})).status).to.equal(200);
    const done = await caseWhen(id, 'the delivery after the releases', (x) => x.state === 'awaiting-read');
    // The released PDF is de-identified with its document copied: the document names the patient, so it does not leave.
    expect(done.excludedInstances.map((e) => [e.sopInstanceUid, e.reason])).to.deep.equal([[pdf.sopInstanceUid, 'phi-detected']]);
    expect(scp.received().size).to.equal(s.files.length - 1);
    for (const b of scp.received().values()) expect(leaks(b, s.secrets)).to.deep.equal([]);
  });
});
