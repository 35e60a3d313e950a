import { expect } from 'chai';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { openDatabase } from '../../src/db/database.js';
import { NamedStatementPool } from '../../src/db/pg-named-statements.js';
import { createTestPostgresDatabase, makeTempDir, requirePostgres } from '../helpers/tmp.js';

interface T {
  things: { id: number; label: string };
}

describe('PostgreSQL named statements', () => {
  it('names plain DML by its text, leaves `*`, long IN lists and transaction control unnamed (not counted), and stops naming at the bound', () => {
    const p = new NamedStatementPool(new pg.Pool({ max: 1 }), 3);
    // Texts left unnamed come first: they must not use up the bound of 3.
    expect(p.nameOf('select * from "things" where "id" = $1')).to.equal(null);
    expect(p.nameOf('update "things" set "label" = $1 returning *')).to.equal(null);
    expect(p.nameOf('select "t".*, 1 from "things" as "t"')).to.equal(null);
    expect(p.nameOf('begin')).to.equal(null);
    expect(p.nameOf('create table "x" ("id" integer)')).to.equal(null);
    const long = `select "id" from "things" where "id" in (${Array.from({ length: 12 }, (_, i) => `$${i + 1}`).join(', ')})`;
    expect(p.nameOf(long)).to.equal(null);
    const a = p.nameOf('select "id" from "things" where "id" = $1');
    expect(a).to.match(/^gw_[0-9a-f]{24}$/);
    expect(p.nameOf('select "id" from "things" where "id" = $1'), 'same text, same name').to.equal(a);
    expect(p.nameOf('update "things" set "label" = $1 where "id" = $2')).to.match(/^gw_/).and.not.equal(a);
    expect(p.nameOf('select count(*) as "n" from "things"'), 'count(*) is not a star select').to.match(/^gw_/);
    // Three texts were named; the bound (3 here) is reached, so a new text stays unnamed.
    expect(p.nameOf('delete from "things" where "id" = $1')).to.equal(null);
  });

  describe('on a server', function () {
    let url: string;
    let tmp: ReturnType<typeof makeTempDir>;
    before(function () {
      requirePostgres(this);
      tmp = makeTempDir();
      url = createTestPostgresDatabase(tmp.dir);
    });
    after(() => tmp?.cleanup());

    function open(max = 1) {
      const pool = new pg.Pool({ connectionString: url, max });
      return new Kysely<T>({ dialect: new PostgresDialect({ pool: new NamedStatementPool(pool) }) });
    }

    it('prepares a text once per connection and runs it by name after that', async () => {
      const db = open();
      try {
        await sql`create table if not exists things (id integer primary key, label text not null)`.execute(db);
        await db.deleteFrom('things').execute();
        for (let i = 1; i <= 3; i++)
          await db
            .insertInto('things')
            .values({ id: i, label: `t${i}` })
            .execute();
        const labels: string[] = [];
        for (let i = 1; i <= 3; i++) labels.push((await db.selectFrom('things').select('label').where('id', '=', i).executeTakeFirstOrThrow()).label);
        expect(labels).to.deep.equal(['t1', 't2', 't3']);
        const prepared = await sql<{ statement: string }>`select statement from pg_prepared_statements`.execute(db);
        const texts = prepared.rows.map((r) => r.statement);
        expect(texts.filter((t) => t.startsWith('select "label" from "things"'))).to.have.length(1);
        expect(texts.filter((t) => t.startsWith('insert into "things"'))).to.have.length(1);
      } finally {
        await db.destroy();
      }
    });

    it('closes a connection whose statement changed result type under it, so the next statement runs', async () => {
      const db = open();
      try {
        await sql`create table if not exists things (id integer primary key, label text not null)`.execute(db);
        await db.deleteFrom('things').execute();
        await db.insertInto('things').values({ id: 1, label: 'x' }).execute();
        const read = () => db.selectFrom('things').select(['id', 'label']).where('id', '=', 1).executeTakeFirstOrThrow();
        expect((await read()).label).to.equal('x');
        // Another instance's migration (a rolling upgrade) changes a column the prepared statement returns.
        const other = new pg.Client({ connectionString: url });
        await other.connect();
        await other.query('alter table things alter column label type varchar(20)');
        await other.end();
        const err = await read().then(
          () => null,
          (e: unknown) => e as { code?: string },
        );
        expect(err?.code, 'the statement prepared before the change is refused once').to.equal('0A000');
        // The pool has one connection: without closing the poisoned one, this read would fail the same way.
        expect((await read()).label).to.equal('x');
      } finally {
        await db.destroy();
      }
    });

    it('names nothing when database.postgresNamedStatements is false', async () => {
      const opened = openDatabase(url, { postgresNamedStatements: false });
      try {
        await opened.db.transaction().execute(async (trx) => {
          for (let i = 0; i < 3; i++) await sql`select ${i}::int as "n"`.execute(trx);
          const prepared = await sql<{ n: number }>`select count(*)::int as "n" from pg_prepared_statements`.execute(trx);
          expect(prepared.rows[0]!.n).to.equal(0);
        });
      } finally {
        await opened.close();
      }
      const named = openDatabase(url);
      try {
        await named.db.transaction().execute(async (trx) => {
          for (let i = 0; i < 3; i++) await sql`select ${i}::int as "n"`.execute(trx);
          const prepared = await sql<{
            n: number;
          }>`select count(*)::int as "n" from pg_prepared_statements where statement = ${'select $1::int as "n"'}`.execute(trx);
          expect(prepared.rows[0]!.n, 'on by default').to.equal(1);
        });
      } finally {
        await named.close();
      }
    });
  });
});
