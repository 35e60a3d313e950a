import { expect } from 'chai';
import { auditBacklog, disableAuditSink, enableAuditSink, queuedAuditEvents, recordAudit } from '../../src/audit/audit.repository.js';
import { openTempDatabase } from '../helpers/tmp.js';

describe('audit sinks: recordAudit queues an event for each configured sink in its own transaction', () => {
  let t: Awaited<ReturnType<typeof openTempDatabase>>;
  beforeEach(async () => {
    t = await openTempDatabase();
  });
  afterEach(() => t.close());

  const at = '2026-12-02T10:00:00.000Z';

  it('queues nothing while no sink is configured', async () => {
    await recordAudit(t.opened.db, 'a1', at, { actor: 'x', action: 'case.created', entityType: 'case', entityId: 'c1' });
    expect(await t.opened.db.selectFrom('audit_outbox').selectAll().execute()).to.deep.equal([]);
    expect(await t.opened.db.selectFrom('audit_events').select('id').execute()).to.have.length(1);
  });

  it('queues for every sink whose prefix matches, commits and rolls back with the event', async () => {
    await enableAuditSink(t.opened.db, 'syslog', '', at);
    await enableAuditSink(t.opened.db, 'ris-status', 'case.', at);
    await t.opened.db.transaction().execute(async (trx) => {
      await recordAudit(trx, 'a1', at, { actor: 'x', action: 'case.created', entityType: 'case', entityId: 'c1' });
      await recordAudit(trx, 'a2', at, { actor: 'x', action: 'auth.failed', entityType: 'auth' });
    });
    // A change that rolls back leaves neither the event nor its queue rows.
    await t.opened.db
      .transaction()
      .execute(async (trx) => {
        await recordAudit(trx, 'a3', at, { actor: 'x', action: 'case.cancelled', entityType: 'case', entityId: 'c1' });
        throw new Error('rolled back');
      })
      .catch(() => undefined);
    expect((await queuedAuditEvents(t.opened.db, 'syslog', 10)).map((r) => [r.id, r.action])).to.deep.equal([
      ['a1', 'case.created'],
      ['a2', 'auth.failed'],
    ]);
    expect((await queuedAuditEvents(t.opened.db, 'ris-status', 10)).map((r) => r.id)).to.deep.equal(['a1']);
    // A prefix is a prefix, not a pattern: 'case.' does not match 'caseX...'.
    await recordAudit(t.opened.db, 'a4', at, { actor: 'x', action: 'caseXcreated', entityType: 'case' });
    expect(await auditBacklog(t.opened.db, 'ris-status')).to.equal(1);
    expect(await disableAuditSink(t.opened.db, 'syslog')).to.equal(3);
    await recordAudit(t.opened.db, 'a5', at, { actor: 'x', action: 'auth.failed', entityType: 'auth' });
    expect(await auditBacklog(t.opened.db, 'syslog'), 'kept, but nothing new queued').to.equal(3);
  });
});
