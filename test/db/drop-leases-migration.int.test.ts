import path from 'node:path';
import { expect } from 'chai';
import { Migrator, sql, type Kysely, type Migration } from 'kysely';
import { migrateToLatest, openDatabase, type Db } from '../../src/db/database.js';
import { dialectOf } from '../../src/db/dialect.js';
import { migrations } from '../../src/db/migrations/index.js';
import { makeTempDir, testDatabaseUrl, testPostgresUrl } from '../helpers/tmp.js';

const engine = testPostgresUrl ? 'PostgreSQL' : 'SQLite';

async function indexNames(db: Db): Promise<string[]> {
  const q =
    dialectOf(db) === 'postgres'
      ? sql<{ name: string }>`select indexname as name from pg_indexes where schemaname = current_schema()`
      : sql<{ name: string }>`select name from sqlite_master where type = 'index'`;
  return (await q.execute(db)).rows.map((r) => r.name);
}

describe(`migration 019 (drop the lease columns and work_leases) on ${engine}`, () => {
  it('drops work_leases, the lease columns of deliveries and outbound messages and their index, keeping every row', async () => {
    const tmp = makeTempDir();
    const opened = openDatabase(testDatabaseUrl(path.join(tmp.dir, 'gw.db')));
    try {
      const db = opened.db;
      const migrator = new Migrator({ db, provider: { getMigrations: () => Promise.resolve(migrations as Record<string, Migration>) } });
      const before = await migrator.migrateTo('018-arbitration');
      expect(before.error).to.equal(undefined);
      expect(await indexNames(db)).to.include('deliveries_lease_owner');
      // The columns are gone from the types, so the rows of an older database are written untyped.
      const old = db as unknown as Kysely<Record<string, Record<string, unknown>>>;
      const at = '2026-03-01T10:00:00.000Z';
      await old
        .insertInto('deliveries')
        .values({
          id: 'd1',
          case_id: 'c1',
          destination_id: 'pool',
          study_instance_uid: '1.2.3',
          state: 'sending',
          deidentify: 1,
          attempts: 2,
          next_attempt_at: at,
          last_error: 'refused',
          lease_owner: 'gw-a',
          lease_expires_at: at,
          instances_total: 3,
          instances_sent: 1,
          created_at: at,
          updated_at: at,
          delivered_at: null,
        })
        .execute();
      await old
        .insertInto('outbound_messages')
        .values({
          id: 'm1',
          kind: 'write-back',
          case_id: 'c1',
          report_id: 'r1',
          control_id: 'CTL1',
          payload: 'MSH|x',
          state: 'pending',
          attempts: 1,
          next_attempt_at: at,
          last_error: null,
          response: null,
          destination_id: null,
          lease_owner: 'gw-b',
          lease_expires_at: at,
          created_at: at,
          updated_at: at,
        })
        .execute();
      await old.insertInto('work_leases').values({ name: 'destination:pool', owner: 'gw-a', acquired_at: at, expires_at: at }).execute();

      expect(await migrateToLatest(db)).to.include('019-drop-leases');

      const tables = new Map((await db.introspection.getTables()).map((t) => [t.name, t.columns.map((c) => c.name)]));
      expect(tables.has('work_leases')).to.equal(false);
      for (const table of ['deliveries', 'outbound_messages']) {
        expect(tables.get(table), table).to.include('id').and.not.include('lease_owner').and.not.include('lease_expires_at');
      }
      expect(await indexNames(db)).to.not.include('deliveries_lease_owner');
      const d = await db.selectFrom('deliveries').selectAll().executeTakeFirstOrThrow();
      expect(d).to.deep.include({ id: 'd1', state: 'sending', attempts: 2, last_error: 'refused', instances_total: 3, instances_sent: 1 });
      const m = await db.selectFrom('outbound_messages').selectAll().executeTakeFirstOrThrow();
      expect(m).to.deep.include({ id: 'm1', state: 'pending', control_id: 'CTL1', payload: 'MSH|x', attempts: 1 });
    } finally {
      await opened.close();
      tmp.cleanup();
    }
  });
});
