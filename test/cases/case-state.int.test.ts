import { expect } from 'chai';
import { CASE_TRANSITIONS, canTransition, transitionCase } from '../../src/cases/case-state.js';
import type { OpenedDatabase } from '../../src/db/database.js';
import { CaseState } from '../../src/states.js';
import { openTempDatabase } from '../helpers/tmp.js';

describe('case state machine', () => {
  let temp: Awaited<ReturnType<typeof openTempDatabase>>;
  let opened: OpenedDatabase;
  let n = 0;
  const audit = () => `audit-${++n}`;

  beforeEach(async () => {
    temp = await openTempDatabase();
    opened = temp.opened;
    const now = '2026-11-28T00:00:00.000Z';
    await opened.db
      .insertInto('cases')
      .values({
        id: 'c1', study_instance_uid: '1.2.3', accession_number: null, state: CaseState.flagged, priority: 'routine', sla_hours: 72, due_at: now,
        destination_id: null, reader_group: null, blinded: 1, deidentify: null, rule_set_version: 1, reasons: '[]', reader_id: null, discrepant: 0,
        sla_breached_at: null, escalation_level: 0, created_by: 'test', created_at: now, updated_at: now,
      })
      .execute();
  });
  afterEach(() => temp.close());

  it('lists the documented life cycle; terminal states lead nowhere but an addendum', () => {
    expect(canTransition(CaseState.flagged, CaseState.forwarding)).to.equal(true);
    expect(canTransition(CaseState.awaitingRead, CaseState.reported)).to.equal(true);
    expect(canTransition(CaseState.reported, CaseState.writtenBack)).to.equal(true);
    expect(canTransition(CaseState.flagged, CaseState.writtenBack)).to.equal(false);
    expect(canTransition(CaseState.forwarding, CaseState.reported)).to.equal(false);
    expect(CASE_TRANSITIONS[CaseState.cancelled]).to.deep.equal([]);
    expect(CASE_TRANSITIONS[CaseState.writtenBack]).to.deep.equal([CaseState.reported]);
  });

  it('moves a case and audits it; refuses an illegal move; does nothing when the case already moved on', async () => {
    const base = { caseId: 'c1', actor: 'tester', now: '2026-11-28T01:00:00.000Z' };
    expect(await transitionCase(opened.db, { ...base, from: [CaseState.flagged], to: CaseState.forwarding, auditId: audit() })).to.equal(true);
    let err: unknown;
    try {
      await transitionCase(opened.db, { ...base, from: [CaseState.forwarding], to: CaseState.writtenBack, auditId: audit() });
    } catch (e) {
      err = e;
    }
    expect(err).to.have.property('code', 'conflict');
    expect(await transitionCase(opened.db, { ...base, from: [CaseState.flagged], to: CaseState.held, auditId: audit() })).to.equal(false);
    const row = await opened.db.selectFrom('cases').select('state').where('id', '=', 'c1').executeTakeFirstOrThrow();
    expect(row.state).to.equal(CaseState.forwarding);
    const events = await opened.db.selectFrom('audit_events').selectAll().execute();
    expect(events.map((e) => e.action)).to.deep.equal(['case.forwarding']);
    expect(JSON.parse(events[0]!.details!)).to.deep.equal({ from: 'flagged' });
  });
});
