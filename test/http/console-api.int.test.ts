import { expect } from 'chai';
import { eventually } from '../helpers/eventually.js';
import { oruR01 } from '../helpers/hl7-samples.js';
import { CONSOLE_TOKENS as T, ConsoleFixture } from '../helpers/console-fixture.js';

interface Audit {
  action: string;
  actor: string;
  entityId: string | null;
  details: Record<string, unknown> | null;
}

describe('console APIs: me, dashboard, worklist filters, timeline, primary report, reassign, write-back retry, stats, held messages, static files', function () {
  this.timeout(90_000);
  const fx = new ConsoleFixture();
  let first: Awaited<ReturnType<ConsoleFixture['flaggedCase']>>;

  const audit = async (q: string) => (await fx.call('GET', `/api/audit?${q}`, T.admin)).body['items'] as Audit[];
  const ids = (a: { body: Record<string, unknown> }) => ((a.body['items'] ?? []) as { id: string }[]).map((x) => x.id);

  before(async () => {
    await fx.start();
    first = await fx.flaggedCase();
  });
  after(async () => fx.stop());

  it('GET /api/me tells the console the role, reader id and (to staff) the readers', async () => {
    const a = await fx.call('GET', '/api/me', T.qa);
    expect(a.status).to.equal(200);
    expect(a.body).to.deep.include({ name: 'quinn-qa', role: 'qa', readerId: null });
    expect((a.body['readers'] as { id: string }[]).map((r) => r.id)).to.deep.equal(['dr-a', 'dr-b']);
    const r = await fx.call('GET', '/api/me', T.drA);
    expect(r.body).to.deep.include({ role: 'reader', readerId: 'dr-a' });
    expect((r.body['reader'] as { name: string }).name).to.equal('Ada Reader');
    expect(r.body['readers']).to.deep.equal([]);
    expect((await fx.call('GET', '/api/me', undefined)).status).to.equal(401);
  });

  it("GET /api/dashboard counts today's studies, cases by state and queues; readers are refused", async () => {
    const d = await fx.call('GET', '/api/dashboard', T.qa);
    expect(d.status).to.equal(200);
    const body = d.body as {
      today: { studiesReceived: number; casesOpened: number };
      casesByState: Record<string, number>;
      queues: { destinationId: string; delivered: number }[];
      deadLetters: number;
    };
    expect(body.today.studiesReceived).to.be.at.least(1);
    expect(body.today.casesOpened).to.be.at.least(1);
    expect(body.casesByState['awaiting-read']).to.be.at.least(1);
    expect(body.queues.find((q) => q.destinationId === 'pool')?.delivered).to.be.at.least(1);
    expect(body.deadLetters).to.equal(0);
    expect((await fx.call('GET', '/api/dashboard', T.drA)).status).to.equal(403);
    expect((await fx.call('GET', '/api/dashboard', T.system)).status).to.equal(403);
  });

  it('GET /api/cases filters by rule, priority, modality and due time', async () => {
    const c = await fx.caseOf(first.caseId);
    expect(ids(await fx.call('GET', '/api/cases?ruleId=oncology', T.qa))).to.include(first.caseId);
    expect(ids(await fx.call('GET', '/api/cases?ruleId=no-such-rule', T.qa))).to.not.include(first.caseId);
    // `_` is a LIKE wildcard: it must not match any character.
    expect(ids(await fx.call('GET', '/api/cases?ruleId=oncolog_', T.qa))).to.not.include(first.caseId);
    expect(ids(await fx.call('GET', `/api/cases?priority=${String(c['priority'])}`, T.qa))).to.include(first.caseId);
    expect(ids(await fx.call('GET', '/api/cases?priority=no-such-priority', T.qa))).to.not.include(first.caseId);
    expect(ids(await fx.call('GET', '/api/cases?modality=CT', T.qa))).to.include(first.caseId);
    expect(ids(await fx.call('GET', '/api/cases?modality=MR', T.qa))).to.not.include(first.caseId);
    expect(ids(await fx.call('GET', '/api/cases?dueBefore=2000-01-01T00:00:00Z', T.qa))).to.not.include(first.caseId);
    expect(ids(await fx.call('GET', '/api/cases?dueBefore=2999-01-01T00:00:00Z', T.qa))).to.include(first.caseId);
    expect((await fx.call('GET', '/api/cases?dueBefore=yesterday', T.qa)).status).to.equal(400);
  });

  it('GET /api/cases/:id/timeline tells the story in order and audits the view; readers are refused', async () => {
    const t = await fx.call('GET', `/api/cases/${first.caseId}/timeline`, T.qa);
    expect(t.status).to.equal(200);
    const items = t.body['items'] as { at: string; kind: string; title: string }[];
    const kinds = items.map((e) => e.kind);
    for (const k of ['received', 'stable', 'report-linked', 'decision', 'forwarding', 'forwarded', 'assigned', 'audit']) expect(kinds, k).to.include(k);
    expect(kinds.indexOf('received')).to.be.lessThan(kinds.indexOf('decision'));
    expect(kinds.indexOf('decision')).to.be.lessThan(kinds.indexOf('forwarded'));
    const times = items.map((e) => e.at);
    expect([...times].sort()).to.deep.equal(times);
    expect(items.find((e) => e.kind === 'decision')!.title).to.match(/flagged: .*oncology/);
    const viewed = await audit(`action=case.viewed&entityId=${first.caseId}`);
    expect(viewed[0]).to.deep.include({ actor: 'quinn-qa', entityId: first.caseId });
    expect((await fx.call('GET', `/api/cases/${first.caseId}/timeline`, T.drA)).status).to.equal(403);
    expect((await fx.call('GET', '/api/cases/nope/timeline', T.qa)).status).to.equal(404);
  });

  it('GET /api/cases/:id/primary-report: blinded to the reader, shown (and audited) to QA, never to another reader', async () => {
    const c = await fx.caseOf(first.caseId);
    expect(c['blinded']).to.equal(true);
    expect(c['readerId']).to.equal('dr-a');
    const blinded = await fx.call('GET', `/api/cases/${first.caseId}/primary-report`, T.drA);
    expect(blinded.status).to.equal(403);
    expect(JSON.stringify(blinded.body)).to.match(/blinded/);
    expect((await fx.call('GET', `/api/cases/${first.caseId}/primary-report`, T.drB)).status).to.equal(403);
    const qa = await fx.call('GET', `/api/cases/${first.caseId}/primary-report`, T.qa);
    expect(qa.status).to.equal(200);
    const report = qa.body['report'] as { text: string; status: string; radiologistId: string };
    expect(report.status).to.equal('F');
    expect(report.text).to.match(/carcinoma/);
    expect(report.radiologistId).to.equal('RAD7');
    const revealed = await audit(`action=case.primary-report-revealed&entityId=${first.caseId}`);
    expect(revealed).to.have.length(1);
    expect(revealed[0]).to.deep.include({ actor: 'quinn-qa' });
  });

  it('POST /api/cases/:id/reassign moves the case (audited); the previous reader loses it; readers may not reassign', async () => {
    expect((await fx.call('POST', `/api/cases/${first.caseId}/reassign`, T.drA, { readerId: 'dr-b' })).status).to.equal(403);
    expect((await fx.call('POST', `/api/cases/${first.caseId}/reassign`, T.qa, { readerId: 'dr-z' })).status).to.equal(400);
    expect((await fx.call('POST', `/api/cases/${first.caseId}/reassign`, T.qa, { readerId: 'dr-a' })).status).to.equal(409);
    const moved = await fx.call('POST', `/api/cases/${first.caseId}/reassign`, T.qa, { readerId: 'dr-b', reason: 'dr-a on leave' });
    expect(moved.status, moved.text).to.equal(200);
    expect(moved.body).to.deep.include({ readerId: 'dr-b', previousReaderId: 'dr-a' });
    expect((await fx.caseOf(first.caseId))['readerId']).to.equal('dr-b');
    expect((await fx.call('GET', `/api/cases/${first.caseId}`, T.drA)).status).to.equal(403);
    expect((await fx.call('GET', `/api/cases/${first.caseId}`, T.drB)).status).to.equal(200);
    const a = await audit(`action=case.reassigned&entityId=${first.caseId}`);
    expect(a[0]).to.deep.include({ actor: 'quinn-qa' });
    expect(a[0]!.details).to.deep.include({ from: 'dr-a', to: 'dr-b', reason: 'dr-a on leave' });
  });

  it('after their own report the reader sees the first report, anonymised; the case is written back', async () => {
    const posted = await fx.call('POST', `/api/cases/${first.caseId}/report`, T.drB, { text: 'Agree: spiculated RUL mass.', radpeerScore: '2a' });
    expect(posted.status, posted.text).to.equal(201);
    await fx.caseWhen(first.caseId, 'written back', (c) => c['state'] === 'written-back');
    const shown = await fx.call('GET', `/api/cases/${first.caseId}/primary-report`, T.drB);
    expect(shown.status, shown.text).to.equal(200);
    const report = shown.body['report'] as Record<string, unknown>;
    expect(report['text']).to.match(/carcinoma/);
    expect(report).to.not.have.property('radiologistId');
    expect(report).to.not.have.property('radiologistName');
    expect((await fx.call('POST', `/api/cases/${first.caseId}/retry-write-back`, T.qa)).status).to.equal(409);
  });

  it('POST /api/cases/:id/retry-write-back resends a refused write-back once the RIS is fixed', async () => {
    const second = await fx.flaggedCase();
    fx.ris.script.push('AR');
    expect((await fx.call('POST', `/api/cases/${second.caseId}/report`, T.drA, { text: 'Missed node.', radpeerScore: '3b' })).status).to.equal(201);
    const failed = await fx.caseWhen(second.caseId, 'the write-back refused', (c) => c['state'] === 'failed');
    expect((failed['writeBack'] as { state: string }).state).to.equal('failed');
    const dash = (await fx.call('GET', '/api/dashboard', T.admin)).body as { writeBack: { failed: number } };
    expect(dash.writeBack.failed).to.equal(1);
    expect((await fx.call('POST', `/api/cases/${second.caseId}/retry-write-back`, T.drA)).status).to.equal(403);
    const retried = await fx.call('POST', `/api/cases/${second.caseId}/retry-write-back`, T.admin);
    expect(retried.status, retried.text).to.equal(200);
    await fx.caseWhen(second.caseId, 'written back after the retry', (c) => c['state'] === 'written-back');
    const t = (await fx.call('GET', `/api/cases/${second.caseId}/timeline`, T.admin)).body['items'] as { kind: string; title: string; actor: string }[];
    expect(t.map((e) => e.kind)).to.include.members(['reported', 'written-back']);
    // The refusal and the manual retry stay in the story through the audited transitions.
    expect(t.filter((e) => e.kind === 'audit').map((e) => `${e.title} by ${e.actor}`)).to.include.members([
      'case.failed by write-back',
      'case.reported by alice-admin',
      'case.written-back by write-back',
    ]);
  });

  it('GET /api/stats: second reads, discordance 2+ and 2b+ per radiologist and modality, turnaround; CSV export', async () => {
    const s = await fx.call('GET', '/api/stats', T.qa);
    expect(s.status, s.text).to.equal(200);
    const body = s.body as {
      totals: { secondReads: number; discordant: number; significant: number; discordanceRate: number; turnaroundHours: { n: number; p50: number } };
      scores: Record<string, number>;
      byRadiologistModality: { radiologistId: string; modality: string; secondReads: number }[];
      byReader: { readerId: string; secondReads: number }[];
      overTime: { start: string; secondReads: number }[];
      writeBackTurnaroundHours: { n: number };
    };
    expect(body.totals.secondReads).to.equal(2);
    expect(body.totals.discordant).to.equal(2);
    expect(body.totals.significant).to.equal(1);
    expect(body.totals.discordanceRate).to.equal(1);
    expect(body.scores).to.deep.include({ '2a': 1, '3b': 1 });
    expect(body.totals.turnaroundHours.n).to.equal(2);
    expect(body.totals.turnaroundHours.p50).to.be.at.least(0);
    expect(body.writeBackTurnaroundHours.n).to.equal(2);
    expect(body.byRadiologistModality).to.deep.equal([{ ...body.byRadiologistModality[0], radiologistId: 'RAD7', modality: 'CT', secondReads: 2 }]);
    expect(body.byReader.map((r) => r.readerId).sort()).to.deep.equal(['dr-a', 'dr-b']);
    expect(body.overTime.reduce((n, b) => n + b.secondReads, 0)).to.equal(2);

    const csv = await fx.call('GET', '/api/stats?format=csv&table=radiologist-modality', T.qa);
    expect(csv.status).to.equal(200);
    expect(csv.type).to.match(/^text\/csv/);
    const lines = csv.text.trim().split('\r\n');
    expect(lines[0]).to.equal(
      'radiologist,modality,second_reads,discordant_2plus,discordance_rate_2plus,discordant_2b_plus,discordance_rate_2b_plus,turnaround_hours_p50,turnaround_hours_p90,turnaround_hours_p95,weighted_discordance_rate_2plus,discordance_ci_low,discordance_ci_high',
    );
    expect(lines[1]).to.match(/^RAD7,CT,2,2,1,1,0\.5,/);
    const empty = await fx.call('GET', '/api/stats?from=2001-01-01&to=2001-02-01', T.qa);
    expect((empty.body['totals'] as { secondReads: number }).secondReads).to.equal(0);
    expect((await fx.call('GET', '/api/stats?from=2001-02-01&to=2001-01-01', T.qa)).status).to.equal(400);
    expect((await fx.call('GET', '/api/stats?format=xml', T.qa)).status).to.equal(400);
    expect((await fx.call('GET', '/api/stats', T.drA)).status).to.equal(403);
  });

  it('POST /api/messages/:id/dismiss sets a held message aside with a reason (audited)', async () => {
    // The same accession under another patient id: held for review, never linked.
    const ack = await fx.hl7.send(oruR01({ accession: first.accession, patientId: 'MRN-OTHER', controlId: 'ORU-CONFLICT-1' }, { status: 'C' }));
    expect(ack.code, ack.text).to.equal('AA');
    const held = await eventually(async () => {
      const items = (await fx.call('GET', '/api/messages?status=held', T.qa)).body['items'] as { id: string; controlId: string; reason: string }[];
      return items.find((m) => m.controlId === 'ORU-CONFLICT-1');
    }, 'the held message');
    expect(held.reason).to.be.a('string').and.not.equal('');
    expect((await fx.call('GET', '/api/dashboard', T.qa)).body['heldMessages']).to.equal(1);
    expect((await fx.call('POST', `/api/messages/${held.id}/dismiss`, T.drA, { reason: 'x' })).status).to.equal(403);
    expect((await fx.call('POST', `/api/messages/${held.id}/dismiss`, T.qa, {})).status).to.equal(400);
    const ok = await fx.call('POST', `/api/messages/${held.id}/dismiss`, T.qa, { reason: 'wrong patient, RIS fixed it' });
    expect(ok.status, ok.text).to.equal(200);
    expect((await fx.call('POST', `/api/messages/${held.id}/dismiss`, T.qa, { reason: 'again' })).status).to.equal(409);
    expect((await fx.call('POST', '/api/messages/nope/dismiss', T.qa, { reason: 'x' })).status).to.equal(404);
    const after = (await fx.call('GET', '/api/messages?status=held', T.qa)).body['items'] as { id: string }[];
    expect(after.map((m) => m.id)).to.not.include(held.id);
    const dismissed = (await fx.call('GET', '/api/messages?status=dismissed', T.qa)).body['items'] as { id: string }[];
    expect(dismissed.map((m) => m.id)).to.include(held.id);
    const a = await audit(`action=message.dismissed&entityId=${held.id}`);
    expect(a[0]).to.deep.include({ actor: 'quinn-qa' });
    expect(a[0]!.details).to.deep.equal({ reason: 'wrong patient, RIS fixed it' });
  });

  it('serves the console (with a strict CSP), its modules and the vendored chart.js and yaml, without a token', async () => {
    const index = await fetch(`${fx.base}/`);
    expect(index.status).to.equal(200);
    expect(index.headers.get('content-type')).to.match(/text\/html/);
    expect(index.headers.get('content-security-policy')).to.match(/script-src 'self'/);
    const html = await index.text();
    expect(html).to.include('/console/app.js').and.include('/console/vendor/chart.umd.js');
    for (const p of [
      '/console/app.js',
      '/console/lib.js',
      '/console/views.js',
      '/console/rules.js',
      '/console/stats.js',
      '/console/style.css',
      '/console/vendor/chart.umd.js',
      '/console/vendor/yaml/index.js',
      '/console/vendor/yaml/dist/index.js',
    ]) {
      const r = await fetch(`${fx.base}${p}`);
      expect(r.status, p).to.equal(200);
      await r.arrayBuffer();
    }
    expect((await fetch(`${fx.base}/console/nope.js`)).status).to.equal(404);
    expect((await fetch(`${fx.base}/console/../package.json`)).status).to.equal(404);
  });
});
