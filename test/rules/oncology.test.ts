import { expect } from 'chai';
import { engine, finalReport, makeOrder } from './fixtures.js';

const ONCOLOGY = `
rules:
  - { id: onc, kind: oncology, priority: urgent }
`;

describe('rules/evaluate: oncology', () => {
  const run = engine(ONCOLOGY);

  it('fires on a malignant ICD-10 code in DG1 and says which code and where', () => {
    const d = run({ order: makeOrder({ diagnoses: [{ code: 'C34.1', text: 'Malignant neoplasm of upper lobe, bronchus or lung', source: 'DG1' }] }) });
    expect(d.flagged).to.equal(true);
    expect(d.priority).to.equal('urgent');
    expect(d.reasons).to.deep.equal([{ ruleId: 'onc', kind: 'oncology', detail: 'ICD-10 C34.1 in DG1' }]);
  });

  it('reads codes from OBR-31 reason for study and OBR-13, dotted or not, with coding-system components', () => {
    const d = run({
      order: makeOrder({
        reasonForStudy: { code: 'C50911^Malignant neoplasm of right female breast^I10', text: 'breast ca' },
        diagnoses: [{ code: 'c18.7', source: 'OBR-13' }],
      }),
    });
    expect(d.reasons[0]!.detail).to.equal('ICD-10 C18.7 in OBR-13; ICD-10 C50.911 in OBR-31');
  });

  const boundaries: Array<[string, boolean]> = [
    ['C00', true],
    ['C96.9', true],
    ['D09', true],
    ['D10', false],
    ['D36', false],
    ['D3A.0', false],
    ['D37', true],
    ['D49', true],
    ['Z85.3', false],
  ];
  for (const [code, fires] of boundaries) {
    it(`${code} in DG1 ${fires ? 'fires' : 'does not fire'}`, () => {
      expect(run({ order: makeOrder({ diagnoses: [{ code, source: 'DG1' }] }) }).flagged).to.equal(fires);
    });
  }

  it('Z85 fires when the rule opts into personal history, and a rule may limit code sources', () => {
    const withHistory = engine(`[ { id: onc, kind: oncology, priority: routine, codes: { personalHistory: true, sources: [DG1] } } ]`);
    expect(withHistory({ order: makeOrder({ diagnoses: [{ code: 'Z85.3', source: 'DG1' }] }) }).reasons[0]!.detail).to.equal('ICD-10 Z85.3 in DG1');
    expect(withHistory({ order: makeOrder({ diagnoses: [{ code: 'C34.1', source: 'OBR-13' }] }) }).flagged).to.equal(false);
  });

  it('fires on an oncology keyword in the indication', () => {
    const d = run({ order: makeOrder({ indication: 'Restaging of diffuse large B-cell lymphoma after 4 cycles R-CHOP.' }) });
    expect(d.reasons[0]!.detail).to.equal('keyword "Restaging" in indication; keyword "lymphoma" in indication');
  });

  it('fires on an affirmed keyword in the report', () => {
    const report = finalReport(
      'CT CHEST ABDOMEN PELVIS WITH CONTRAST\nCLINICAL HISTORY: Abdominal pain.\nFINDINGS: Multiple hypoattenuating hepatic lesions, the largest 2.3 cm in segment VI.\nIMPRESSION: Multiple hepatic metastases. Recommend tissue sampling.',
    );
    expect(run({ reports: [report] }).reasons[0]!.detail).to.equal('keyword "metastases" in report');
  });

  it('does not fire on negated keywords', () => {
    const report = finalReport(
      'FINDINGS: The liver is free of focal lesions. No lymphadenopathy. No suspicious osseous lesion.\nIMPRESSION: No evidence of metastatic disease. Negative for malignancy.',
    );
    const order = makeOrder({ indication: 'Abdominal pain, no history of carcinoma.' });
    const d = run({ reports: [report], order });
    expect(d.flagged, JSON.stringify(d.reasons)).to.equal(false);
  });

  it('counts uncertain phrasing as positive, unless the rule says otherwise', () => {
    const report = finalReport('IMPRESSION: 9 mm sclerotic focus in T10, cannot exclude osseous metastasis. Correlate with bone scan.');
    expect(run({ reports: [report] }).reasons[0]!.detail).to.equal('keyword "metastasis" in report (uncertain)');
    const strict = engine(`[ { id: onc, kind: oncology, priority: urgent, uncertainCountsAsPositive: false } ]`);
    expect(strict({ reports: [report] }).flagged).to.equal(false);
    expect(strict({ reports: [finalReport('Spiculated mass, suspicious for primary lung carcinoma.')] }).flagged).to.equal(false);
  });

  it('recognises BI-RADS 4/5 and Lung-RADS 4A/4B/4X but not lower categories', () => {
    expect(run({ reports: [finalReport('ASSESSMENT: BI-RADS 4B - suspicious. Ultrasound-guided biopsy recommended.')] }).flagged).to.equal(true);
    expect(run({ reports: [finalReport('ASSESSMENT: ACR BI-RADS category 5: highly suggestive of malignancy.')] }).flagged).to.equal(true);
    expect(run({ reports: [finalReport('Lung-RADS 4X: solid nodule with additional features.')] }).flagged).to.equal(true);
    expect(run({ reports: [finalReport('ASSESSMENT: BI-RADS 2: benign findings.')] }).flagged).to.equal(false);
    expect(run({ reports: [finalReport('Lung-RADS 3: probably benign.')] }).flagged).to.equal(false);
  });

  it('uses custom and extra keyword lists', () => {
    const custom = engine(`[ { id: onc, kind: oncology, priority: urgent, keywords: [myeloma], keywordSources: [report] } ]`);
    expect(custom({ reports: [finalReport('Diffuse lytic lesions compatible with multiple myeloma.')] }).flagged).to.equal(true);
    expect(custom({ reports: [finalReport('Hepatic metastases.')] }).flagged).to.equal(false);
    const extra = engine(`[ { id: onc, kind: oncology, priority: urgent, extraKeywords: [sarcoma] } ]`);
    expect(extra({ reports: [finalReport('Large retroperitoneal liposarcoma. Hepatic metastases.')] }).reasons[0]!.detail).to.equal(
      'keyword "metastases" in report',
    );
    expect(extra({ reports: [finalReport('Known sarcoma of the thigh.')] }).flagged).to.equal(true);
  });

  it('waits for a final report unless the rule is prospective', () => {
    const order = makeOrder({ diagnoses: [{ code: 'C34.1', source: 'DG1' }], priority: 'S' });
    const prelim = [{ status: 'P' as const, text: 'Preliminary: lung mass.' }];
    const notYet = run({ order, reports: prelim });
    expect(notYet).to.deep.include({ flagged: false, basis: 'order-only' });
    const prospective = engine(`[ { id: stat-onc, kind: oncology, priority: stat, prospective: true, when: { orderPriority: [S, STAT] } } ]`);
    const d = prospective({ order, reports: [] });
    expect(d).to.deep.include({ flagged: true, priority: 'stat', basis: 'order-only' });
    expect(d.reasons[0]!.detail).to.equal('ICD-10 C34.1 in DG1');
    // The preliminary text is not evidence: only order fields count before the final report.
    expect(prospective({ order: makeOrder({ priority: 'S' }), reports: [{ status: 'P', text: 'Metastatic disease.' }] }).flagged).to.equal(false);
  });

  it('ignores a cancelled report', () => {
    const reports = [finalReport('Hepatic metastases.'), { status: 'X' as const, text: '' }];
    expect(run({ reports })).to.deep.include({ flagged: false, basis: 'order-only' });
  });
});
