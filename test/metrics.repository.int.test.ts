import { expect } from 'chai';
import { insertCase } from '../src/cases/case.repository.js';
import { insertDelivery, updateDelivery } from '../src/forwarding/outbox.repository.js';
import { caseCountsByState, deliveryCounts, slaBreachedCaseCount } from '../src/metrics.repository.js';
import { CaseState, DeliveryState } from '../src/states.js';
import { openTempDatabase, testPostgresUrl } from './helpers/tmp.js';

const engine = testPostgresUrl ? 'PostgreSQL' : 'SQLite';

describe(`metrics repository: the scrape-time counts (${engine})`, () => {
  let t: Awaited<ReturnType<typeof openTempDatabase>>;
  beforeEach(async () => (t = await openTempDatabase()));
  afterEach(async () => t.close());

  const at = '2026-03-01T10:00:00.000Z';
  const aCase = (id: string, state: CaseState, breached: boolean) => ({
    id,
    study_instance_uid: `1.2.${id}`,
    accession_number: null,
    state,
    priority: 'routine',
    sla_hours: 72,
    due_at: at,
    destination_id: null,
    reader_group: null,
    blinded: 0,
    deidentify: null,
    rule_set_version: null,
    reasons: '[]',
    reader_id: null,
    discrepant: 0,
    sla_breached_at: breached ? at : null,
    escalation_level: 0,
    created_by: 'test',
    created_at: at,
    updated_at: at,
  });

  it('counts cases by state, and SLA breaches only among the given open states', async () => {
    const db = t.opened.db;
    await insertCase(db, aCase('c1', CaseState.awaitingRead, true));
    await insertCase(db, aCase('c2', CaseState.forwarding, true));
    await insertCase(db, aCase('c3', CaseState.awaitingRead, false));
    // Breached once, but reported since: not open any more.
    await insertCase(db, aCase('c4', CaseState.reported, true));
    const byState = Object.fromEntries((await caseCountsByState(db)).map((r) => [r.state, r.n]));
    expect(byState).to.deep.equal({ 'awaiting-read': 2, forwarding: 1, reported: 1 });
    expect(await slaBreachedCaseCount(db, [CaseState.forwarding, CaseState.awaitingRead])).to.equal(2);
    expect(await slaBreachedCaseCount(db, [CaseState.reported])).to.equal(1);
  });

  it('counts deliveries by destination and state, as numbers', async () => {
    const db = t.opened.db;
    for (const [id, destinationId, state] of [
      ['d1', 'pool-a', DeliveryState.pending],
      ['d2', 'pool-a', DeliveryState.sending],
      ['d3', 'pool-a', DeliveryState.pending],
      ['d4', 'pool-b', DeliveryState.delivered],
    ] as const) {
      await insertDelivery(db, { id, caseId: `c-${id}`, destinationId, studyInstanceUid: `1.2.${id}`, deidentify: false, now: at });
      if (state !== DeliveryState.pending) await updateDelivery(db, id, { state, updated_at: at });
    }
    const rows = (await deliveryCounts(db)).map((r) => [r.destination_id, r.state, r.n]);
    expect(rows).to.have.deep.members([
      ['pool-a', 'pending', 2],
      ['pool-a', 'sending', 1],
      ['pool-b', 'delivered', 1],
    ]);
  });
});
