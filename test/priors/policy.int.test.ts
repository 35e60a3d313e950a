import { expect } from 'chai';
import { buildConfig } from '../../src/config/load.js';
import { createIdSource } from '../../src/db/sortable-id.js';
import { PriorsService } from '../../src/priors/priors.service.js';
import { RulesService } from '../../src/rules/rules.service.js';
import { validateRuleSet } from '../../src/rules/rule.schema.js';
import { silentLogger } from '../helpers/hl7-peers.js';
import { openTempDatabase } from '../helpers/tmp.js';

describe("priors settings: the gateway's, overridden per rule", () => {
  let temp: Awaited<ReturnType<typeof openTempDatabase>>;
  beforeEach(async () => {
    temp = await openTempDatabase();
  });
  afterEach(() => temp.close());

  it("a rule's `priors` block overrides the keys it sets; the first of the case's rules with one applies", async () => {
    const rules = [
      { id: 'qa', kind: 'sampling', priority: 'routine', rate: 0.1, period: 'month', minimum: 0 },
      { id: 'onc', kind: 'oncology', priority: 'urgent', priors: { maxStudies: 6, lookbackDays: 3650 } },
      { id: 'stakes', kind: 'high-stakes', priority: 'urgent', keywords: ['transplant'], priors: { maxStudies: 0 } },
    ];
    const config = buildConfig({ rules, priors: { maxStudies: 2, lookbackDays: 365, sameModality: true } });
    const newId = createIdSource();
    const ruleService = new RulesService({ db: temp.opened.db, logger: silentLogger, config, newId });
    await ruleService.init();
    const priors = new PriorsService({
      db: temp.opened.db,
      logger: silentLogger,
      config,
      pacs: undefined,
      rules: ruleService,
      sink: { storeInstance: async () => 'stored' },
      spool: undefined as never,
      newId,
    });
    expect(await priors.policyFor(['qa'])).to.deep.equal({ maxStudies: 2, lookbackDays: 365, sameModality: true });
    expect(await priors.policyFor(['qa', 'onc', 'stakes'])).to.deep.equal({ maxStudies: 6, lookbackDays: 3650, sameModality: true });
    expect(await priors.policyFor(['stakes', 'onc'])).to.deep.include({ maxStudies: 0 });
  });

  it('the rule schema refuses a malformed `priors` block', () => {
    const r = validateRuleSet([{ id: 'onc', kind: 'oncology', priority: 'urgent', priors: { maxStudies: -1, lookbackDays: 0, extra: 1 } }]);
    expect(r.ok).to.equal(false);
    if (r.ok) return;
    const paths = r.errors.map((e) => e.path).join(' ');
    expect(paths).to.include('priors');
  });
});
