import { expect } from 'chai';
import { decideCompleteness, Verdict } from '../../src/studies/completeness.js';
import { MppsStatus } from '../../src/studies/mpps.table.js';

const done = (...uids: string[]) => ({ status: MppsStatus.completed, referenced: uids });
const running = { status: MppsStatus.inProgress, referenced: [] as string[] };
const here = (...uids: string[]) => new Set(uids);

describe('completeness (MPPS against the instances that arrived)', () => {
  it('without MPPS the quiet period decides', () => {
    expect(decideCompleteness([], here('1'), false).verdict).to.equal(Verdict.noMpps);
    expect(decideCompleteness([], here('1'), true).verdict).to.equal(Verdict.quiet);
  });

  it('a COMPLETED step whose every instance arrived completes the study before the quiet period', () => {
    const c = decideCompleteness([done('1', '2')], here('1', '2', '3'), false);
    expect(c.verdict).to.equal(Verdict.complete);
    expect(c).to.include({ referenced: 2, arrived: 2 });
    expect(c.missing).to.deep.equal([]);
  });

  it('a COMPLETED step with instances missing waits, then is incomplete after the quiet period', () => {
    expect(decideCompleteness([done('1', '2', '3')], here('1'), false)).to.deep.include({
      verdict: Verdict.waiting,
      referenced: 3,
      arrived: 1,
      missing: ['2', '3'],
    });
    expect(decideCompleteness([done('1', '2', '3')], here('1'), true)).to.deep.include({ verdict: Verdict.incomplete, missing: ['2', '3'] });
  });

  it('a step still IN PROGRESS keeps the study open, and the quiet period still ends it', () => {
    expect(decideCompleteness([running], here('1'), false).verdict).to.equal(Verdict.waiting);
    expect(decideCompleteness([running], here('1'), true).verdict).to.equal(Verdict.quiet);
    // another step completed and arrived: not complete while one is still running
    expect(decideCompleteness([done('1'), running], here('1'), false).verdict).to.equal(Verdict.waiting);
  });

  it('a DISCONTINUED step is recorded but neither completes nor holds the study', () => {
    const d = { status: MppsStatus.discontinued, referenced: ['1', '2'] };
    expect(decideCompleteness([d], here('1'), false).verdict).to.equal(Verdict.waiting);
    const c = decideCompleteness([d], here('1'), true);
    expect(c.verdict).to.equal(Verdict.quiet);
    expect(c.steps).to.deep.equal([MppsStatus.discontinued]);
  });

  it('several completed steps: every listed instance is needed', () => {
    expect(decideCompleteness([done('1'), done('2')], here('1'), true).verdict).to.equal(Verdict.incomplete);
    expect(decideCompleteness([done('1'), done('2')], here('1', '2'), false).verdict).to.equal(Verdict.complete);
  });

  it('a COMPLETED step that lists nothing is no evidence: the quiet period decides', () => {
    expect(decideCompleteness([done()], here('1'), false).verdict).to.equal(Verdict.waiting);
    expect(decideCompleteness([done()], here('1'), true).verdict).to.equal(Verdict.quiet);
  });
});
