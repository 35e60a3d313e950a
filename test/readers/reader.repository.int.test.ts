import { expect } from 'chai';
import { sql } from 'kysely';
import { openDatabase, type Db } from '../../src/db/database.js';
import { insertCase } from '../../src/cases/case.repository.js';
import type { CaseRow } from '../../src/cases/case.table.js';
import { casesPastDue, claimBreachedCase, setEscalation } from '../../src/readers/reader.repository.js';
import { CaseState } from '../../src/states.js';
import { openTempDatabase, openTempPostgresDatabase, postgresUrlFor, requirePostgres, testPostgresUrl } from '../helpers/tmp.js';

const READING = [CaseState.forwarding, CaseState.awaitingRead];
const due = '2026-03-01T10:00:00.000Z';
const before = '2026-03-01T09:00:00.000Z';
const after = '2026-03-01T11:00:00.000Z';

function aCase(id: string, o: Partial<CaseRow> = {}): CaseRow {
  return {
    id,
    study_instance_uid: `1.2.3.${id}`,
    accession_number: null,
    state: CaseState.awaitingRead,
    priority: 'routine',
    sla_hours: 24,
    due_at: due,
    destination_id: null,
    reader_group: null,
    blinded: 1,
    deidentify: null,
    rule_set_version: null,
    reasons: '[]',
    reader_id: 'dr-a',
    discrepant: 0,
    sla_breached_at: null,
    escalation_level: 0,
    created_by: 'test',
    created_at: before,
    updated_at: before,
    ...o,
  };
}

// The SLA watch's claim (reader.service.ts checkSla): a case is escalated once per level, by one instance.
describe(`reader repository: the SLA claim (${testPostgresUrl ? 'PostgreSQL' : 'SQLite'})`, () => {
  let t: Awaited<ReturnType<typeof openTempDatabase>>;
  let db: Db;

  beforeEach(async () => {
    t = await openTempDatabase();
    db = t.opened.db;
  });
  afterEach(async () => t.close());

  it('lists only reading cases past due and not escalated to the last level', async () => {
    await insertCase(db, aCase('a'));
    await insertCase(db, aCase('b', { escalation_level: 1 }));
    await insertCase(db, aCase('c', { escalation_level: 2 }));
    await insertCase(db, aCase('d', { due_at: after }));
    await insertCase(db, aCase('e', { state: CaseState.reported }));
    await insertCase(db, aCase('f', { state: CaseState.forwarding }));
    const ids = (await casesPastDue(db, READING, '2026-03-01T10:30:00.000Z')).map((c) => c.id).sort();
    expect(ids).to.deep.equal(['a', 'b', 'f']);
  });

  it('claims a case only while it is still breached at the level read; an escalation moves it on', async () => {
    await insertCase(db, aCase('a'));
    const now = '2026-03-01T10:30:00.000Z';
    expect(await claimBreachedCase(db, 'a', READING, now, 0)).to.equal(true);
    expect(await claimBreachedCase(db, 'a', READING, now, 1), 'another level').to.equal(false);
    expect(await claimBreachedCase(db, 'a', READING, before, 0), 'not yet due').to.equal(false);
    expect(await claimBreachedCase(db, 'a', [CaseState.reported], now, 0), 'another state').to.equal(false);
    await setEscalation(db, 'a', { escalationLevel: 1, slaBreachedAt: now, dueAt: after, now });
    expect(await claimBreachedCase(db, 'a', READING, now, 0), 'reassigned with a fresh SLA').to.equal(false);
    const row = await db.selectFrom('cases').selectAll().where('id', '=', 'a').executeTakeFirstOrThrow();
    expect(row).to.deep.include({ escalation_level: 1, sla_breached_at: now, due_at: after, updated_at: now });
    await setEscalation(db, 'a', { escalationLevel: 2, slaBreachedAt: now, now: after });
    const notified = await db.selectFrom('cases').selectAll().where('id', '=', 'a').executeTakeFirstOrThrow();
    expect(notified).to.deep.include({ escalation_level: 2, due_at: after, updated_at: after });
  });
});

describe('reader repository: the SLA claim across PostgreSQL instances', () => {
  let t: Awaited<ReturnType<typeof openTempDatabase>> | undefined;

  beforeEach(async function () {
    requirePostgres(this);
    t = await openTempPostgresDatabase();
  });
  afterEach(async () => t?.close());

  it('a case another instance is escalating is skipped, not waited for, and can be claimed again once that one commits', async () => {
    const db = t!.opened.db;
    await insertCase(db, aCase('a'));
    const now = '2026-03-01T10:30:00.000Z';
    const name = (await sql<{ d: string }>`select current_database() as d`.execute(db)).rows[0]!.d;
    const other = openDatabase(postgresUrlFor(name));
    try {
      let release!: () => void;
      const held = new Promise<void>((r) => (release = r));
      let claimed!: () => void;
      const inside = new Promise<void>((r) => (claimed = r));
      const first = db.transaction().execute(async (trx) => {
        expect(await claimBreachedCase(trx, 'a', READING, now, 0)).to.equal(true);
        claimed();
        await held;
      });
      await inside;
      const second = await other.db.transaction().execute((trx) => claimBreachedCase(trx, 'a', READING, now, 0));
      expect(second, 'skipped while the first holds it').to.equal(false);
      release();
      await first;
      expect(await other.db.transaction().execute((trx) => claimBreachedCase(trx, 'a', READING, now, 0))).to.equal(true);
    } finally {
      await other.close();
    }
  });
});
