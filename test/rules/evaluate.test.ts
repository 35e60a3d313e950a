import { expect } from 'chai';
import { compileRuleSet, evaluate } from '../../src/rules/evaluate.js';
import { engine, finalReport, makeInput, makeOrder, makeStudy, ruleIds, rulesFromYaml, SECRET } from './fixtures.js';

const ONC_NODULE_REPORT = finalReport(
  'CT CHEST WITH CONTRAST\nCLINICAL HISTORY: Staging of newly diagnosed adenocarcinoma of the right upper lobe.\nFINDINGS: 3.1 cm spiculated mass in the right upper lobe. Enlarged right hilar node. No pleural effusion.\nIMPRESSION: Right upper lobe mass with ipsilateral hilar adenopathy, in keeping with known primary. No distant metastases in the chest.',
);

describe('rules/evaluate: several rules and conditions', () => {
  const set = `
rules:
  - { id: onc, kind: oncology, priority: urgent, slaHours: 24, readerGroup: oncology, deidentify: true }
  - { id: disc, kind: discordance, priority: stat, destination: pool-web, blinded: false }
  - { id: manual, kind: manual, priority: routine }
  - { id: off, kind: manual, priority: stat, enabled: false }
`;
  const run = engine(set);

  it('one decision with every reason, the most urgent priority and merged settings', () => {
    const d = run({
      order: makeOrder({ diagnoses: [{ code: 'C34.11', source: 'DG1' }], indication: 'Staging' }),
      reports: [ONC_NODULE_REPORT],
      aiResults: [{ findingText: 'Pneumothorax', positive: true }],
      manualRequests: [{ reason: 'tumour board', requestedBy: 'dr-onc' }],
    });
    expect(ruleIds(d)).to.deep.equal(['onc', 'disc', 'manual']);
    expect(d.reasons[0]!.detail).to.equal(
      'ICD-10 C34.11 in DG1; keyword "Staging" in indication; keyword "Staging" in report; keyword "adenocarcinoma" in report',
    );
    expect(d.reasons[1]!.detail).to.include('AI finding "Pneumothorax"');
    expect(d).to.deep.include({
      flagged: true,
      priority: 'stat',
      slaHours: 24,
      destinationId: 'pool-web',
      readerGroup: 'oncology',
      blinded: true,
      deidentify: true,
      basis: 'final-report',
    });
  });

  it('an unflagged decision is explicit about it', () => {
    expect(run({})).to.deep.equal({ flagged: false, reasons: [], priority: null, blinded: true, samplingSlots: [], basis: 'final-report' });
  });

  it('unblinded only when every firing rule allows it', () => {
    const d = run({ reports: [finalReport('IMPRESSION: normal.'), finalReport('IMPRESSION: rib fracture.', { status: 'C' })] });
    expect(d).to.deep.include({ flagged: true, blinded: false, priority: 'stat' });
  });

  describe('when conditions', () => {
    const conditional = engine(`
rules:
  - id: ct-mr-not-res1
    kind: manual
    priority: urgent
    when: { all: [ { modality: [CT, MR] }, { not: { primaryRadiologist: [res1, "locum-*"] } } ] }
  - id: adult-chest-er
    kind: manual
    priority: stat
    when: { bodyPart: chest, ageYears: { min: 18 }, any: [ { referringService: [ED, ER] }, { orderPriority: [S] } ] }
  - id: from-pacs2
    kind: manual
    priority: routine
    when: { callingAe: [PACS2], procedureCode: ["CT*"] }
`);
    const ask = { manualRequests: [{ reason: 'r', requestedBy: 'u' }] };

    it('modality and not-radiologist', () => {
      expect(ruleIds(conditional({ ...ask, reports: [finalReport('x', { radiologistId: 'dr-smith' })] }))).to.include('ct-mr-not-res1');
      expect(ruleIds(conditional({ ...ask, reports: [finalReport('x', { radiologistId: 'RES1' })] }))).not.to.include('ct-mr-not-res1');
      expect(ruleIds(conditional({ ...ask, reports: [finalReport('x', { radiologistId: 'locum-7' })] }))).not.to.include('ct-mr-not-res1');
      expect(ruleIds(conditional({ ...ask, study: makeStudy({ modalities: ['CR'] }) }))).not.to.include('ct-mr-not-res1');
      expect(ruleIds(conditional({ ...ask, study: makeStudy({ modalities: ['SR', 'MR'] }) }))).to.include('ct-mr-not-res1');
    });

    it('body part, age bounds and any-of order fields', () => {
      const er = makeOrder({ referringService: 'ed' });
      expect(ruleIds(conditional({ ...ask, order: er }))).to.include('adult-chest-er');
      expect(ruleIds(conditional({ ...ask, order: makeOrder({ priority: 's' }) }))).to.include('adult-chest-er');
      expect(ruleIds(conditional({ ...ask, order: makeOrder({ referringService: 'ONC', priority: 'R' }) }))).not.to.include('adult-chest-er');
      expect(ruleIds(conditional({ ...ask, order: er, study: makeStudy({ patientAgeYears: 17 }) }))).not.to.include('adult-chest-er');
      expect(ruleIds(conditional({ ...ask, order: er, study: makeStudy({ patientAgeYears: undefined }) }))).not.to.include('adult-chest-er');
      expect(ruleIds(conditional({ ...ask, order: er, study: makeStudy({ patientAgeYears: 18 }) }))).to.include('adult-chest-er');
    });

    it('calling AE and procedure code pattern', () => {
      expect(ruleIds(conditional({ ...ask, order: makeOrder(), study: makeStudy({ callingAe: 'PACS2' }) }))).to.include('from-pacs2');
      expect(ruleIds(conditional({ ...ask, order: makeOrder(), study: makeStudy({ callingAe: 'PACS1' }) }))).not.to.include('from-pacs2');
      expect(ruleIds(conditional({ ...ask, study: makeStudy({ callingAe: 'PACS2' }) }))).not.to.include('from-pacs2'); // no order, no procedure code
      expect(ruleIds(conditional({ ...ask, study: makeStudy({ callingAe: 'PACS2' }), order: makeOrder({ procedureCode: 'MRBRAIN' }) }))).not.to.include(
        'from-pacs2',
      );
    });
  });

  it('decides on the latest final or corrected version, not a later preliminary', () => {
    const d = run({
      order: makeOrder({ indication: 'Cough.' }),
      reports: [finalReport('IMPRESSION: Metastatic disease to the liver.'), { status: 'P', text: 'Preliminary addendum: no change.' }],
    });
    expect(ruleIds(d)).to.deep.equal(['onc']);
  });

  it('is pure: the same input gives the same decision and the input is untouched', () => {
    const compiled = compileRuleSet(rulesFromYaml(set), { samplingSecret: SECRET });
    const input = makeInput({ order: makeOrder({ diagnoses: [{ code: 'C61', source: 'DG1' }] }) });
    const snapshot = JSON.stringify(input);
    const a = evaluate(compiled, input);
    const b = evaluate(compiled, input);
    expect(a).to.deep.equal(b);
    expect(JSON.stringify(input)).to.equal(snapshot);
  });

  it('refuses to compile a sampling rule without a secret', () => {
    expect(() => compileRuleSet(rulesFromYaml(`[ { id: qa, kind: sampling, priority: routine, rate: 0.1, period: month } ]`))).to.throw(/secret/);
  });
});
