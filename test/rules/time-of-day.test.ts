import { expect } from 'chai';
import { validateRuleSet } from '../../src/rules/rule.schema.js';
import { engine, finalReport, makeOrder, ruleIds } from './fixtures.js';

describe('rules/conditions: time of day (overnight reads)', () => {
  const overnight = engine(`
- id: overnight
  kind: high-stakes
  priority: routine
  procedureCodes: ['*']
  when: { timeOfDay: { from: '22:00', to: '07:00', timeZone: Europe/London } }
`);
  const signedAt = (iso: string) => ({ order: makeOrder(), reports: [finalReport('No acute abnormality.', { observedAt: new Date(iso) })] });

  it('spans midnight in the local time zone, from inclusive and to exclusive', () => {
    // 2024-07-01 is British Summer Time (UTC+1): 21:30Z is 22:30 local.
    expect(ruleIds(overnight(signedAt('2024-07-01T21:30:00Z')))).to.deep.equal(['overnight']);
    expect(ruleIds(overnight(signedAt('2024-07-01T20:59:00Z')))).to.deep.equal([]); // 21:59 local
    expect(ruleIds(overnight(signedAt('2024-07-01T21:00:00Z')))).to.deep.equal(['overnight']); // 22:00 local
    expect(ruleIds(overnight(signedAt('2024-07-02T05:59:00Z')))).to.deep.equal(['overnight']); // 06:59 local
    expect(ruleIds(overnight(signedAt('2024-07-02T06:00:00Z')))).to.deep.equal([]); // 07:00 local
    // In January London is UTC: 06:30Z is 06:30 local.
    expect(ruleIds(overnight(signedAt('2024-01-15T06:30:00Z')))).to.deep.equal(['overnight']);
    expect(ruleIds(overnight(signedAt('2024-01-15T12:00:00Z')))).to.deep.equal([]);
  });

  it('a daytime window, UTC by default', () => {
    const day = engine(`[ { id: day, kind: high-stakes, priority: routine, procedureCodes: ['*'], when: { timeOfDay: { from: '08:00', to: '18:00' } } } ]`);
    expect(ruleIds(day(signedAt('2024-03-12T08:00:00Z')))).to.deep.equal(['day']);
    expect(ruleIds(day(signedAt('2024-03-12T18:00:00Z')))).to.deep.equal([]);
  });

  it('rejects a malformed time, an unknown zone and an empty window, with their paths', () => {
    const bad = validateRuleSet([
      { id: 'a', kind: 'manual', priority: 'routine', when: { timeOfDay: { from: '24:00', to: '07:00' } } },
      { id: 'b', kind: 'manual', priority: 'routine', when: { timeOfDay: { from: '22:00', to: '07:00', timeZone: 'Mars/Olympus' } } },
      { id: 'c', kind: 'manual', priority: 'routine', when: { timeOfDay: { from: '22:00', to: '22:00' } } },
    ]);
    expect(bad.ok).to.equal(false);
    if (!bad.ok) {
      expect(bad.errors.map((e) => e.path)).to.deep.equal(['rules[0].when.timeOfDay.from', 'rules[1].when.timeOfDay.timeZone', 'rules[2].when.timeOfDay']);
    }
  });
});
