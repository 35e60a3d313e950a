import { expect } from 'chai';
import { engine, finalReport, makeOrder, makeStudy } from './fixtures.js';

describe('rules/evaluate: high-stakes', () => {
  const run = engine(`
- { id: hs, kind: high-stakes, priority: urgent, procedureCodes: [CTPANC-PLAN, "MRLIVTX*"] }
`);

  it('fires on a configured procedure code, exact or by pattern', () => {
    expect(run({ order: makeOrder({ procedureCode: 'CTPANC-PLAN', procedureText: 'CT pancreas protocol' }) }).reasons[0]!.detail).to.equal(
      'procedure code CTPANC-PLAN',
    );
    expect(run({ order: makeOrder({ procedureCode: 'mrlivtx01', procedureText: 'MR liver' }) }).flagged).to.equal(true);
    expect(run({ order: makeOrder({ procedureCode: 'CTCHESTC' }) }).flagged).to.equal(false);
  });

  it('fires on planning keywords in the procedure text, study description or indication', () => {
    expect(run({ order: makeOrder({ procedureText: 'CTA abdomen - living donor transplant evaluation' }) }).reasons[0]!.detail).to.equal(
      'keyword "transplant evaluation" in procedure',
    );
    expect(run({ order: makeOrder({ indication: 'Pre-operative assessment before right hemicolectomy.' }) }).reasons[0]!.detail).to.equal(
      'keyword "Pre-operative" in indication',
    );
    expect(run({ study: makeStudy({ studyDescription: 'MR PROSTATE BIOPSY PLANNING' }), order: makeOrder({ procedureText: undefined }) }).flagged).to.equal(
      true,
    );
  });

  it('does not fire on negated planning language', () => {
    expect(run({ order: makeOrder({ indication: 'Abdominal pain. Not a transplant evaluation; no surgical planning needed.' }) }).flagged).to.equal(false);
  });

  it('does not look at the report unless configured to', () => {
    expect(run({ reports: [finalReport('Findings relevant for surgical planning are described.')] }).flagged).to.equal(false);
    const withReport = engine(`[ { id: hs, kind: high-stakes, priority: urgent, keywordSources: [report] } ]`);
    expect(withReport({ reports: [finalReport('Findings relevant for surgical planning are described.')] }).flagged).to.equal(true);
  });

  it('a prospective rule decides on the order alone', () => {
    const prospective = engine(`[ { id: hs, kind: high-stakes, priority: stat, prospective: true } ]`);
    expect(prospective({ order: makeOrder({ indication: 'Biopsy planning, left renal mass' }), reports: [] })).to.deep.include({
      flagged: true,
      basis: 'order-only',
    });
  });
});

describe('rules/evaluate: manual', () => {
  const run = engine(`[ { id: manual, kind: manual, priority: urgent, destination: pool-web } ]`);

  it('fires on a manual request with who and why, even without a report', () => {
    const d = run({ reports: [], manualRequests: [{ reason: 'Referring surgeon asks for a neuroradiology opinion', requestedBy: 'qa-officer' }] });
    expect(d).to.deep.include({ flagged: true, priority: 'urgent', destinationId: 'pool-web', basis: 'order-only' });
    expect(d.reasons[0]!.detail).to.equal('manual request by qa-officer: Referring surgeon asks for a neuroradiology opinion');
  });

  it("takes the request's priority and destination over the rule's", () => {
    const d = run({ manualRequests: [{ reason: 'clinical concern', requestedBy: 'dr-x', priority: 'stat', destinationId: 'pool-dimse' }] });
    expect(d).to.deep.include({ priority: 'stat', destinationId: 'pool-dimse' });
  });

  it('fires on the order second-opinion flag, and each source can be switched off', () => {
    expect(run({ order: makeOrder({ secondOpinionRequested: true }) }).reasons[0]!.detail).to.equal('order requests a second opinion');
    expect(run({ order: makeOrder({ secondOpinionRequested: false }) }).flagged).to.equal(false);
    const apiOnly = engine(`[ { id: manual, kind: manual, priority: urgent, sources: { orderFlag: false } } ]`);
    expect(apiOnly({ order: makeOrder({ secondOpinionRequested: true }) }).flagged).to.equal(false);
    expect(apiOnly({ manualRequests: [{ reason: 'r', requestedBy: 'u' }] }).flagged).to.equal(true);
  });
});
