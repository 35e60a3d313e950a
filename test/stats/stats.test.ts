import { expect } from 'chai';
import { bucketStart, computeStats, percentile, statsCsv } from '../../src/stats/stats.js';
import type { SecondReadFact } from '../../src/stats/stats.repository.js';

const fact = (o: Partial<SecondReadFact> & { h: number }): SecondReadFact => ({
  caseId: `c${Math.random()}`,
  caseCreatedAt: '2026-03-02T08:00:00.000Z',
  reportedAt: new Date(Date.parse('2026-03-02T08:00:00.000Z') + o.h * 3_600_000).toISOString(),
  radpeerScore: '1',
  readerId: 'dr-a',
  radiologistId: 'RAD7',
  modality: 'CT',
  writtenBackAt: null,
  ...o,
});

describe('second-read statistics', () => {
  it('percentile is nearest-rank on sorted values', () => {
    const v = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    expect(percentile(v, 50)).to.equal(5);
    expect(percentile(v, 90)).to.equal(9);
    expect(percentile(v, 95)).to.equal(10);
    expect(percentile([7], 95)).to.equal(7);
    expect(percentile([], 50)).to.equal(null);
  });

  it('buckets by UTC day and ISO week (Monday)', () => {
    expect(bucketStart('2026-03-04T23:59:00.000Z', 'day')).to.equal('2026-03-04T00:00:00.000Z');
    // 2026-03-08 is a Sunday: its week began on Monday 2026-03-02.
    expect(bucketStart('2026-03-08T12:00:00.000Z', 'week')).to.equal('2026-03-02T00:00:00.000Z');
    expect(bucketStart('2026-03-02T00:00:00.000Z', 'week')).to.equal('2026-03-02T00:00:00.000Z');
  });

  it('counts RADPEER 2+ and 2b+ per radiologist and modality, with turnaround percentiles and every day of the period', () => {
    const facts = [
      fact({ h: 1 }),
      fact({ h: 2, radpeerScore: '2a' }),
      fact({ h: 3, radpeerScore: '2b', writtenBackAt: '2026-03-02T12:00:00.000Z' }),
      fact({ h: 30, radpeerScore: '3b', radiologistId: 'RAD9', modality: 'MR', readerId: 'dr-b' }),
      fact({ h: 4, radiologistId: null, modality: null }),
    ];
    const s = computeStats(facts, { from: '2026-03-01T00:00:00.000Z', to: '2026-03-04T00:00:00.000Z', bucket: 'day' });
    expect(s.totals).to.deep.include({ secondReads: 5, discordant: 3, significant: 2, discordanceRate: 0.6, significantRate: 0.4 });
    expect(s.totals.turnaroundHours).to.deep.equal({ n: 5, p50: 3, p90: 30, p95: 30 });
    expect(s.scores).to.deep.equal({ '1': 2, '2a': 1, '2b': 1, '3a': 0, '3b': 1 });
    const rad7ct = s.byRadiologistModality.find((g) => g.radiologistId === 'RAD7' && g.modality === 'CT')!;
    expect(rad7ct).to.deep.include({ secondReads: 3, discordant: 2, significant: 1 });
    expect(s.byRadiologist.map((g) => g.key)).to.deep.equal(['(unknown)', 'RAD7', 'RAD9']);
    expect(s.byReader.map((g) => [g.key, g.secondReads])).to.deep.equal([
      ['dr-a', 4],
      ['dr-b', 1],
    ]);
    expect(s.writeBackTurnaroundHours).to.deep.equal({ n: 1, p50: 4, p90: 4, p95: 4 });
    expect(s.overTime.map((b) => [b.start.slice(0, 10), b.secondReads])).to.deep.equal([
      ['2026-03-01', 0],
      ['2026-03-02', 4],
      ['2026-03-03', 1],
    ]);
  });

  it('CSV: header, one row per group, quoted cells and no spreadsheet formulas', () => {
    const s = computeStats([fact({ h: 2, radiologistId: '=HYPERLINK("x")', modality: 'CT' })], {
      from: '2026-03-01T00:00:00.000Z',
      to: '2026-03-03T00:00:00.000Z',
      bucket: 'day',
    });
    const lines = statsCsv(s, 'radiologist-modality').split('\r\n');
    expect(lines[0]).to.match(/^radiologist,modality,second_reads,/);
    expect(lines[1]).to.equal(`"'=HYPERLINK(""x"")",CT,1,0,0,0,0,2,2,2,0,0,0.7935`);
    expect(lines[2]).to.equal('');
    expect(statsCsv(s, 'over-time').split('\r\n')[2]).to.match(/^2026-03-02T00:00:00.000Z,1,/);
  });
});
