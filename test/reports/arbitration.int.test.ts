import path from 'node:path';
import { existsSync, readFileSync } from 'node:fs';
import { expect } from 'chai';
import YAML from 'yaml';
import type { BrowserContext, Page } from 'playwright-core';
import { buildConfig } from '../../src/config/load.js';
import { createGateway } from '../../src/gateway.js';
import { outputUids } from '../../src/outputs/sr-builder.js';
import { Hl7Message } from '../../src/hl7/hl7-message.js';
import { collectPageErrors, launchChromium, type ChromiumProfile } from '../helpers/chromium.js';
import { CONSOLE_TOKENS, ConsoleFixture } from '../helpers/console-fixture.js';
import { eventually } from '../helpers/eventually.js';
import { RawMllpPeer, silentLogger } from '../helpers/hl7-peers.js';
import { testDatabaseUrl } from '../helpers/tmp.js';
import { openApiDocument, validateJson } from '../helpers/json-schema.js';

/** The 200 answer of an operation, as the OpenAPI document describes it. */
function expectSpec(path: string, method: 'get' | 'post', body: unknown): void {
  const op = openApiDocument.paths[path]![method]!;
  const schema = op.responses['200']!.content!['application/json']!.schema;
  expect(validateJson(schema, body, openApiDocument.components.schemas), `${method} ${path}`).to.deep.equal([]);
}

// The fixture's own helpers (flaggedCase) call with the console tokens.
const T = { ...CONSOLE_TOKENS, drC: 'arb-reader-c-token-0123456789ab' };
const TOKEN_OF: Record<string, string> = { 'dr-a': T.drA, 'dr-b': T.drB, 'dr-c': T.drC };

/** Three CT readers on one pool, gateway assignment; SQLite or PostgreSQL (GATEWAY_TEST_DATABASE_URL). */
class ArbitrationFixture extends ConsoleFixture {
  override async start(): Promise<void> {
    await this.pool.start();
    await this.ris.start();
    const config = buildConfig({
      dicom: { port: 0, stableAfterSeconds: 0.2 },
      hl7: { port: 0, ris: { host: '127.0.0.1', port: this.ris.port } },
      http: { port: 0 },
      storage: { dir: path.join(this.tmp.dir, 'data'), minFreeMb: 0 },
      database: { url: testDatabaseUrl(path.join(this.tmp.dir, 'gw.db')) },
      destinations: [{ id: 'pool', type: 'dimse', host: '127.0.0.1', port: this.pool.port, aeTitle: 'POOL' }],
      readers: [
        { id: 'dr-a', name: 'Ada Reader', subspecialties: ['oncology'], modalities: ['CT'], destination: 'pool', maxOpenCases: 20, group: 'h1' },
        { id: 'dr-b', name: 'Ben Reader', subspecialties: ['oncology'], modalities: ['CT'], destination: 'pool', maxOpenCases: 20, group: 'h1' },
        { id: 'dr-c', name: 'Cleo Arbiter', subspecialties: ['oncology', 'chest'], modalities: ['CT'], destination: 'pool', maxOpenCases: 20, group: 'h2' },
      ],
      assignment: { strategy: 'gateway', avoidSameGroup: false },
      // The SR of the second read goes to the pool's archive here (a PACS in a site), so the arbitrated one can be seen.
      outputs: { dicomSr: { destination: 'pool' } },
      forwarding: { pollIntervalSeconds: 0.1 },
      writeBack: { ackTimeoutSeconds: 1, backoffBaseSeconds: 0.1, backoffMaxSeconds: 0.3, pollIntervalSeconds: 0.1, maxAttempts: 3 },
      auth: {
        tokens: [
          { token: T.admin, role: 'admin', name: 'alice-admin' },
          { token: T.qa, role: 'qa', name: 'quinn-qa' },
          { token: T.drA, role: 'reader', readerId: 'dr-a', name: 'ada' },
          { token: T.drB, role: 'reader', readerId: 'dr-b', name: 'ben' },
          { token: T.drC, role: 'reader', readerId: 'dr-c', name: 'cleo' },
        ],
      },
    });
    this.gw = createGateway(config, { logger: silentLogger });
    await this.gw.start();
    this.base = `http://127.0.0.1:${this.gw.ports().http}`;
    this.hl7 = await RawMllpPeer.connect(this.gw.ports().hl7);
  }
}

