import path from 'node:path';
import SQLite from 'better-sqlite3';
import { expect } from 'chai';
import { sql } from 'kysely';
import { openDatabase, withStatementCache } from '../../src/db/database.js';
import { makeTempDir } from '../helpers/tmp.js';

// The statement cache and the page cache are native memory the V8 heap does not show: the soak found RSS
// climbing ~1 MB a minute while the heap stayed flat. Both must stay bounded to what the gateway needs.
describe('SQLite native memory bounds', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  let raw: SQLite.Database;

  beforeEach(() => {
    tmp = makeTempDir();
    raw = new SQLite(path.join(tmp.dir, 'cache.db'));
    raw.exec('create table t (x integer)');
  });
  afterEach(() => {
    raw.close();
    tmp.cleanup();
  });

  it('serves a repeated SQL text from the cache', () => {
    const cached = withStatementCache(raw, 4);
    expect(cached.prepare('select x from t where x = ?')).to.equal(cached.prepare('select x from t where x = ?'));
  });

  it('evicts the least recently used text, not the first one cached', () => {
    const cached = withStatementCache(raw, 3);
    const hot = cached.prepare('select x from t where x = ?');
    const b = cached.prepare('select x from t where x > ?');
    cached.prepare('select x from t where x < ?');
    expect(cached.prepare('select x from t where x = ?'), 'a hit').to.equal(hot);
    cached.prepare('select x from t where x <> ?'); // full: the least recently used (b) goes
    expect(cached.prepare('select x from t where x = ?'), 'the hot statement stays').to.equal(hot);
    expect(cached.prepare('select x from t where x > ?'), 'b was evicted and prepared again').to.not.equal(b);
  });

  it('stays bounded under a stream of one-off texts, keeping the one in use', () => {
    const cached = withStatementCache(raw, 8);
    const hot = cached.prepare('select x from t where x = ?');
    // As addMissingInstances did with the delivery id inlined: a new text per call.
    for (let i = 0; i < 200; i++) {
      cached.prepare(`select x from t where x = ${i}`);
      expect(cached.prepare('select x from t where x = ?')).to.equal(hot);
    }
    const first = cached.prepare('select x from t where x = 1');
    for (let i = 1000; i < 1008; i++) cached.prepare(`select x from t where x = ${i}`);
    expect(cached.prepare('select x from t where x = 1'), 'evicted after 8 newer texts').to.not.equal(first);
  });

  it('does not cache a statement with a long IN list, whose length varies with the data', () => {
    const cached = withStatementCache(raw, 16);
    const long = `select x from t where x in (${Array.from({ length: 9 }, () => '?').join(', ')})`;
    const short = 'select x from t where x in (?, ?, ?)';
    expect(cached.prepare(long)).to.not.equal(cached.prepare(long));
    expect(cached.prepare(short)).to.equal(cached.prepare(short));
    expect(cached.prepare(long).all(1, 2, 3, 4, 5, 6, 7, 8, 9)).to.deep.equal([]);
  });

  it('bounds the page cache to database.sqliteCacheMb (2 MB unless configured)', async () => {
    const pageCache = async (o: ReturnType<typeof openDatabase>) => (await sql<{ cache_size: number }>`pragma cache_size`.execute(o.db)).rows[0]?.cache_size;
    const byDefault = openDatabase(`sqlite:${path.join(tmp.dir, 'a.db')}`);
    const configured = openDatabase(`sqlite:${path.join(tmp.dir, 'b.db')}`, { sqliteCacheMb: 8 });
    try {
      // Negative: KiB. better-sqlite3's own default is -16000, which took ~25 minutes of soak to fill.
      expect(await pageCache(byDefault)).to.equal(-2048);
      expect(await pageCache(configured)).to.equal(-8192);
    } finally {
      await byDefault.close();
      await configured.close();
    }
  });
});
