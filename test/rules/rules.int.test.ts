import path from 'node:path';
import { expect } from 'chai';
import { generateStudy } from '../../scripts/lib/study-generator.js';
import { buildConfig } from '../../src/config/load.js';
import { createGateway, type Gateway } from '../../src/gateway.js';
import { storeFiles } from '../helpers/dicom-peers.js';
import { eventually } from '../helpers/eventually.js';
import { RawMllpPeer, silentLogger } from '../helpers/hl7-peers.js';
import { oruR01, ormO01 } from '../helpers/hl7-samples.js';
import { gatewayInTempDir, makeTempDir } from '../helpers/tmp.js';

const tokens = { admin: 'admin-token-0123456789abcdef', qa: 'qa-token-0123456789abcdef', reader: 'reader-token-0123456789abcdef' };

interface CaseBody {
  id: string;
  state: string;
  ruleIds: string[];
  reasons: { ruleId: string; kind: string; detail: string }[];
  priority: string;
  studyInstanceUid: string;
  dueAt: string;
}

describe('rules in the running gateway: decisions, cases, rule versions, dry-run', function () {
  this.timeout(60_000);
  let tmp: ReturnType<typeof makeTempDir>;
  let gw: Gateway;
  let base: string;
  let hl7: RawMllpPeer;
  let control = 0;

  const call = async (method: string, p: string, body?: unknown, token = tokens.admin, contentType = 'application/json') => {
    const res = await fetch(`${base}${p}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': contentType }) },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };

  async function pushStudy(accession: string, patientId: string, modality: 'CT' | 'MR' = 'CT'): Promise<string> {
    const study = generateStudy(path.join(tmp.dir, accession), {
      instances: 2,
      series: 1,
      rows: 32,
      columns: 32,
      accessionNumber: accession,
      patientId,
      modality,
    });
    const stable = new Promise<void>((resolve) => gw.studies.subscribe({ onStable: (uid) => (uid === study.studyInstanceUid ? resolve() : undefined) }));
    const r = await storeFiles(
      { host: '127.0.0.1', port: gw.ports().dicom, callingAe: 'PACS1', calledAe: 'SECONDREAD' },
      study.instances.map((i) => i.path),
    );
    expect(r.statuses).to.deep.equal([0, 0]);
    await stable;
    await gw.decisions.idle();
    return study.studyInstanceUid;
  }

  async function sendHl7(text: string): Promise<void> {
    const ack = await hl7.send(text);
    expect(ack.code, ack.text).to.equal('AA');
  }

  const nextId = () => `CTRL${++control}`;

  before(async () => {
    tmp = makeTempDir();
    gw = createGateway(
      buildConfig({
        ...gatewayInTempDir(tmp.dir),
        // No destination: cases stay `flagged`, so these tests see the rules' outcome, not forwarding's.
        sampling: { secret: 'a-test-sampling-secret-000' },
        auth: {
          tokens: [
            { token: tokens.admin, role: 'admin', name: 'alice-admin' },
            { token: tokens.qa, role: 'qa', name: 'quinn-qa' },
            { token: tokens.reader, role: 'reader', readerId: 'dr-a' },
          ],
        },
      }),
      { logger: silentLogger },
    );
    await gw.start();
    base = `http://127.0.0.1:${gw.ports().http}`;
    hl7 = await RawMllpPeer.connect(gw.ports().hl7);
  });
  after(async () => {
    hl7?.socket.destroy();
    await gw.stop();
    tmp.cleanup();
  });

  it('starts with the shipped config/rules.yaml as version 1', async () => {
    const r = await call('GET', '/api/rules');
    expect(r.status).to.equal(200);
    expect(r.body['version']).to.equal(1);
    expect((r.body['rules'] as { id: string }[]).map((x) => x.id)).to.include.members(['oncology', 'qa-sample']);
    expect((await call('GET', '/api/rules', undefined, tokens.reader)).status).to.equal(403);
  });

  it('flags an oncology study once it is stable and its final report is in, with reasons on the study and a case', async () => {
    const uid = await pushStudy('ONC1', 'MRN-ONC1');
    await sendHl7(ormO01({ accession: 'ONC1', patientId: 'MRN-ONC1', controlId: nextId() }));
    // An order alone decides nothing for non-prospective rules.
    await gw.decisions.idle();
    expect((await call('GET', `/api/studies/${uid}`)).body['caseId']).to.equal(null);

    await sendHl7(oruR01({ accession: 'ONC1', patientId: 'MRN-ONC1', controlId: nextId() }, { status: 'F', radiologist: 'RAD7' }));
    const study = await eventually(async () => {
      const s = (await call('GET', `/api/studies/${uid}`)).body;
      return s['caseId'] ? s : undefined;
    }, 'the case');
    const decision = study['decision'] as { flagged: boolean; reasons: { ruleId: string; detail: string }[]; ruleSetVersion: number };
    expect(decision.flagged).to.equal(true);
    expect(decision.ruleSetVersion).to.equal(1);
    const oncology = decision.reasons.find((r) => r.ruleId === 'oncology');
    expect(oncology?.detail).to.match(/C34\.90/);

    const c = (await call('GET', `/api/cases/${String(study['caseId'])}`)).body as unknown as CaseBody;
    expect(c).to.include({ state: 'flagged', studyInstanceUid: uid, priority: 'urgent' });
    expect(c.ruleIds).to.include('oncology');
    expect(Date.parse(c.dueAt) - Date.now()).to.be.within(3.5 * 3600_000, 4 * 3600_000);
    const listed = (await call('GET', '/api/cases?state=flagged')).body['items'] as CaseBody[];
    expect(listed.map((x) => x.id)).to.include(c.id);
  });

  it('a corrected report after the final adds the discordance reason to the same case', async () => {
    const uid = (await call('GET', '/api/studies?accessionNumber=ONC1')).body['items'] as { studyInstanceUid: string }[];
    const studyUid = uid[0]!.studyInstanceUid;
    const before = (await call('GET', `/api/studies/${studyUid}`)).body['caseId'];
    await sendHl7(oruR01({ accession: 'ONC1', patientId: 'MRN-ONC1', controlId: nextId() }, { status: 'C', radiologist: 'RAD7' }));
    const c = await eventually(async () => {
      const body = (await call('GET', `/api/cases/${String(before)}`)).body as unknown as CaseBody;
      return body.reasons.some((r) => r.kind === 'discordance') ? body : undefined;
    }, 'the discordance reason');
    expect(c.reasons.find((r) => r.kind === 'discordance')?.detail).to.match(/corrected/i);
    expect((await call('GET', `/api/studies/${studyUid}`)).body['caseId']).to.equal(before);
    const audit = (await call('GET', `/api/audit?entityType=case&entityId=${c.id}`)).body['items'] as { action: string }[];
    expect(audit.map((a) => a.action)).to.include.members(['case.created', 'case.reasons-added']);
  });

  it('a routine study with a negative report is evaluated and not flagged (unless sampled)', async () => {
    const uid = await pushStudy('ROUT1', 'MRN-R1', 'MR');
    const report = oruR01(
      { accession: 'ROUT1', patientId: 'MRN-R1', controlId: nextId() },
      { status: 'F', radiologist: 'RAD9', lines: ['Normal MRI of the knee.', 'IMPRESSION: No abnormality.'] },
    ).replace('C34.90^Malignant neoplasm of lung^I10', 'M25.561^Pain in right knee^I10');
    await sendHl7(report);
    const study = await eventually(async () => {
      const s = (await call('GET', `/api/studies/${uid}`)).body;
      return s['decision'] ? s : undefined;
    }, 'a decision');
    const decision = study['decision'] as { flagged: boolean; reasons: { kind: string }[] };
    expect(decision.reasons.every((r) => r.kind === 'sampling')).to.equal(true);
    expect(study['caseId'] !== null).to.equal(decision.flagged);
    // The draw was counted: the quota table shows this radiologist's MR bucket.
    const sampling = (await call('GET', '/api/sampling', undefined, tokens.qa)).body['items'] as { radiologistId: string; modality: string; seen: number }[];
    expect(sampling.find((b) => b.radiologistId === 'RAD9' && b.modality === 'MR')?.seen).to.equal(1);
  });

  it('manual requests: 201 with a new case, 200 adding the reason to the open case, clear errors', async () => {
    const uid = await pushStudy('MAN1', 'MRN-M1');
    const first = await call('POST', '/api/cases', { studyInstanceUid: uid, reason: 'Clinician asks for a second opinion', priority: 'stat' }, tokens.qa);
    expect(first.status).to.equal(201);
    const c = first.body as unknown as CaseBody;
    expect(c.priority).to.equal('stat');
    expect(c.reasons.map((r) => r.kind)).to.deep.equal(['manual']);
    expect(c.reasons[0]!.detail).to.include('Clinician asks for a second opinion');

    const second = await call('POST', '/api/cases', { accessionNumber: 'MAN1', reason: 'Tumour board review' }, tokens.admin);
    expect(second.status).to.equal(200);
    expect((second.body as unknown as CaseBody).id).to.equal(c.id);
    expect((second.body as unknown as CaseBody).reasons.map((r) => r.detail).join(' ')).to.include('Tumour board review');

    const bad = await call('POST', '/api/cases', { reason: '', priority: 'soon', extra: 1 });
    expect(bad.status).to.equal(400);
    const paths = ((bad.body['error'] as { details: { errors: { path: string }[] } }).details.errors ?? []).map((e) => e.path);
    expect(paths).to.include.members(['studyInstanceUid', 'reason', 'priority', 'extra']);
    expect((await call('POST', '/api/cases', { studyInstanceUid: '1.2.3.999', reason: 'x' })).status).to.equal(404);
    expect((await call('POST', '/api/cases', { studyInstanceUid: uid, reason: 'x', destinationId: 'nowhere' })).status).to.equal(400);
    expect((await call('POST', '/api/cases', { studyInstanceUid: uid, reason: 'x' }, tokens.reader)).status).to.equal(403);
    // A reader sees only their own cases, and none of these is theirs.
    expect((await call('GET', '/api/cases', undefined, tokens.reader)).body['items']).to.deep.equal([]);
    expect((await call('GET', `/api/cases/${c.id}`, undefined, tokens.reader)).status).to.equal(403);
  });

  it('an order flagged for a second opinion (OBR-46) opens a case through the manual rule', async () => {
    const uid = await pushStudy('SOP1', 'MRN-S1');
    await sendHl7(ormO01({ accession: 'SOP1', patientId: 'MRN-S1', controlId: nextId() }, { secondOpinion: true }));
    const study = await eventually(async () => {
      const st = (await call('GET', `/api/studies/${uid}`)).body;
      return st['caseId'] ? st : undefined;
    }, 'the second-opinion case');
    const reasons = (study['decision'] as { reasons: { ruleId: string; kind: string }[] }).reasons;
    expect(reasons.map((r) => r.kind)).to.include('manual');
  });

  it('PUT /api/rules: errors point at rule and field; a valid set is a new audited version; the same set again is not', async () => {
    const current = (await call('GET', '/api/rules')).body;
    const rules = current['rules'] as Record<string, unknown>[];

    const invalid = await call(
      'PUT',
      '/api/rules',
      { rules: [...rules, { id: 'oncology', kind: 'oncology', priority: 'whenever', destinaton: 'pool' }] },
      tokens.qa,
    );
    expect(invalid.status).to.equal(400);
    const errors = (invalid.body['error'] as { details: { errors: { path: string; message: string }[] } }).details.errors;
    const paths = errors.map((e) => e.path);
    expect(paths.some((p) => p.startsWith(`rules[${rules.length}].priority`))).to.equal(true);
    expect(paths.some((p) => p.startsWith(`rules[${rules.length}]`) && /destinaton/.test(p + errors.map((e) => e.message).join()))).to.equal(true);

    const yaml = ['rules:', '  - id: high-stakes-only', '    kind: high-stakes', '    priority: stat', '    destination: nowhere'].join('\n');
    const badDest = await call('PUT', '/api/rules', yaml, tokens.qa, 'application/yaml');
    expect(badDest.status).to.equal(400);

    const onlyOncology = rules.filter((r) => r['id'] === 'oncology');
    const saved = await call('PUT', '/api/rules', { rules: onlyOncology, comment: 'oncology only for the pilot' }, tokens.qa);
    expect(saved.status).to.equal(201);
    expect(saved.body['version']).to.equal(2);
    expect((saved.body['change'] as { removed: string[] }).removed).to.include('qa-sample');
    const again = await call('PUT', '/api/rules', { rules: onlyOncology }, tokens.qa);
    expect(again.status).to.equal(200);
    expect(again.body['version']).to.equal(2);

    const versions = (await call('GET', '/api/rules/versions', undefined, tokens.qa)).body['items'] as { version: number; createdBy: string }[];
    expect(versions.map((v) => v.version)).to.deep.equal([2, 1]);
    expect(versions[0]!.createdBy).to.equal('quinn-qa');
    const audit = (await call('GET', '/api/audit?entityType=rule-set')).body['items'] as { action: string; actor: string; details: { comment: string } }[];
    expect(audit[0]).to.deep.include({ action: 'rules.update', actor: 'quinn-qa' });
    expect(audit[0]!.details.comment).to.equal('oncology only for the pilot');
    expect((await call('GET', '/api/rules/versions/1', undefined, tokens.qa)).body['rules']).to.deep.equal(rules);

    // Restore the shipped set for the tests that follow.
    expect((await call('PUT', '/api/rules', { rules }, tokens.admin)).status).to.equal(201);
  });

  it('dry-run returns what the live path decided, changes nothing, and previews a candidate set', async () => {
    const decisionsBefore = await gw.db
      .selectFrom('decisions')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .executeTakeFirstOrThrow();
    const versionsBefore = (await call('GET', '/api/rules/versions', undefined, tokens.qa)).body['items'] as unknown[];

    const live = await call('POST', '/api/rules/dry-run', {}, tokens.qa);
    expect(live.status).to.equal(200);
    const items = live.body['items'] as { studyInstanceUid: string; reasons: { ruleId: string }[] }[];
    const studies = (await call('GET', '/api/studies')).body['items'] as { studyInstanceUid: string }[];
    for (const s of studies) {
      const stored = (await call('GET', `/api/studies/${s.studyInstanceUid}`)).body;
      const decision = stored['decision'] as { flagged: boolean; reasons: { ruleId: string }[] } | null;
      const dry = items.find((i) => i.studyInstanceUid === s.studyInstanceUid);
      const liveRules = new Set((decision?.flagged ? decision.reasons : []).map((r) => r.ruleId));
      const dryRules = new Set((dry?.reasons ?? []).map((r) => r.ruleId));
      // The live case for ONC1 also carries the corrected-report reason from its second evaluation; the dry run sees the final data at once.
      expect([...dryRules].sort(), s.studyInstanceUid).to.deep.equal([...liveRules].sort());
    }
    expect((live.body['byRule'] as Record<string, number>)['oncology']).to.equal(1);

    const candidate = await call(
      'POST',
      '/api/rules/dry-run',
      { rules: [{ id: 'mr-only', kind: 'high-stakes', priority: 'routine', procedureCodes: ['*'], when: { modality: ['MR'] } }] },
      tokens.qa,
    );
    expect(candidate.status).to.equal(200);
    // MR-only flags the knee MR; the manual request stored for MAN1 is data, so it still flags that study.
    expect(candidate.body['byRule']).to.deep.equal({ 'mr-only': 1, 'manual-request': 1 });
    expect(
      (candidate.body['byRadiologistModality'] as { radiologistId: string; modality: string; flagged: number }[]).find((x) => x.modality === 'MR'),
    ).to.deep.include({
      radiologistId: 'RAD9',
      flagged: 1,
    });
    const invalid = await call('POST', '/api/rules/dry-run', { rules: [{ id: 'x', kind: 'nope' }] }, tokens.qa);
    expect(invalid.status).to.equal(400);
    expect((await call('POST', '/api/rules/dry-run', { from: 'yesterday' }, tokens.qa)).status).to.equal(400);
    const empty = await call('POST', '/api/rules/dry-run', { from: '2000-01-01', to: '2000-01-02' }, tokens.qa);
    expect(empty.body['evaluated']).to.equal(0);

    const decisionsAfter = await gw.db
      .selectFrom('decisions')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .executeTakeFirstOrThrow();
    expect(decisionsAfter.n).to.equal(decisionsBefore.n);
    expect((await call('GET', '/api/rules/versions', undefined, tokens.qa)).body['items']).to.deep.equal(versionsBefore);
  });

  // Last: it adds a flagged study, which the counts of the tests above do not expect.
  it('a study whose every order the RIS cancelled before it was flagged: the case opens held (order-cancelled, audited); QA can retry it', async () => {
    await sendHl7(ormO01({ accession: 'ONC9', patientId: 'MRN-ONC9', controlId: nextId() }));
    await sendHl7(ormO01({ accession: 'ONC9', patientId: 'MRN-ONC9', controlId: nextId() }, { orderControl: 'CA' }));
    const uid = await pushStudy('ONC9', 'MRN-ONC9');
    await sendHl7(oruR01({ accession: 'ONC9', patientId: 'MRN-ONC9', controlId: nextId() }, { status: 'F', radiologist: 'RAD7' }));
    const caseId = await eventually(async () => ((await call('GET', `/api/studies/${uid}`)).body['caseId'] as string | null) ?? undefined, 'the case');
    const c = (await call('GET', `/api/cases/${caseId}`)).body as unknown as CaseBody;
    expect(c.state).to.equal('held');
    const audit = (await call('GET', `/api/audit?entityType=case&entityId=${caseId}`)).body['items'] as { action: string; details: Record<string, unknown> }[];
    expect(audit.find((a) => a.action === 'case.held')?.details).to.include({ reason: 'order-cancelled', from: 'flagged' });
    // A person decides: retry takes it back to the forwarding path.
    expect((await call('POST', `/api/cases/${caseId}/retry`, {}, tokens.qa)).status).to.equal(200);
    expect(((await call('GET', `/api/cases/${caseId}`)).body as unknown as CaseBody).state).to.not.equal('held');
  });
});