const FIRST_TEXT = 'spiculated mass';
const SECOND_TEXT = 'SECOND-READ: the 9 mm nodule in the left lower lobe was missed';
const SECOND_TEXT_2 = 'SECOND-READ-TWO: adrenal nodule not mentioned';

/** Nothing of either read: their texts, the score that asked for arbitration, their readers. */
function expectBlinded(what: string, text: string, o: { score: string; secondReader: string }): void {
  expect(text, `${what}: first report`).not.to.include(FIRST_TEXT);
  expect(text, `${what}: second report`).not.to.include('SECOND-READ');
  expect(text, `${what}: first reader`).not.to.include('RAD7');
  expect(text, `${what}: second reader`).not.to.include(o.secondReader);
  expect(text, `${what}: score`).not.to.match(new RegExp(`RADPEER|radpeer|"${o.score}"|\\b${o.score}\\b`));
}

describe('arbitration: a discrepant second read goes to a blinded third reader whose verdict is written back', function () {
  this.timeout(120_000);
  const fx = new ArbitrationFixture();
  let chrome: ChromiumProfile | undefined;
  let context: BrowserContext | undefined;
  const pageErrors: string[] = [];
  let c1: { caseId: string; accession: string; second: string; arbitrator: string };
  let c2: { caseId: string; accession: string; second: string; arbitrator: string };

  before(async () => {
    await fx.start();
    // The shipped oncology rule, with arbitration at RADPEER 2b, 3a, 3b by a chest reader.
    const current = (await fx.call('GET', '/api/rules', T.qa)).body as { rules: Record<string, unknown>[] };
    const rules = current.rules.map((r) => (r['id'] === 'oncology' ? { ...r, arbitration: { when: ['2b', '3a', '3b'], readerGroup: 'chest' } } : r));
    const put = await fx.call('PUT', '/api/rules', T.qa, { rules, comment: 'arbitration for oncology' });
    expect(put.status, put.text).to.be.oneOf([200, 201]);
  });
  after(async () => {
    await chrome?.close();
    if (fx.gw) await fx.stop();
    else fx.tmp.cleanup();
  });

  async function discrepantCase(score: string, text: string) {
    const { caseId, accession } = await fx.flaggedCase();
    const c = await fx.caseOf(caseId);
    const second = String(c['readerId']);
    expect(['dr-a', 'dr-b']).to.include(second);
    const rep = await fx.call('POST', `/api/cases/${caseId}/report`, TOKEN_OF[second], { text, radpeerScore: score });
    expect(rep.status, rep.text).to.equal(201);
    const after = await fx.caseOf(caseId);
    expect(after['state']).to.equal('arbitration');
    const arb = after['arbitration'] as Record<string, unknown>;
    // readerGroup chest: only dr-c has it; never the second reader.
    expect(arb).to.include({ state: 'open', arbitratorId: 'dr-c', triggerScore: score });
    return { caseId, accession, second, arbitrator: 'dr-c' };
  }

  it('holds the write-back and assigns the third reader (audited), never the first or second reader', async () => {
    c1 = await discrepantCase('3a', SECOND_TEXT);
    const c = await fx.caseOf(c1.caseId);
    expect(c['writeBack'], 'no write-back before the verdict').to.equal(null);
    // Every job due now has run (a write-back would be one, and is sent by it): the RIS still has nothing of this case.
    await fx.gw.jobs.drain();
    expect(fx.ris.received.filter((m) => m.includes(c1.accession))).to.deep.equal([]);
    const audit = await fx.gw.db.selectFrom('audit_events').select(['action', 'details']).where('entity_id', '=', c1.caseId).execute();
    const actions = audit.map((a) => a.action);
    expect(actions).to.include.members(['case.reported', 'case.arbitration', 'case.arbitration-assigned', 'case.discrepant']);
  });

  it('shows the third reader neither read, score nor reader (API), and refuses the others', async () => {
    const asArbitrator = (p: string) => fx.call('GET', p, T.drC);
    const caseView = await asArbitrator(`/api/cases/${c1.caseId}`);
    expect(caseView.status, caseView.text).to.equal(200);
    expect(caseView.body['accessionNumber']).to.equal(c1.accession);
    expect(caseView.body).not.to.have.any.keys('secondReport', 'reasons', 'readerId', 'discrepant', 'writeBack', 'ruleIds');
    expectBlinded('GET /cases/{id}', caseView.text, { score: '3a', secondReader: c1.second });
    expectSpec('/api/cases/{id}', 'get', caseView.body);
    expectSpec('/api/cases/{id}', 'get', await fx.caseOf(c1.caseId));
    const arb = await asArbitrator(`/api/cases/${c1.caseId}/arbitration`);
    expect(arb.status, arb.text).to.equal(200);
    expect(arb.body).to.include({ state: 'open', arbitratorId: 'dr-c' });
    expectBlinded('GET /cases/{id}/arbitration', arb.text, { score: '3a', secondReader: c1.second });
    expectSpec('/api/cases/{id}/arbitration', 'get', arb.body);
    expectSpec('/api/cases/{id}/arbitration', 'get', (await fx.call('GET', `/api/cases/${c1.caseId}/arbitration`, T.qa)).body);
    expectSpec('/api/arbitrations', 'get', (await fx.call('GET', '/api/arbitrations', T.qa)).body);
    const list = await asArbitrator('/api/arbitrations');
    expect((list.body['items'] as { caseId: string }[]).map((i) => i.caseId)).to.include(c1.caseId);
    expectBlinded('GET /arbitrations', list.text, { score: '3a', secondReader: c1.second });
    expectSpec('/api/arbitrations', 'get', list.body);
    // Not theirs to read or report: the first report, the second reader's report route, the case list of the second reader.
    expect((await asArbitrator(`/api/cases/${c1.caseId}/primary-report`)).status).to.equal(403);
    expect((await fx.call('POST', `/api/cases/${c1.caseId}/report`, T.drC, { text: 'x', radpeerScore: '1' })).status).to.equal(403);
    // The second reader may not see or decide the arbitration.
    expect((await fx.call('GET', `/api/cases/${c1.caseId}/arbitration`, TOKEN_OF[c1.second]!)).status).to.equal(403);
    expect((await fx.call('POST', `/api/cases/${c1.caseId}/arbitration`, TOKEN_OF[c1.second]!, { verdict: 'agree-second', text: 'mine' })).status).to.equal(
      403,
    );
    // A bad verdict lists its problems.
    const bad = await fx.call('POST', `/api/cases/${c1.caseId}/arbitration`, T.drC, { verdict: 'other', text: '' });
    expect(bad.status).to.equal(400);
    expect(JSON.stringify(bad.body)).to.include('radpeerScore').and.include('text');
  });

  it("console: the third reader's page is blinded until they ask for the readings (logged); their verdict closes it", async function () {
    if (!existsSync('/usr/bin/chromium')) {
      console.log('skipped: chromium not installed');
      // Without a browser the verdict goes through the API, so the write-back and statistics tests still run.
      const r = await fx.call('POST', `/api/cases/${c1.caseId}/arbitration`, T.drC, { verdict: 'agree-second', text: 'Nodule confirmed on review.' });
      expect(r.status, r.text).to.equal(200);
      this.skip();
    }
    chrome = await launchChromium(this);
    context = chrome.context;
    const page: Page = await context.newPage();
    collectPageErrors(page, pageErrors);
    await page.goto(`${fx.base}/`);
    await page.fill('#token', T.drC);
    await page.click('#login');
    await page.waitForSelector('#who:not(:empty)');
    // "My cases" points to the arbitrations waiting for this reader.
    await page.waitForSelector('[data-testid=my-arbitrations] a');
    await page.click('[data-testid=my-arbitrations] a');
    await page.waitForSelector(`[data-arbitration="${c1.caseId}"]`);
    expectBlinded('console list', (await page.textContent('main')) ?? '', { score: '3a', secondReader: c1.second });
    await page.click(`[data-arbitration="${c1.caseId}"]`);
    await page.waitForSelector('[data-testid=arbitration] [data-k=blinded-note]');
    expect(await page.textContent('[data-k=accession]')).to.equal(c1.accession);
    // The verdict form lists every RADPEER score to choose from: the rest of the page must name none.
    expect(await page.$('#verdict-form')).not.to.equal(null);
    const outsideForm = await page.evaluate(() => {
      const main = document.querySelector('main')!.cloneNode(true) as unknown as {
        querySelector(s: string): { remove(): void } | null;
        textContent: string | null;
      };
      main.querySelector('#verdict-form')?.remove();
      return main.textContent ?? '';
    });
    expectBlinded('console arbitration page', outsideForm, { score: '3a', secondReader: c1.second });
    // The case page, opened by hand, is blinded too.
    await page.goto(`${fx.base}/#/cases/${c1.caseId}`);
    await page.waitForSelector('[data-testid=case] [data-k=state]');
    expectBlinded('console case page', (await page.textContent('main')) ?? '', { score: '3a', secondReader: c1.second });

    await page.goto(`${fx.base}/#/arbitration/${c1.caseId}`);
    await page.waitForSelector('#show-readings');
    await page.click('#show-readings');
    await page.waitForFunction(() => (document.querySelector('[data-testid=readings]')?.textContent ?? '').includes('Second reading'));
    const readings = (await page.textContent('[data-testid=readings]')) ?? '';
    expect(readings).to.include(FIRST_TEXT).and.include(SECOND_TEXT);
    expect(readings).not.to.include('RAD7').and.not.to.include(c1.second);
    await page.selectOption('#verdict', 'agree-second');
    await page.fill('#verdict-text', 'Nodule confirmed on review.');
    await page.click('#submit-verdict');
    await page.waitForSelector('[data-k=verdict]');
    expect(await page.textContent('[data-k=verdict]')).to.include('agree-second');
    expect(await page.textContent('[data-k=arbitration-state]')).to.equal('done');
    const revealed = await fx.gw.db
      .selectFrom('audit_events')
      .select('actor')
      .where('entity_id', '=', c1.caseId)
      .where('action', '=', 'case.arbitration-readings-revealed')
      .execute();
    expect(revealed.map((r) => r.actor)).to.deep.equal(['cleo']);
    expect(pageErrors).to.deep.equal([]);
    await page.close();
  });

  it('writes back after the verdict: the ORU carries the verdict, the final score and the comment', async () => {
    const done = await fx.caseWhen(c1.caseId, 'written back', (c) => c['state'] === 'written-back');
    expect(done['arbitration']).to.include({ state: 'done', verdict: 'agree-second', finalScore: '3a', decidedBy: 'cleo' });
    const oru = fx.ris.received.filter((m) => m.includes(c1.accession) && /ORU\^R01/.test(m));
    expect(oru).to.have.length(1);
    const m = Hl7Message.parse(oru[0]!);
    const obx = (code: string) =>
      m
        .all('OBX')
        .filter((s) => m.read(s, { field: 3 }) === code)
        .map((s) => m.rawField(s, 5));
    expect(obx('RADPEER')).to.deep.equal(['3a^RADPEER 3a^RADPEER']);
    expect(obx('ARBVERD')).to.deep.equal(['second^Agrees with the second read^L']);
    expect(obx('RADPEERF')).to.deep.equal(['3a^RADPEER 3a^RADPEER']);
    expect(obx('ARBTXT')).to.deep.equal(['Nodule confirmed on review.']);
    // The SR builder's input (arbitrationOf) says the same.
    const { arbitrationOf } = await import('../../src/reports/arbitration.service.js');
    expect(await arbitrationOf(fx.gw.db, c1.caseId, fx.gw.config.readers)).to.deep.include({
      verdict: 'second',
      readerName: 'Cleo Arbiter',
      text: 'Nodule confirmed on review.',
      finalScore: '3a',
      arbitratorId: 'dr-c',
    });
    // The SR is issued again with the verdict: a new object (its own UID) beside the second read's first SR.
    const reportId = String((done['secondReport'] as Record<string, unknown>)['id']);
    const study = String(done['studyInstanceUid']);
    const firstSr = outputUids(study, reportId, 'sr').sopInstanceUid;
    const arbitratedSr = outputUids(study, `${reportId}:arbitrated`, 'sr').sopInstanceUid;
    await eventually(() => fx.pool.stores.some((x) => x.sopInstanceUid === arbitratedSr), 'the arbitrated SR at the archive', 20_000);
    expect(
      fx.pool.stores.some((x) => x.sopInstanceUid === firstSr),
      'the first SR',
    ).to.equal(true);
    const file = await fx.pool.db.selectFrom('instances').select('file_path').where('sop_instance_uid', '=', arbitratedSr).executeTakeFirstOrThrow();
    const sr = readFileSync(path.isAbsolute(file.file_path) ? file.file_path : path.join(fx.pool.dir, 'spool', file.file_path)).toString('utf8');
    expect(sr).to.include('Nodule confirmed on review.').and.to.include('Cleo');
    // Once done, the third reader sees their own verdict, still nothing of the reads.
    const mine = await fx.call('GET', `/api/cases/${c1.caseId}/arbitration`, T.drC);
    expect(mine.body).to.include({ state: 'done', verdict: 'agree-second' });
    expect(mine.text).not.to.include(SECOND_TEXT).and.not.to.include(FIRST_TEXT);
    expect((await fx.call('POST', `/api/cases/${c1.caseId}/arbitration`, T.drC, { verdict: 'agree-first', text: 'again' })).status).to.equal(409);
  });

  it('QA may decide (agree-first: the first read stands, final score 1); statistics show the share and the kappa', async () => {
    c2 = await discrepantCase('2b', SECOND_TEXT_2);
    const readings = await fx.call('GET', `/api/cases/${c2.caseId}/arbitration/readings`, T.drC);
    expect(readings.status, readings.text).to.equal(200);
    expect(readings.body['second']).to.deep.equal({ text: SECOND_TEXT_2, impression: null });
    expectSpec('/api/cases/{id}/arbitration/readings', 'get', readings.body);
    const r = await fx.call('POST', `/api/cases/${c2.caseId}/arbitration`, T.qa, { verdict: 'agree-first', text: 'Not a nodule: vessel.' });
    expect(r.status, r.text).to.equal(200);
    expectSpec('/api/cases/{id}/arbitration', 'post', r.body);
    await fx.caseWhen(c2.caseId, 'written back', (c) => c['state'] === 'written-back');
    const oru = fx.ris.received.find((m) => m.includes(c2.accession) && /ORU\^R01/.test(m))!;
    expect(oru).to.include('first^Agrees with the first read^L').and.include('1^RADPEER 1^RADPEER');

    const stats = (await fx.call('GET', '/api/stats', T.qa)).body;
    expectSpec('/api/stats', 'get', stats);
    expect(stats['arbitration']).to.deep.equal({ requested: 2, decided: 2, confirmedFirst: 1, confirmedSecond: 1, other: 0, confirmedSecondShare: 0.5 });
    expect(stats).to.have.property('totals'); // existing fields kept
    const pairs = stats['interReaderAgreement'] as {
      radiologistId: string;
      readerId: string;
      modality: string;
      n: number;
      table: Record<string, number>;
      kappa: number | null;
    }[];
    const all = pairs.reduce((n, p) => n + p.n, 0);
    expect(all).to.equal(2);
    for (const p of pairs) expect(p).to.include({ radiologistId: 'RAD7', modality: 'CT' });
    // Both second reads 2+; the third reader: 2+ once (3a), 1 once (agree-first): 0/0/1/1; po 0.5, pe 0.5, kappa 0.
    const total = stats['interReaderAgreementTotal'] as { table: Record<string, number>; kappa: number | null; observedAgreement: number };
    expect(total.table).to.deep.equal({ agreeAgree: 0, agreeDiscrepant: 0, discrepantAgree: 1, discrepantDiscrepant: 1 });
    expect(total).to.include({ n: 2, observedAgreement: 0.5, kappa: 0 });

    if (!context) return;
    const page = await context.newPage();
    collectPageErrors(page, pageErrors);
    await page.goto(`${fx.base}/`);
    await page.fill('#token', T.qa);
    await page.click('#login');
    await page.waitForSelector('#who:not(:empty)');
    await page.goto(`${fx.base}/#/stats`);
    await page.waitForSelector('[data-testid=agreement] [data-k=arbitrations]');
    expect(await page.textContent('[data-k=arbitrations]')).to.equal('2 of 2');
    expect(await page.textContent('[data-k=confirmedSecondShare]')).to.equal('50.0 %');
    expect(await page.textContent('[data-k=kappaTotal]')).to.equal('0.00');
    expect(await page.textContent('[data-testid=agreement-table]')).to.include('RAD7');

    // The rule builder offers the option: it shows the active rule's arbitration and writes an edit into the YAML.
    await page.goto(`${fx.base}/#/rules`);
    await page.waitForSelector('#rb-rule');
    const labels = await page.$$eval('#rb-rule option', (os) => os.map((o) => o.textContent));
    await page.selectOption('#rb-rule', String(labels.findIndex((l) => (l ?? '').startsWith('oncology '))));
    expect(await page.inputValue('#rb-arbitration')).to.equal('2b, 3a, 3b');
    expect(await page.inputValue('#rb-arbitration-readerGroup')).to.equal('chest');
    await page.fill('#rb-arbitration', '2a, 2b, 3a, 3b');
    const yamlRules = (YAML.parse(await page.inputValue('#rules-text')) as { rules: { id: string; arbitration?: unknown }[] }).rules;
    expect(yamlRules.find((r) => r.id === 'oncology')!.arbitration).to.deep.equal({ when: ['2a', '2b', '3a', '3b'], readerGroup: 'chest' });
    expect(pageErrors).to.deep.equal([]);
    await page.close();
  });

  it('an arbitration nobody fits is unassigned (announced); QA names a third reader', async () => {
    // A rule set whose third reader must be a neuro reader: nobody fits (cases keep the version they were opened under).
    const current = (await fx.call('GET', '/api/rules', T.qa)).body as { rules: Record<string, unknown>[] };
    const rules = current.rules.map((r) => (r['id'] === 'oncology' ? { ...r, arbitration: { when: ['3b'], readerGroup: 'neuro' } } : r));
    expect((await fx.call('PUT', '/api/rules', T.qa, { rules })).status).to.be.oneOf([200, 201]);
    {
      const { caseId } = await fx.flaggedCase();
      const second = String((await fx.caseOf(caseId))['readerId']);
      expect((await fx.call('POST', `/api/cases/${caseId}/report`, TOKEN_OF[second]!, { text: 'SECOND-READ: missed', radpeerScore: '3b' })).status).to.equal(
        201,
      );
      const c = await fx.caseOf(caseId);
      expect(c['state']).to.equal('arbitration');
      expect(c['arbitration']).to.include({ state: 'unassigned', arbitratorId: null });
      expect(String((c['arbitration'] as Record<string, unknown>)['unassignedReason'])).to.match(/subspecialty neuro/);
      const other = second === 'dr-a' ? 'dr-b' : 'dr-a';
      expect((await fx.call('POST', `/api/cases/${caseId}/arbitration/assign`, T.qa, { readerId: second })).status).to.equal(409);
      const assigned = await fx.call('POST', `/api/cases/${caseId}/arbitration/assign`, T.qa, { readerId: other, reason: 'chest reader away' });
      expect(assigned.status, assigned.text).to.equal(200);
      expect(assigned.body).to.include({ state: 'open', arbitratorId: other });
      expectSpec('/api/cases/{id}/arbitration/assign', 'post', assigned.body);
      expect((await fx.call('GET', `/api/cases/${caseId}/arbitration`, TOKEN_OF[other]!)).status).to.equal(200);
      // Cancelling the case ends the arbitration with it.
      expect((await fx.call('POST', `/api/cases/${caseId}/cancel`, T.qa, { reason: 'test' })).status).to.equal(200);
      const after = await fx.caseOf(caseId);
      expect(after['arbitration']).to.include({ state: 'cancelled' });
      expect(
        await eventually(
          async () => ((await fx.call('GET', '/api/arbitrations', TOKEN_OF[other]!)).body['items'] as unknown[]).length === 0 || undefined,
          'off the worklist',
        ),
      ).to.equal(true);
    }
  });
});

declare const document: { querySelector(selector: string): { textContent: string | null; cloneNode(deep: boolean): unknown } | null };
