import { expect } from 'chai';
import { openTempDatabase, testPostgresUrl } from '../helpers/tmp.js';

describe(`commit notifications (${testPostgresUrl ? 'PostgreSQL' : 'SQLite'})`, () => {
  it('reports each committed transaction after COMMIT, not a rolled-back one; a listener that throws harms nothing', async () => {
    const t = await openTempDatabase();
    try {
      const { db, commits } = t.opened;
      const seen: number[] = [];
      commits.add(() => {
        throw new Error('a broken listener');
      });
      const remove = commits.add(() => seen.push(seen.length));
      const now = new Date().toISOString();
      await db.transaction().execute(async (trx) => {
        await trx.insertInto('settings').values({ key: 'a', value: '1', created_at: now }).execute();
        expect(seen, 'not before COMMIT').to.deep.equal([]);
      });
      expect(seen).to.deep.equal([0]);
      await db
        .transaction()
        .execute(async (trx) => {
          await trx.insertInto('settings').values({ key: 'b', value: '1', created_at: now }).execute();
          throw new Error('rolled back');
        })
        .catch(() => undefined);
      expect(seen, 'a rollback is not a commit').to.deep.equal([0]);
      remove();
      await db.transaction().execute((trx) => trx.insertInto('settings').values({ key: 'c', value: '1', created_at: now }).execute());
      expect(seen, 'removed').to.deep.equal([0]);
      expect((await db.selectFrom('settings').select('key').orderBy('key').execute()).map((r) => r.key)).to.deep.equal(['a', 'c']);
    } finally {
      await t.close();
    }
  });
});
