import { expect } from 'chai';
import { openDatabase, type Db } from '../../src/db/database.js';
import { dialectOf, storableText } from '../../src/db/dialect.js';
import { insertDelivery } from '../../src/forwarding/outbox.repository.js';
import { claimDueJobs, claimJobs, insertJob } from '../../src/jobs/job.repository.js';
import { openTempDatabase, openTempPostgresDatabase, postgresServerUrl, requirePostgres, testPostgresUrl } from '../helpers/tmp.js';

// The same repository code must give the same answers on both engines (SQLite, or PostgreSQL with
// GATEWAY_TEST_DATABASE_URL). Work claims are the job engine's (test/jobs/job-runner.int.test.ts).
describe(`engine parity (${testPostgresUrl ? 'PostgreSQL' : 'SQLite'})`, () => {
  let t: Awaited<ReturnType<typeof openTempDatabase>>;
  let db: Db;
  const t0 = '2026-03-01T10:00:00.000Z';

  beforeEach(async () => {
    t = await openTempDatabase();
    db = t.opened.db;
  });
  afterEach(async () => t.close());

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
    const r = await db
      .selectFrom('deliveries')
      .select((eb) => eb.fn.countAll().as('n'))
      .executeTakeFirstOrThrow();
    expect(r.n).to.equal(1);
  });

  it('two pools claiming delivery jobs at the same moment never take the same one (FOR UPDATE SKIP LOCKED)', async () => {
    const db = t.opened.db;
    for (let i = 0; i < 60; i++) {
      const id = `d${String(i).padStart(3, '0')}`;
      await insertJob(db, { id, kind: 'forwarding.deliver', payload: JSON.stringify({ deliveryId: id }), key: id, maxAttempts: 5 });
    }
    const other = openDatabase(await currentUrl(db));
    try {
      const rounds = await Promise.all(
        Array.from({ length: 12 }, (_, i) => claimJobs(i % 2 === 0 ? db : other.db, 'forwarding.deliver', i % 2 === 0 ? 'gw-a' : 'gw-b', `token-${i}`, 600, 5)),
      );
      const ids = rounds.flat().map((d) => d.id);
      expect(new Set(ids).size, 'no delivery claimed twice').to.equal(ids.length);
      expect(ids.length).to.equal(60);
    } finally {
      await other.close();
    }
  });

  it('two pools claiming several kinds in one statement at the same moment never take the same job', async () => {
    const db = t.opened.db;
    const kinds = ['forwarding.deliver', 'outbound.send', 'priors.lookup'];
    for (let i = 0; i < 60; i++) await insertJob(db, { id: `j${String(i).padStart(3, '0')}`, kind: kinds[i % 3]!, payload: 'null', maxAttempts: 5 });
    const other = openDatabase(await currentUrl(db));
    try {
      const rounds = await Promise.all(
        Array.from({ length: 12 }, (_, i) =>
          claimDueJobs(
            i % 2 === 0 ? db : other.db,
            kinds.map((kind) => ({ kind, limit: 2, leaseSeconds: 600 })),
            i % 2 === 0 ? 'gw-a' : 'gw-b',
            `token-${i}`,
          ),
        ),
      );
      const ids = rounds.flat().map((d) => d.id);
      expect(new Set(ids).size, 'no job claimed twice').to.equal(ids.length);
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
