import { expect } from 'chai';
import { engine, finalReport, makeOrder, makeStudy } from './fixtures.js';

const DISCORDANCE = `
rules:
  - { id: disc, kind: discordance, priority: urgent }
`;

const CLEAR_CHEST = finalReport(
  'CT CHEST WITHOUT CONTRAST\nFINDINGS: The central airways are patent. No consolidation. No pleural effusion or pneumothorax.\nIMPRESSION: No acute cardiopulmonary process.',
);

describe('rules/evaluate: discordance', () => {
  const run = engine(DISCORDANCE);

  describe('(a) AI positive, report does not affirm', () => {
    it('fires when the report never mentions the AI finding', () => {
      const d = run({ reports: [CLEAR_CHEST], aiResults: [{ findingCode: 'LN', findingText: 'Pulmonary nodule', positive: true }] });
      expect(d.reasons).to.deep.equal([
        {
          ruleId: 'disc',
          kind: 'discordance',
          detail: 'AI finding "Pulmonary nodule" (pulmonary-nodule) positive, report does not affirm it: report does not mention it',
        },
      ]);
    });

    it('fires when the report negates it', () => {
      const report = finalReport('FINDINGS: No pulmonary nodules. No pleural effusion.\nIMPRESSION: Normal chest CT.');
      const d = run({ reports: [report], aiResults: [{ findingText: 'lung nodule', positive: true }] });
      expect(d.reasons[0]!.detail).to.include('report negates it ("nodules")');
    });

    it('does not fire when the report affirms it with a synonym, or only hedges', () => {
      const ai = [{ findingText: 'Pulmonary nodule', positive: true }];
      expect(
        run({ reports: [finalReport('IMPRESSION: 7 mm solid nodule in the right upper lobe. Follow-up CT in 6-12 months.')], aiResults: ai }).flagged,
      ).to.equal(false);
      expect(run({ reports: [finalReport('IMPRESSION: Possible 4 mm nodule in the lingula, likely a vessel.')], aiResults: ai }).flagged).to.equal(false);
      const strict = engine(`[ { id: disc, kind: discordance, priority: urgent, uncertainCountsAsPositive: false } ]`);
      expect(strict({ reports: [finalReport('IMPRESSION: Possible 4 mm nodule in the lingula.')], aiResults: ai }).flagged).to.equal(true);
    });

    it('ignores AI results that are not positive', () => {
      expect(run({ reports: [CLEAR_CHEST], aiResults: [{ findingText: 'Pulmonary nodule', positive: false }] }).flagged).to.equal(false);
    });

    it('maps AI codes through configured finding codes, and reports each finding once', () => {
      const custom = engine(`
- id: disc
  kind: discordance
  priority: urgent
  aiFindings: [ { id: intracranial-hemorrhage, codes: ["AIDOC-ICH"], synonyms: [hemorrhage, haemorrhage, hematoma, bleed] } ]
`);
      const head = finalReport(
        'CT HEAD WITHOUT CONTRAST\nFINDINGS: No acute intracranial hemorrhage, mass effect or midline shift.\nIMPRESSION: No acute intracranial abnormality.',
      );
      const ai = [
        { findingCode: 'AIDOC-ICH^Intracranial hemorrhage^AIDOC', positive: true },
        { findingCode: 'AIDOC-ICH', positive: true },
      ];
      const d = custom({ study: makeStudy({ modalities: ['CT'], bodyParts: ['HEAD'] }), reports: [head], aiResults: ai });
      expect(d.reasons).to.have.length(1);
      expect(d.reasons[0]!.detail).to.equal(
        'AI finding "AIDOC-ICH^Intracranial hemorrhage^AIDOC" (intracranial-hemorrhage) positive, report does not affirm it: report negates it ("hemorrhage")',
      );
    });

    it('looks for an unmapped AI finding text literally, unless told to ignore it', () => {
      const ai = [{ findingText: 'Coronary artery calcification', positive: true }];
      expect(run({ reports: [CLEAR_CHEST], aiResults: ai }).reasons[0]!.detail).to.include('no synonyms configured');
      expect(run({ reports: [finalReport('Moderate coronary artery calcification.')], aiResults: ai }).flagged).to.equal(false);
      const ignore = engine(`[ { id: disc, kind: discordance, priority: urgent, unmappedAiFindings: ignore } ]`);
      expect(ignore({ reports: [CLEAR_CHEST], aiResults: ai }).flagged).to.equal(false);
    });
  });

  describe('(b) indication asks, impression is negative', () => {
    const ctpa = finalReport(
      'CT PULMONARY ANGIOGRAM\nINDICATION: Shortness of breath, r/o PE.\nFINDINGS: Pulmonary arteries are well opacified. No filling defect. Heart size normal.\nIMPRESSION: No pulmonary embolism.',
    );

    it('fires for "r/o PE" with "No pulmonary embolism"', () => {
      const d = run({ order: makeOrder({ indication: 'Shortness of breath, tachycardia. r/o PE' }), reports: [ctpa] });
      expect(d.reasons[0]!.detail).to.equal(
        'indication asks about pulmonary-embolism ("PE"), report is negative for it (impression: "pulmonary embolism" negated)',
      );
    });

    it('fires for "?pulmonary embolism" and "evaluate for appendicitis"', () => {
      expect(run({ order: makeOrder({ indication: '?pulmonary embolism' }), reports: [ctpa] }).flagged).to.equal(true);
      const ct = finalReport('FINDINGS: The appendix is normal in caliber. IMPRESSION: No CT evidence of appendicitis. Normal appendix.');
      const d = run({ order: makeOrder({ indication: 'RLQ pain, fever. Evaluate for appendicitis.' }), reports: [ct] });
      expect(d.reasons[0]!.detail).to.include('appendicitis');
    });

    it('does not fire when the impression confirms it, or the indication does not ask', () => {
      const positive = finalReport('IMPRESSION: Acute pulmonary embolism in the right lower lobe segmental arteries.');
      expect(run({ order: makeOrder({ indication: 'r/o PE' }), reports: [positive] }).flagged).to.equal(false);
      expect(run({ order: makeOrder({ indication: 'Known PE on anticoagulation, follow-up.' }), reports: [ctpa] }).flagged).to.equal(false);
      expect(run({ order: makeOrder({ indication: 'Chest pain.' }), reports: [ctpa] }).flagged).to.equal(false);
    });

    it('uses the impression, not a negation elsewhere in the report', () => {
      const mixed = finalReport('FINDINGS: No PE in the main pulmonary arteries.\nIMPRESSION: Subsegmental pulmonary embolus in the left lower lobe.');
      expect(run({ order: makeOrder({ indication: 'r/o PE' }), reports: [mixed] }).flagged).to.equal(false);
    });

    it('reads the reason for study (OBR-31) text as part of the indication', () => {
      expect(
        run({ order: makeOrder({ reasonForStudy: { text: 'eval for aortic dissection' } }), reports: [finalReport('IMPRESSION: No aortic dissection.')] })
          .flagged,
      ).to.equal(true);
    });
  });

  describe('(c) corrected report after a final', () => {
    it('fires on C after F and not on F alone or C without an earlier F', () => {
      const f = finalReport('IMPRESSION: No acute abnormality.');
      const c = finalReport('IMPRESSION: Nondisplaced fracture of the left fifth rib.', { status: 'C' });
      expect(run({ reports: [f, c] }).reasons[0]!.detail).to.equal('corrected report (C) after a final (F)');
      expect(run({ reports: [f] }).flagged).to.equal(false);
      expect(run({ reports: [{ status: 'P', text: 'prelim' }, c] }).flagged).to.equal(false);
    });
  });

  it('each sub-check can be switched off', () => {
    const off = engine(
      `[ { id: disc, kind: discordance, priority: urgent, checks: { aiFinding: false, indicationNegative: false, correctedReport: false } } ]`,
    );
    const f = finalReport('IMPRESSION: No pulmonary embolism.');
    const c = finalReport('IMPRESSION: No pulmonary embolism. Addendum.', { status: 'C' });
    const d = off({ order: makeOrder({ indication: 'r/o PE' }), reports: [f, c], aiResults: [{ findingText: 'pulmonary nodule', positive: true }] });
    expect(d.flagged).to.equal(false);
    const on = run({ order: makeOrder({ indication: 'r/o PE' }), reports: [f, c], aiResults: [{ findingText: 'pulmonary nodule', positive: true }] });
    expect(on.reasons).to.have.length(1);
    expect(on.reasons[0]!.detail.split('; ')).to.have.length(3);
  });
});
