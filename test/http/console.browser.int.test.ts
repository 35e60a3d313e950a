import { readFileSync } from 'node:fs';
import { expect } from 'chai';
import type { BrowserContext, Page } from 'playwright-core';
import { excludeInstance } from '../../src/forwarding/exclusion.repository.js';
import YAML from 'yaml';
import { holdStudy } from '../../src/studies/study.repository.js';
import { collectPageErrors, launchChromium, type ChromiumProfile } from '../helpers/chromium.js';
import { CONSOLE_TOKENS as T, ConsoleFixture } from '../helpers/console-fixture.js';

// Callbacks passed to page.evaluate/waitForFunction run in the page; the project compiles without the DOM
// library, so the little of it they use is declared here (module scope only).
interface ChartLike {
  data: { labels: string[]; datasets: { label: string; data: number[] }[] };
  options: { scales?: Record<string, { title?: { text?: string } }> };
}
declare const document: { querySelector(selector: string): { textContent: string | null } | null; getElementById(id: string): unknown };
declare const sessionStorage: { getItem(key: string): string | null };
declare const window: { Chart?: { getChart(canvas: unknown): ChartLike | undefined } };

describe('web console in headless Chromium', function () {
  this.timeout(60_000);
  const fx = new ConsoleFixture();
  let context: BrowserContext;
  let chrome: ChromiumProfile | undefined;
  let first: Awaited<ReturnType<ConsoleFixture['flaggedCase']>>;
  /** Script errors and CSP violations of every page: a console that works only by luck fails here. */
  const pageErrors: string[] = [];

  before(async function () {
    chrome = await launchChromium(this);
    context = chrome.context;
    await fx.start();
    first = await fx.flaggedCase();
  });
  after(async () => {
    await chrome?.close();
    if (fx.gw) await fx.stop();
    else fx.tmp.cleanup();
  });
  afterEach(() => {
    const seen = pageErrors.splice(0);
    expect(seen, 'errors in the page').to.deep.equal([]);
  });

  /** A new tab (its own sessionStorage, so its own login). */
  async function signIn(token: string): Promise<Page> {
    const page = await context.newPage();
    collectPageErrors(page, pageErrors);
    await page.goto(`${fx.base}/`);
    await page.fill('#token', token);
    await page.click('#login');
    await page.waitForSelector('#who:not(:empty)');
    return page;
  }

  it("login: a wrong token is refused in the form; the right one opens the role's menu", async () => {
    const page = await context.newPage();
    page.on('pageerror', (e) => pageErrors.push(`pageerror: ${e.message}`));
    await page.goto(`${fx.base}/`);
    await page.fill('#token', 'not-a-token');
    await page.click('#login');
    await page.waitForSelector('#login-form .error');
    expect(await page.textContent('#login-form .error')).to.match(/not accepted/);
    await page.fill('#token', T.qa);
    await page.click('#login');
    await page.waitForSelector('[data-testid=dashboard]');
    expect(await page.textContent('#who')).to.equal('quinn-qa (qa)');
    const nav = await page.$$eval('#nav a', (as) => as.map((a) => a.getAttribute('data-nav')));
    expect(nav).to.include.members(['dashboard', 'cases', 'rules', 'sampling', 'stats', 'attention', 'audit', 'instances']).and.not.include('my-cases');
    await page.close();
  });

  it('navigating while the page left behind still loads: its late answer does not replace the page opened after it', async () => {
    const page = await context.newPage();
    collectPageErrors(page, pageErrors);
    // The dashboard (QA's home after login) answers only when the test says so.
    let release = (): void => undefined;
    const held = new Promise<void>((r) => (release = r));
    await page.route('**/api/dashboard*', async (route) => {
      await held;
      await route.continue();
    });
    await page.goto(`${fx.base}/`);
    await page.fill('#token', T.qa);
    await page.click('#login');
    await page.waitForSelector('#who:not(:empty)');
    await page.goto(`${fx.base}/#/stats`);
    await page.waitForSelector('[data-testid=stats]');
    const answered = page.waitForEvent('requestfinished', (r) => r.url().includes('/api/dashboard'));
    release();
    await answered;
    // One macrotask in the page after the answer: the stale view's render would have happened by then.
    await page.evaluate(() => new Promise((r) => setTimeout(r, 50)));
    expect(await page.$('[data-testid=dashboard]'), 'the dashboard did not take the page back').to.equal(null);
    expect(await page.$('[data-testid=stats]')).to.not.equal(null);
    await page.close();
  });

  it('dashboard: live numbers follow the studies as they arrive (auto-refresh)', async () => {
    const page = await signIn(T.qa);
    await page.waitForSelector('[data-k=studiesToday]');
    const before = Number(await page.textContent('[data-k=studiesToday]'));
    expect(before).to.be.at.least(1);
    expect(Number(await page.textContent('[data-k="cases-awaiting-read"]'))).to.be.at.least(1);
    expect(Number(await page.textContent('[data-k="queue-pool"]'))).to.equal(0);
    await fx.pushStudy();
    await page.waitForFunction((n) => Number(document.querySelector('[data-k=studiesToday]')?.textContent) === n, before + 1, { timeout: 10_000 });
    await page.close();
  });

  it('rules: an invalid change is shown inline, a valid one is previewed (dry run) and saved as a new version with a diff', async () => {
    const page = await signIn(T.qa);
    await page.click('[data-nav=rules]');
    await page.waitForSelector('#rules-text');
    expect(await page.isDisabled('#save-rules')).to.equal(true);
    const doc = YAML.parse(await page.inputValue('#rules-text')) as { rules: Record<string, unknown>[] };
    const idx = doc.rules.findIndex((r) => r['id'] === 'oncology');

    doc.rules[idx]!['priority'] = 'whenever';
    await page.fill('#rules-text', YAML.stringify(doc));
    await page.click('#dry-run-button');
    const error = await page.waitForSelector(`#rules-errors li[data-path^="rules[${idx}].priority"]`);
    expect(await error.textContent()).to.match(/^line \d+, rules\[\d+\]\.priority/);
    expect(await page.isDisabled('#save-rules')).to.equal(true);

    doc.rules[idx]!['priority'] = 'stat';
    doc.rules[idx]!['description'] = 'Oncology, read the same day (changed in the browser test)';
    await page.fill('#rules-text', YAML.stringify(doc));
    await page.click('#dry-run-button');
    await page.waitForSelector('[data-k=dry-flagged]');
    expect(Number(await page.textContent('[data-k=dry-flagged]'))).to.be.at.least(1);
    expect(await page.textContent('[data-testid=dry-run-items]')).to.include(first.accession);
    // Saving is only possible for the text that was previewed.
    await page.fill('#rules-comment', 'oncology is stat now');
    await page.click('#save-rules');
    await page.waitForFunction(() => /Saved: version 2/.test(document.querySelector('[data-k=version]')?.textContent ?? ''));
    const active = await fx.call('GET', '/api/rules', T.qa);
    expect(active.body['version']).to.equal(2);
    expect((active.body['rules'] as { id: string; priority: string }[]).find((r) => r.id === 'oncology')?.priority).to.equal('stat');
    await page.click('[data-diff="2"]');
    const diff = await page.textContent('[data-testid=diff]');
    expect(diff)
      .to.match(/- +priority: urgent/)
      .and.match(/\+ +priority: stat/);
    await page.close();
  });

  it('reader: sees only their cases, blinded, sends the report, and the case reaches written-back', async () => {
    const page = await signIn(T.drA);
    expect(await page.$$eval('#nav a', (as) => as.map((a) => a.getAttribute('data-nav')))).to.deep.equal(['my-cases']);
    await page.waitForSelector(`[data-case="${first.caseId}"]`);
    await page.click(`[data-case="${first.caseId}"]`);
    await page.waitForSelector('#report-form');
    expect(await page.textContent('[data-k=blinded-note]')).to.match(/Blinded/);
    expect(await page.$('#show-primary')).to.equal(null);
    await page.fill('#report-text', 'Concur: spiculated right upper lobe mass, suspicious for carcinoma.');
    await page.selectOption('#radpeer', '1');
    await page.click('#submit-report');
    await page.waitForFunction(() => document.querySelector('[data-k=state]')?.textContent === 'written-back', undefined, { timeout: 15_000 });
    expect((await fx.caseOf(first.caseId))['state']).to.equal('written-back');
    expect(fx.ris.writeBacks).to.be.at.least(1);
    // Once they have read it, the first report may be shown to them.
    await page.click('#show-primary');
    await page.waitForSelector('[data-testid=primary-report] pre');
    expect(await page.textContent('[data-testid=primary-report] pre')).to.match(/carcinoma/);
    await page.close();
  });

  it("a reader cannot open another reader's case: the page shows the refusal and the server answers 403", async () => {
    const page = await signIn(T.drB);
    await page.goto(`${fx.base}/#/cases/${first.caseId}`);
    const err = await page.waitForSelector('[data-testid=case] [data-testid=error]');
    expect(await err.textContent()).to.match(/^403 forbidden/);
    const status = await page.evaluate(async (id) => {
      const res = await fetch(`/api/cases/${id}`, { headers: { authorization: `Bearer ${sessionStorage.getItem('gw.token')}` } });
      return res.status;
    }, first.caseId);
    expect(status).to.equal(403);
    await page.close();
  });

  it('statistics: the charts are drawn with the data; the case page shows the timeline', async () => {
    const page = await signIn(T.qa);
    await page.click('[data-nav=stats]');
    await page.waitForSelector('canvas#chart-radiologist');
    const data = await page.waitForFunction(() => {
      const charts = ['chart-radiologist', 'chart-modality', 'chart-time', 'chart-turnaround'].map((id) => window.Chart?.getChart(document.getElementById(id)));
      if (charts.some((c) => !c)) return undefined;
      return charts.map((c) => ({ labels: c!.data.labels, datasets: c!.data.datasets.map((d) => ({ label: d.label, data: d.data })) }));
    });
    const [byRadiologist, byModality, overTime] = (await data.jsonValue())!;
    // A read that took seconds is charted in seconds, not as 0.000x hours.
    const turnaroundTitle = await page.evaluate(() => window.Chart?.getChart(document.getElementById('chart-turnaround'))?.options.scales?.['y']?.title?.text);
    expect(turnaroundTitle).to.equal('seconds');
    expect(byRadiologist!.labels).to.deep.equal(['RAD7']);
    expect(byRadiologist!.datasets[0]!.data).to.deep.equal([1]);
    expect(byModality!.labels).to.deep.equal(['CT']);
    expect(overTime!.datasets[0]!.data.reduce((a, b) => a + b, 0)).to.equal(1);
    expect(await page.textContent('[data-k=secondReads]')).to.equal('1');
    // CSV export: fetched with the token, saved as a file.
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('[data-csv=radiologist-modality]')]);
    expect(download.suggestedFilename()).to.match(/^second-reads-radiologist-modality-.*\.csv$/);
    const file = await download.path();
    expect(readFileSync(file, 'utf8').split('\r\n')[1]).to.match(/^RAD7,CT,1,0,0,0,0,/);

    await page.goto(`${fx.base}/#/cases/${first.caseId}`);
    await page.waitForSelector('[data-testid=timeline]');
    const timeline = await page.textContent('[data-testid=timeline]');
    expect(timeline).to.include('assigned to dr-a').and.include('second report by dr-a: RADPEER 1').and.include('write-back accepted');
    await page.close();
  });

  it('case page: QA reassigns a case to another reader, then cancels it', async () => {
    const other = await fx.flaggedCase();
    const page = await signIn(T.qa);
    await page.goto(`${fx.base}/#/cases/${other.caseId}`);
    await page.waitForSelector('#reassign-reader');
    const from = String((await fx.caseOf(other.caseId))['readerId']);
    const to = from === 'dr-a' ? 'dr-b' : 'dr-a';
    await page.selectOption('#reassign-reader', to);
    await page.fill('[data-testid=actions] input[name=reason]', 'workload');
    await page.click('[data-action=Reassign]');
    await page.waitForFunction((who) => (document.querySelector('[data-testid=timeline]')?.textContent ?? '').includes(`assigned to ${who}`), to);
    expect((await fx.caseOf(other.caseId))['readerId']).to.equal(to);
    await page.fill('#cancel-reason', 'duplicate request');
    await page.click('[data-action="Cancel case"]');
    await page.waitForFunction(() => document.querySelector('[data-k=state]')?.textContent === 'cancelled');
    expect((await fx.caseOf(other.caseId))['state']).to.equal('cancelled');
    const audit = (await fx.call('GET', `/api/audit?entityType=case&entityId=${other.caseId}&action=case.cancelled`, T.admin)).body['items'] as {
      details: { reason?: string };
    }[];
    expect(audit[0]!.details.reason).to.equal('duplicate request');
    await page.close();
  });

  it('case page: a second report taken before the primary report shows its write-back as waiting for primary report', async () => {
    const { study } = await fx.pushStudy();
    const created = await fx.call('POST', '/api/cases', T.qa, { studyInstanceUid: study.studyInstanceUid, reason: 'QA asked for it' });
    expect(created.status, created.text).to.equal(201);
    const caseId = String(created.body['id']);
    const c = await fx.caseWhen(caseId, 'forwarded without a primary report', (x) => x['state'] === 'awaiting-read' && !!x['readerId']);
    const posted = await fx.call('POST', `/api/cases/${caseId}/report`, T.system, {
      text: 'No acute finding.',
      radpeerScore: '1',
      readerId: String(c['readerId']),
    });
    expect(posted.status, posted.text).to.equal(201);
    const page = await signIn(T.qa);
    await page.goto(`${fx.base}/#/cases/${caseId}`);
    await page.waitForSelector('[data-k=writeBack]');
    expect(await page.textContent('[data-k=writeBack]')).to.include('waiting for primary report');
    expect(await page.textContent('[data-testid=timeline]')).to.include('write-back waiting for the primary report');
    await page.close();
  });

  it('case page: QA sees the instances kept back from a de-identified delivery, with reasons, and releases one (audited)', async () => {
    const other = await fx.flaggedCase();
    const d = await fx.gw.db.selectFrom('deliveries').select('id').where('case_id', '=', other.caseId).executeTakeFirstOrThrow();
    const sop = (await fx.gw.db.selectFrom('delivery_instances').select('sop_instance_uid').where('delivery_id', '=', d.id).executeTakeFirstOrThrow())
      .sop_instance_uid;
    await excludeInstance(fx.gw.db, {
      deliveryId: d.id,
      caseId: other.caseId,
      sopInstanceUid: sop,
      sopClassUid: '1.2.840.10008.5.1.4.1.1.7',
      seriesDescription: 'Dose Report',
      reason: 'burned-in-risk',
      detail: 'SOP class Secondary Capture Image (1.2.840.10008.5.1.4.1.1.7)',
      now: new Date().toISOString(),
    });
    const page = await signIn(T.qa);
    await page.goto(`${fx.base}/#/cases/${other.caseId}`);
    await page.waitForSelector('[data-testid=excluded]');
    const listed = await page.textContent('[data-testid=excluded]');
    expect(listed).to.include('Dose Report').and.include('burned-in-risk').and.include(sop);
    await page.fill('#release-reason', 'looked at it: no text');
    await page.click(`[data-action=release][data-sop="${sop}"]`);
    await page.waitForFunction(() => document.querySelector('[data-testid=excluded]') === null);
    expect((await fx.caseOf(other.caseId))['excludedInstances']).to.deep.equal([]);
    const audit = await fx.gw.db
      .selectFrom('audit_events')
      .select(['actor', 'details'])
      .where('entity_id', '=', other.caseId)
      .where('action', '=', 'case.excluded-instance-released')
      .execute();
    expect(audit).to.have.length(1);
    expect(audit[0]!.details).to.include('looked at it: no text');
    await page.close();
  });

  it('QA pages: sampling quotas, held messages and dead letters, and the audit log with the PHI views', async () => {
    const page = await signIn(T.qa);
    await page.click('[data-nav=sampling]');
    await page.waitForSelector('[data-testid=sampling] table');
    expect(await page.textContent('[data-testid=sampling]')).to.match(/Current periods: \S+ \d{4}-/);
    await page.click('[data-nav=attention]');
    await page.waitForSelector('[data-testid=held-messages]');
    expect(await page.textContent('[data-testid=dead-letters]')).to.include('no dead letters');
    await page.click('[data-nav=audit]');
    await page.waitForSelector('[data-testid=audit-table]');
    await page.fill('input[name=action]', 'case.primary-report-revealed');
    await page.click('[data-testid=audit] button[type=submit]');
    await page.waitForFunction(() => (document.querySelector('[data-testid=audit-table]')?.textContent ?? '').includes('ada'));
    expect(await page.textContent('[data-testid=audit-table]')).to.include(`case ${first.caseId}`);
    // The instances page: this gateway, alive, with its heartbeat.
    await page.click('[data-nav=instances]');
    await page.waitForSelector('[data-testid=instances-table] tbody tr');
    const instances = await page.textContent('[data-testid=instances-table]');
    expect(instances).to.include('(this one)').and.include('alive');
    await page.close();
  });
  it('held studies: listed with their reason and what changed; the study page releases one (audited)', async () => {
    const { study } = await fx.pushStudy();
    await holdStudy(fx.gw.db, study.studyInstanceUid, 'identity-conflict', ['PatientID', 'PatientName'], new Date().toISOString());
    const page = await signIn(T.qa);
    await page.click('[data-nav=studies]');
    await page.waitForSelector(`[data-study="${study.studyInstanceUid}"]`);
    const list = await page.textContent('[data-testid=study-list]');
    expect(list).to.include('identity-conflict').and.include('changed: PatientID, PatientName');
    await page.click(`[data-study="${study.studyInstanceUid}"]`);
    await page.waitForSelector('[data-testid=hold-actions]');
    expect(await page.textContent('[data-k=hold]')).to.include('identity-conflict');
    // no reason: refused by the server, shown, still held
    await page.click('#study-release');
    await page.waitForSelector('.flash.error, .error');
    expect(await page.textContent('[data-k=state]')).to.equal('held');
    await page.fill('#release-reason', 'checked with the RIS');
    await page.click('#study-release');
    await page.waitForFunction(() => document.querySelector('[data-k=state]')?.textContent !== 'held');
    const audit = await fx.gw.db.selectFrom('audit_events').select(['action', 'actor']).where('entity_id', '=', study.studyInstanceUid).execute();
    expect(audit).to.deep.include({ action: 'study.released', actor: 'quinn-qa' });
    await page.close();
  });
});
