import { expect } from 'chai';
import { CASE_TRANSITIONS, canTransition, transitionCase } from '../../src/cases/case-state.js';
import type { OpenedDatabase } from '../../src/db/database.js';
import { CaseState, DeliveryState, OutboundKind, OutboundState } from '../../src/states.js';
import { openTempDatabase } from '../helpers/tmp.js';

const engine = process.env['GATEWAY_TEST_DATABASE_URL'] ? 'PostgreSQL' : 'SQLite';

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
        id: 'c1',
        study_instance_uid: '1.2.3',
        accession_number: null,
        state: CaseState.flagged,
        priority: 'routine',
        sla_hours: 72,
        due_at: now,
        destination_id: null,
        reader_group: null,
        blinded: 1,
        deidentify: null,
        rule_set_version: 1,
        reasons: '[]',
        reader_id: null,
        discrepant: 0,
        sla_breached_at: null,
        escalation_level: 0,
        created_by: 'test',
        created_at: now,
        updated_at: now,
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

  it(`a move to cancelled, by whoever (here as the RIS's ORC-1 CA would), stops the case's work in the same transaction (${engine})`, async () => {
    const db = opened.db;
    const t = '2026-11-28T00:00:00.000Z';
    const delivery = (id: string, state: DeliveryState) => ({
      id,
      case_id: 'c1',
      destination_id: id,
      study_instance_uid: '1.2.3',
      state,
      deidentify: 0,
      attempts: 3,
      next_attempt_at: t,
      last_error: 'refused',
      instances_total: 2,
      instances_sent: state === DeliveryState.delivered ? 2 : 1,
      created_at: t,
      updated_at: t,
      delivered_at: null,
    });
    await db
      .insertInto('deliveries')
      .values([
        delivery('d-pending', DeliveryState.pending),
        delivery('d-dead', DeliveryState.dead),
        delivery('d-done', DeliveryState.delivered),
        delivery('d-sending', DeliveryState.sending),
      ])
      .execute();
    for (const d of ['d-pending', 'd-dead', 'd-done', 'd-sending']) {
      await db
        .insertInto('delivery_instances')
        .values([
          { delivery_id: d, sop_instance_uid: '1.2.3.1', state: 'sent', error: null, sent_at: t },
          { delivery_id: d, sop_instance_uid: '1.2.3.2', state: d === 'd-done' ? 'sent' : 'pending', error: null, sent_at: null },
        ])
        .execute();
    }
    const message = (id: string, kind: OutboundKind, state: OutboundState) => ({
      id,
      kind,
      case_id: 'c1',
      report_id: null,
      control_id: null,
      payload: '',
      state,
      attempts: 0,
      next_attempt_at: t,
      last_error: null,
      response: null,
      created_at: t,
      updated_at: t,
    });
    await db
      .insertInto('outbound_messages')
      .values([
        message('m-wb', OutboundKind.writeBack, OutboundState.pending),
        message('m-wait', OutboundKind.writeBack, OutboundState.waiting),
        message('m-done', OutboundKind.writeBack, OutboundState.accepted),
        message('m-qa', OutboundKind.webhook, OutboundState.pending),
      ])
      .execute();

    const moved = await db.transaction().execute((trx) =>
      transitionCase(trx, {
        caseId: 'c1',
        from: [CaseState.flagged],
        to: CaseState.cancelled,
        actor: 'hl7:RIS',
        now: '2026-11-28T02:00:00.000Z',
        auditId: audit(),
        details: { orderControl: 'CA' },
      }),
    );
    expect(moved).to.equal(true);
    const deliveries = Object.fromEntries((await db.selectFrom('deliveries').select(['id', 'state']).execute()).map((d) => [d.id, d.state]));
    expect(deliveries).to.deep.equal({ 'd-pending': 'cancelled', 'd-dead': 'cancelled', 'd-done': 'delivered', 'd-sending': 'cancelled' });
    const rows = await db.selectFrom('delivery_instances').select(['delivery_id', 'state']).orderBy('delivery_id').orderBy('sop_instance_uid').execute();
    // Unsent rows are dropped, except those of the delivery on the wire: its worker records its batch first, then drops the rest.
    expect(rows.map((r) => `${r.delivery_id}:${r.state}`)).to.deep.equal([
      'd-dead:sent',
      'd-done:sent',
      'd-done:sent',
      'd-pending:sent',
      'd-sending:sent',
      'd-sending:pending',
    ]);
    const messages = Object.fromEntries((await db.selectFrom('outbound_messages').select(['id', 'state']).execute()).map((m) => [m.id, m.state]));
    // QA notifications already queued are kept: the second read they report happened.
    expect(messages).to.deep.equal({ 'm-wb': 'cancelled', 'm-wait': 'cancelled', 'm-done': 'accepted', 'm-qa': 'pending' });
    const event = await db.selectFrom('audit_events').selectAll().where('action', '=', 'case.cancelled').executeTakeFirstOrThrow();
    expect(JSON.parse(event.details!)).to.deep.equal({ from: 'flagged', orderControl: 'CA', stopped: { deliveries: 3, instancesDropped: 2, writeBacks: 2 } });
  });
});
