import { expect } from 'chai';
import { openDatabase, type Db } from '../../src/db/database.js';
import { dialectOf, storableText } from '../../src/db/dialect.js';
import { claimDue, insertDelivery } from '../../src/forwarding/outbox.repository.js';
import { acquireLease, releaseLease } from '../../src/instances/instance.repository.js';
import { openTempDatabase, openTempPostgresDatabase, postgresServerUrl, requirePostgres, testPostgresUrl } from '../helpers/tmp.js';

// Work claiming on whichever engine the suite runs on (SQLite, or PostgreSQL with GATEWAY_TEST_DATABASE_URL):
// the same repository code must give the same answers on both.
describe(`work claims (${testPostgresUrl ? 'PostgreSQL' : 'SQLite'})`, () => {
  let t: Awaited<ReturnType<typeof openTempDatabase>>;
  let db: Db;
  const t0 = '2026-03-01T10:00:00.000Z';
  const later = (s: number) => new Date(Date.parse(t0) + s * 1000).toISOString();

  beforeEach(async () => {
    t = await openTempDatabase();
    db = t.opened.db;
  });
  afterEach(async () => t.close());

  async function deliveries(n: number, destinationId = 'pool'): Promise<string[]> {
    const ids: string[] = [];
    for (let i = 0; i < n; i++) {
      const id = `d${String(i).padStart(3, '0')}-${destinationId}`;
      await insertDelivery(db, { id, caseId: `c${i}-${destinationId}`, destinationId, studyInstanceUid: `1.2.3.${i}`, deidentify: false, now: t0 });
      ids.push(id);
    }
    return ids;
  }

  it('claims due deliveries oldest first, once; an expired lease is taken over, a live one is not', async () => {
    const ids = await deliveries(5);
    const first = await claimDue(db, 'gw-a', t0, later(30), 3);
    expect(first.map((d) => d.id)).to.deep.equal(ids.slice(0, 3));
    expect(first.every((d) => d.state === 'sending' && d.lease_owner === 'gw-a')).to.equal(true);
    const second = await claimDue(db, 'gw-b', later(1), later(31), 10);
    expect(second.map((d) => d.id)).to.deep.equal(ids.slice(3));
    expect(await claimDue(db, 'gw-b', later(29), later(59), 10)).to.deep.equal([]);
    const takeover = await claimDue(db, 'gw-b', later(31), later(61), 10);
    expect(takeover.map((d) => d.id)).to.deep.equal(ids.slice(0, 3));
    expect(takeover.every((d) => d.lease_owner === 'gw-b')).to.equal(true);
  });

  it('claims only the destinations asked for', async () => {
    await deliveries(2, 'p1');
    const p2 = await deliveries(2, 'p2');
    expect((await claimDue(db, 'gw-a', t0, later(30), 10, ['p2'])).map((d) => d.id)).to.deep.equal(p2);
    expect(await claimDue(db, 'gw-a', t0, later(30), 10, [])).to.deep.equal([]);
  });

  it('a named lease has one holder until it expires or is released', async () => {
    expect(await acquireLease(db, 'destination:x', 'gw-a', t0, later(10))).to.equal(true);
    expect(await acquireLease(db, 'destination:x', 'gw-b', later(5), later(15))).to.equal(false);
    expect(await acquireLease(db, 'destination:x', 'gw-a', later(5), later(15)), 'renewal by the holder').to.equal(true);
    expect(await acquireLease(db, 'destination:x', 'gw-b', later(16), later(26)), 'after expiry').to.equal(true);
    await releaseLease(db, 'destination:x', 'gw-a');
    expect(await acquireLease(db, 'destination:x', 'gw-a', later(17), later(27)), 'a release by a former holder does nothing').to.equal(false);
    await releaseLease(db, 'destination:x', 'gw-b');
    expect(await acquireLease(db, 'destination:x', 'gw-a', later(17), later(27))).to.equal(true);
  });

  it('stores a NUL in received text the same way on both engines', async () => {
    const raw = 'MSH|^~\\&|A\u0000B';
    await db
      .insertInto('settings')
      .values({ key: 'nul', value: storableText(raw), created_at: t0 })
      .execute();
    const back = await db.selectFrom('settings').select('value').where('key', '=', 'nul').executeTakeFirstOrThrow();
    expect(back.value).to.equal('MSH|^~\\&|A\uFFFDB');
  });
});

describe('PostgreSQL specifics', () => {
  let t: Awaited<ReturnType<typeof openTempDatabase>>;

  beforeEach(async function () {
    requirePostgres(this);
    t = await openTempPostgresDatabase();
  });
  afterEach(async () => t?.close());

  it('is PostgreSQL, and int8 results (count, bigint columns) come back as numbers', async () => {
    const db = t.opened.db;
    expect(dialectOf(db)).to.equal('postgres');
    await insertDelivery(db, { id: 'd1', caseId: 'c1', destinationId: 'p', studyInstanceUid: '1.2', deidentify: false, now: '2026-03-01T10:00:00.000Z' });
    const r = await db.selectFrom('deliveries').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow();
    expect(r.n).to.equal(1);
  });

  it('two pools claiming at the same moment never take the same delivery (FOR UPDATE SKIP LOCKED)', async () => {
    const db = t.opened.db;
    for (let i = 0; i < 60; i++) {
      await insertDelivery(db, { id: `d${String(i).padStart(3, '0')}`, caseId: `c${i}`, destinationId: 'p', studyInstanceUid: `1.2.${i}`, deidentify: false, now: '2026-03-01T10:00:00.000Z' });
    }
    const other = openDatabase(await currentUrl(db));
    try {
      const now = '2026-03-01T10:00:01.000Z';
      const until = '2026-03-01T10:10:00.000Z';
      const rounds = await Promise.all(
        Array.from({ length: 12 }, (_, i) => claimDue(i % 2 === 0 ? db : other.db, i % 2 === 0 ? 'gw-a' : 'gw-b', now, until, 5)),
      );
      const ids = rounds.flat().map((d) => d.id);
      expect(new Set(ids).size, 'no delivery claimed twice').to.equal(ids.length);
      expect(ids.length).to.equal(60);
    } finally {
      await other.close();
    }
  });
});

/** The URL of the database `db` is connected to (same server and credentials as the test URL). */
async function currentUrl(db: Db): Promise<string> {
  const { sql } = await import('kysely');
  const r = await sql<{ d: string }>`select current_database() as d`.execute(db);
  const u = new URL(postgresServerUrl!);
  u.pathname = `/${r.rows[0]!.d}`;
  return u.toString();
}
