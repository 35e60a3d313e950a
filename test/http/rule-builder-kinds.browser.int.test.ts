import { expect } from 'chai';
import type { Page } from 'playwright-core';
import YAML from 'yaml';
import { launchChromium, collectPageErrors, type ChromiumProfile } from '../helpers/chromium.js';
import { CONSOLE_TOKENS as T, ConsoleFixture } from '../helpers/console-fixture.js';

interface RuleJs {
  id: string;
  kind: string;
  [k: string]: unknown;
}

/** The discordance, high-stakes and manual forms: build each, read it in YAML, change the YAML, read the form, see a bad value inline. */
describe('rule builder in headless Chromium: discordance, high-stakes and manual forms', function () {
  this.timeout(90_000);
  const fx = new ConsoleFixture();
  let browser: ChromiumProfile | undefined;
  let page: Page;
  const pageErrors: string[] = [];

  before(async function () {
    browser = await launchChromium(this);
    await fx.start();
    page = await browser.context.newPage();
    collectPageErrors(page, pageErrors);
    await page.goto(`${fx.base}/`);
    await page.fill('#token', T.qa);
    await page.click('#login');
    await page.waitForSelector('#who:not(:empty)');
    await page.click('[data-nav=rules]');
    await page.waitForSelector('[data-testid=rule-builder] #rb-form');
  });
  after(async () => {
    await browser?.close();
    if (fx.gw) await fx.stop();
    else fx.tmp.cleanup();
  });
  afterEach(() => {
    const seen = pageErrors.splice(0);
    expect(seen, 'errors in the page').to.deep.equal([]);
  });

  const yamlRules = async (): Promise<RuleJs[]> => (YAML.parse(await page.inputValue('#rules-text')) as { rules: RuleJs[] }).rules;
  const rule = async (id: string): Promise<RuleJs | undefined> => (await yamlRules()).find((r) => r.id === id);
  /** Edits the YAML view (as a user would type there), then comes back to the form. */
  const editYaml = async (id: string, path: (string | number)[], value: unknown) => {
    const doc = YAML.parseDocument(await page.inputValue('#rules-text'));
    const idx = (doc.toJS() as { rules: RuleJs[] }).rules.findIndex((r) => r.id === id);
    if (value === undefined) doc.deleteIn(['rules', idx, ...path]);
    else doc.setIn(['rules', idx, ...path], value);
    await page.fill('#rules-text', String(doc));
    // The form redraws when the pointer comes to it from elsewhere.
    await page.hover('#rules-text');
    await page.hover('[data-testid=rule-builder] h2');
  };
  const add = async (kind: string, id: string) => {
    await page.selectOption('#rb-new-kind', kind);
    await page.click('#rb-add');
    await page.fill('#rb-id', id);
  };

  it('discordance: the AI senders, the whole list of AI findings with synonyms, in YAML and back', async () => {
    const defaults = (await fx.call('GET', '/api/rules', T.qa)).body['defaults'] as { aiSenders: string[]; aiFindings: { id: string; synonyms: string[] }[] };
    expect(defaults.aiSenders).to.deep.equal([]);
    await add('discordance', 'disc-form');
    expect(await page.textContent('[data-testid=rb-ai-senders]')).to.match(/hl7\.aiSenders.*none configured/);
    expect(await page.textContent('[data-testid=rb-aiFindings]')).to.include('pulmonary-embolism');

    // Two extra findings, each with its synonyms (and one with its AI code).
    await page.click('#rb-extraAiFindings-add');
    await page.fill('#rb-extraAiFindings-0-id', 'aortic-aneurysm');
    await page.fill('#rb-extraAiFindings-0-codes', 'AI-AAA');
    await page.fill('#rb-extraAiFindings-0-synonyms', 'aortic aneurysm, AAA');
    await page.click('#rb-extraAiFindings-add');
    await page.fill('#rb-extraAiFindings-1-id', 'rib fracture');
    expect(await page.textContent('[data-field-error=extraAiFindings]')).to.match(/finding 2: an id without spaces/);
    await page.fill('#rb-extraAiFindings-1-id', 'rib-fracture');
    expect(await page.textContent('[data-field-error=extraAiFindings]')).to.match(/"rib-fracture": at least one synonym/);
    await page.fill('#rb-extraAiFindings-1-synonyms', 'rib fracture*');
    expect(await page.textContent('[data-field-error=extraAiFindings]')).to.equal('');
    // The built-in list edited as a whole: the first finding removed.
    await page.click('#rb-aiFindings-customize');
    await page.click('#rb-aiFindings-0-remove');
    await page.uncheck('#rb-check-corrected');

    expect(await rule('disc-form')).to.deep.equal({
      id: 'disc-form',
      kind: 'discordance',
      priority: 'routine',
      extraAiFindings: [
        { id: 'aortic-aneurysm', synonyms: ['aortic aneurysm', 'AAA'], codes: ['AI-AAA'] },
        { id: 'rib-fracture', synonyms: ['rib fracture*'] },
      ],
      aiFindings: defaults.aiFindings.slice(1),
      checks: { correctedReport: false },
    });

    // The YAML view changes a synonym list and drops a finding: the form reads it.
    await editYaml('disc-form', ['extraAiFindings', 1, 'synonyms'], ['rib fracture*', 'fractured rib']);
    expect(await page.inputValue('#rb-extraAiFindings-1-synonyms')).to.equal('rib fracture*, fractured rib');
    await editYaml('disc-form', ['aiFindings'], defaults.aiFindings.slice(1, 2));
    expect(await page.inputValue('#rb-aiFindings-0-id')).to.equal(defaults.aiFindings[1]!.id);
    expect(await page.$('#rb-aiFindings-1-id')).to.equal(null);
    // Back to the built-in list, and a duplicate id shows inline.
    await page.click('#rb-aiFindings-builtin');
    expect((await rule('disc-form'))!['aiFindings']).to.equal(undefined);
    await page.fill('#rb-extraAiFindings-1-id', 'aortic-aneurysm');
    expect(await page.textContent('[data-field-error=extraAiFindings]')).to.match(/duplicate finding id "aortic-aneurysm"/);
    await page.click('#rb-extraAiFindings-1-remove');
    expect((await rule('disc-form'))!['extraAiFindings']).to.deep.equal([{ id: 'aortic-aneurysm', synonyms: ['aortic aneurysm', 'AAA'], codes: ['AI-AAA'] }]);

    // A mistake only the server knows (a misspelt key written in YAML) shows next to the findings after a preview.
    await editYaml('disc-form', ['extraAiFindings', 0, 'synonymz'], ['aneurysm']);
    await page.click('#dry-run-button');
    await page.waitForSelector('#rules-errors li');
    expect(await page.textContent('[data-field-error=extraAiFindings]')).to.match(/synonymz/);
    await editYaml('disc-form', ['extraAiFindings', 0, 'synonymz'], undefined);
  });

  it('high-stakes: procedure codes and keywords in YAML and back; a bad value shows inline', async () => {
    await add('high-stakes', 'hs form');
    expect(await page.textContent('[data-field-error=id]')).to.match(/without spaces/);
    await page.fill('#rb-id', 'hs-form');
    expect(await page.textContent('[data-field-error=id]')).to.equal('');
    await page.fill('#rb-procedureCodes', 'CTA*, MRA*');
    await page.fill('#rb-extraKeywords', 'transplant evaluation');
    await page.fill('#rb-slaHours', '-2');
    expect(await page.textContent('[data-field-error=slaHours]')).to.match(/hours above 0/);
    await page.fill('#rb-slaHours', '24');
    expect(await rule('hs-form')).to.deep.equal({
      id: 'hs-form',
      kind: 'high-stakes',
      priority: 'routine',
      procedureCodes: ['CTA*', 'MRA*'],
      extraKeywords: ['transplant evaluation'],
      slaHours: 24,
    });

    await editYaml('hs-form', ['procedureCodes'], ['PETCT*']);
    expect(await page.inputValue('#rb-procedureCodes')).to.equal('PETCT*');
    expect(await page.inputValue('#rb-extraKeywords')).to.equal('transplant evaluation');
    await editYaml('hs-form', ['slaHours'], 0);
    expect(await page.textContent('[data-field-error=slaHours]')).to.match(/hours above 0/);
    await page.fill('#rb-slaHours', '12');
    expect((await rule('hs-form'))!['slaHours']).to.equal(12);
  });

  it('manual: the request sources in YAML and back; a duplicate id shows inline', async () => {
    await add('manual', 'hs-form');
    expect(await page.textContent('[data-field-error=id]')).to.match(/duplicate rule id "hs-form"/);
    await page.fill('#rb-id', 'manual-form');
    await page.uncheck('#rb-source-order');
    await page.selectOption('#rb-priority', 'urgent');
    expect(await rule('manual-form')).to.deep.equal({ id: 'manual-form', kind: 'manual', priority: 'urgent', sources: { orderFlag: false } });

    await editYaml('manual-form', ['sources'], { api: false, orderFlag: true });
    expect(await page.isChecked('#rb-source-api')).to.equal(false);
    expect(await page.isChecked('#rb-source-order')).to.equal(true);
    expect(await page.inputValue('#rb-priority')).to.equal('urgent');
    await page.check('#rb-source-api');
    expect((await rule('manual-form'))!['sources']).to.deep.equal({ api: true, orderFlag: true });

    // The server agrees the three rules are valid: the preview runs without errors.
    await page.click('#dry-run-button');
    await page.waitForSelector('[data-testid=forecast], #rules-errors :first-child');
    expect(await page.textContent('#rules-errors')).to.equal('');
  });
});
