import { readFileSync } from 'node:fs';
import { expect } from 'chai';
import type { BrowserContext, Page } from 'playwright-core';
import YAML from 'yaml';
import { collectPageErrors, launchChromium, type ChromiumProfile } from '../helpers/chromium.js';
import { CONSOLE_TOKENS as T, ConsoleFixture } from '../helpers/console-fixture.js';

declare const document: { querySelector(selector: string): { textContent: string | null } | null };

interface RuleJs {
  id: string;
  kind: string;
  [k: string]: unknown;
}

describe('rule builder in headless Chromium: form, forecast, save, YAML round trip', function () {
  this.timeout(90_000);
  const fx = new ConsoleFixture();
  let context: BrowserContext;
  let chrome: ChromiumProfile | undefined;
  let page: Page;
  let flagged: Awaited<ReturnType<ConsoleFixture['flaggedCase']>>;
  const pageErrors: string[] = [];

  before(async function () {
    chrome = await launchChromium(this);
    context = chrome.context;
    await fx.start();
    flagged = await fx.flaggedCase();
    page = await context.newPage();
    collectPageErrors(page, pageErrors);
    await page.goto(`${fx.base}/`);
    await page.fill('#token', T.qa);
    await page.click('#login');
    await page.waitForSelector('#who:not(:empty)');
    await page.click('[data-nav=rules]');
    await page.waitForSelector('[data-testid=rule-builder] #rb-form');
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

  const yamlRules = async (): Promise<RuleJs[]> => (YAML.parse(await page.inputValue('#rules-text')) as { rules: RuleJs[] }).rules;

  it('builds an oncology rule and a precision sampling rule in the form; an invalid value shows inline; the YAML keeps its comments', async () => {
    const before = await page.inputValue('#rules-text');
    expect(before).to.match(/^# Second-read rules\./);

    await page.selectOption('#rb-new-kind', 'oncology');
    await page.click('#rb-add');
    await page.fill('#rb-id', 'onc-form');
    await page.fill('#rb-codes-include', 'C00-C96, D00-D09');
    await page.check('#rb-when-modality-CT');
    await page.fill('#rb-extraKeywords', 'tumour board');
    // Negation preview: the built-in list plus the extra keyword, read as the engine reads them.
    await page.fill('#rb-try-text', 'No evidence of metastatic disease. Discussed at the tumour board.');
    await page.click('#rb-try');
    await page.waitForSelector('[data-testid=negation-preview] [data-keyword]');
    expect(await page.getAttribute('[data-keyword="metasta*"]', 'data-class')).to.equal('negated');
    expect(await page.getAttribute('[data-keyword="tumour board"]', 'data-class')).to.equal('affirmed');
    await page.fill('#rb-when-time-from', '22:00');
    await page.fill('#rb-when-time-to', '07:00');
    await page.fill('#rb-when-time-zone', 'Europe/London');

    await page.selectOption('#rb-new-kind', 'sampling');
    await page.click('#rb-add');
    await page.fill('#rb-id', 'qa-precision');
    await page.fill('#rb-rate', '1.5');
    expect(await page.textContent('[data-field-error=rate]')).to.match(/at most 1/);
    await page.fill('#rb-rate', '0.1');
    expect(await page.textContent('[data-field-error=rate]')).to.equal('');
    await page.selectOption('#rb-mode', 'precision');
    await page.fill('#rb-targetHalfWidth', '0.9');
    expect(await page.textContent('[data-field-error=targetHalfWidth]')).to.match(/at most 0.5/);
    await page.fill('#rb-targetHalfWidth', '0.05');
    await page.fill('#rb-maximum', '20');
    await page.fill('#rb-minimum', '30');
    expect(await page.textContent('[data-field-error=maximum]')).to.match(/below the minimum 30/);
    await page.fill('#rb-minimum', '2');
    expect(await page.textContent('[data-field-error=maximum]')).to.equal('');

    const text = await page.inputValue('#rules-text');
    // Every comment of the shipped file is still there, and the old rules read the same.
    const comments = (t: string) => t.split('\n').filter((l) => /^\s*#/.test(l));
    expect(comments(text)).to.deep.equal(comments(before));
    const rules = await yamlRules();
    const old = (YAML.parse(before) as { rules: RuleJs[] }).rules;
    expect(rules.slice(0, old.length)).to.deep.equal(old);
    expect(rules.find((r) => r.id === 'onc-form')).to.deep.equal({
      id: 'onc-form',
      kind: 'oncology',
      priority: 'urgent',
      codes: { include: ['C00-C96', 'D00-D09'] },
      when: { modality: ['CT'], timeOfDay: { from: '22:00', to: '07:00', timeZone: 'Europe/London' } },
      extraKeywords: ['tumour board'],
    });
    expect(rules.find((r) => r.id === 'qa-precision')).to.deep.equal({
      id: 'qa-precision',
      kind: 'sampling',
      priority: 'routine',
      rate: 0.1,
      period: 'month',
      minimum: 2,
      mode: 'precision',
      targetHalfWidth: 0.05,
      maximum: 20,
    });
  });

  it('previews the forecast and the difference from the active version, then saves the text with its comments', async () => {
    await page.click('#dry-run-button');
    await page.waitForSelector('[data-testid=forecast]');
    expect(Number(await page.textContent('[data-k=cases-per-day]'))).to.be.greaterThan(0);
    // The shipped oncology rule flags the study; onc-form does not: its report was signed at 10:00, not overnight.
    expect(await page.textContent('[data-testid=forecast-rules]'))
      .to.include('oncology')
      .and.not.include('onc-form');
    expect(await page.textContent('[data-testid=forecast-load]')).to.match(/Peak open cases/);
    // The flagged study is flagged by the active version too: no difference for it.
    expect(await page.textContent('[data-testid=diff-new]')).to.not.include(flagged.study.studyInstanceUid);

    await page.fill('#rules-comment', 'built in the form');
    await page.click('#save-rules');
    await page.waitForFunction(() => /Saved: version 2/.test(document.querySelector('[data-k=version]')?.textContent ?? ''));
    const active = await fx.call('GET', '/api/rules', T.qa);
    expect(active.body['version']).to.equal(2);
    expect(String(active.body['yaml'])).to.equal(await page.inputValue('#rules-text'));
    expect(String(active.body['yaml'])).to.match(/^# Second-read rules\./);
    expect((active.body['rules'] as RuleJs[]).map((r) => r.id)).to.include.members(['onc-form', 'qa-precision']);
  });

  it('a change in the YAML shows in the form, and a form change shows in the YAML', async () => {
    const text = await page.inputValue('#rules-text');
    await page.fill('#rules-text', text.replace('rate: 0.1\n', 'rate: 0.2 # raised after the forecast\n'));
    // Back to the form: it reads the text again.
    await page.hover('[data-testid=rule-builder] h2');
    const idx = (await yamlRules()).findIndex((r) => r.id === 'qa-precision');
    await page.selectOption('#rb-rule', String(idx));
    expect(await page.inputValue('#rb-rate')).to.equal('0.2');
    expect(await page.inputValue('#rb-targetHalfWidth')).to.equal('0.05');
    expect(await page.inputValue('#rb-mode')).to.equal('precision');

    await page.fill('#rb-rate', '0.25');
    const after = await page.inputValue('#rules-text');
    // The edited value changed in place: the comment written next to it stays.
    expect(after).to.include('rate: 0.25 # raised after the forecast');
    expect((await yamlRules())[idx]!['rate']).to.equal(0.25);
  });

  it("statistics read in sensible units; a radiologist's page shows the interval; the peer-review CSV downloads", async () => {
    await fx.caseWhen(flagged.caseId, 'awaiting-read', (c) => c['state'] === 'awaiting-read');
    const c = await fx.caseOf(flagged.caseId);
    const sent = await fx.call('POST', `/api/cases/${flagged.caseId}/report`, T.system, {
      text: 'Concur.',
      radpeerScore: '2a',
      readerId: String(c['readerId']),
    });
    expect(sent.status, sent.text).to.equal(201);

    await page.click('[data-nav=stats]');
    await page.waitForSelector('[data-testid=stats] [data-k=turnaround]');
    // The read took seconds: shown as such, not as "0 / 0" hours.
    expect(await page.textContent('[data-k=turnaround]')).to.match(/^\d+ (s|min) \/ \d+ (s|min)$/);
    expect(await page.textContent('[data-testid=enrichment]')).to.include('enrichment: oncology');

    await page.click('[data-radiologist=RAD7]');
    await page.waitForSelector('[data-testid=stats-radiologist] [data-k=weighted]');
    expect(await page.textContent('h1')).to.equal('Statistics: RAD7');
    expect(await page.textContent('[data-k=weighted]')).to.equal('100.0 %');
    // Wilson, 1 discrepant of 1: low = 1 / (1 + 1.96^2) = 0.2065 (kept to four decimals), high = 1.
    expect(await page.textContent('[data-k=interval]')).to.match(/^\(95 % CI 20\.6 %–100\.0 %\)$/);
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('[data-csv=peer-review]')]);
    const lines = readFileSync((await download.path())!, 'utf8').split('\r\n');
    expect(lines[0]).to.equal(
      'case_id,first_reader,second_reader,modality,radpeer_score,discrepant_2plus,significant_2b_plus,first_read_at,case_opened_at,second_read_at,arbitrated,selection,weight',
    );
    expect(lines[1]).to.match(new RegExp(`^${flagged.caseId},RAD7,${String(c['readerId'])},CT,2a,true,false,.*,false,oncology,1$`));

    await page.click('[data-nav=sampling]');
    await page.waitForSelector('[data-testid=sampling-cells]');
  });
});
