import { mkdirSync } from 'node:fs';
import path from 'node:path';
import SQLite from 'better-sqlite3';
import { Kysely, Migrator, PostgresDialect, SqliteDialect, type Migration, type MigrationProvider } from 'kysely';
import pg from 'pg';
import { SQLITE_CACHE_MB_DEFAULT } from '../config/schema.js';
import { CommitListeners, notifyingCommits } from './commit-notifier.js';
import { NamedStatementPool } from './pg-named-statements.js';
import type { Database } from './schema.js';
import { migrations } from './migrations/index.js';

export type Db = Kysely<Database>;

export interface OpenedDatabase {
  db: Db;
  dialect: 'sqlite' | 'postgres';
  /** Told after each transaction of `db` commits (the job runner wakes up for what was enqueued in it). */
  commits: CommitListeners;
  close(): Promise<void>;
}

/**
 * Opens the database named by `database.url`. SQLite is the embedded default;
 * PostgreSQL (`postgres://user:pass@host:port/db`) lets several instances share
 * one state. The differences that matter to queries are in dialect.ts.
 */
export function openDatabase(url: string, options: { sqliteCacheMb?: number; postgresNamedStatements?: boolean } = {}): OpenedDatabase {
  if (url.startsWith('sqlite:')) return openSqlite(url.slice('sqlite:'.length), options.sqliteCacheMb ?? SQLITE_CACHE_MB_DEFAULT);
  if (url.startsWith('postgres:') || url.startsWith('postgresql:')) return openPostgres(url, options.postgresNamedStatements ?? true);
  throw new Error(`database.url: ${url.split(':')[0]} is not supported (sqlite: or postgres://)`);
}

/**
 * int8 (count(*), sum(), bigint columns such as size_bytes) and numeric come
 * back from pg as strings, because they may exceed 2^53. Ours never do (byte
 * counts and row counts), and the code expects numbers as SQLite gives them.
 * Set on this pool only, not on pg's global parsers.
 */
const pgTypes: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') => {
    if (oid === pg.types.builtins.INT8 || oid === pg.types.builtins.NUMERIC) return (v: string) => Number(v);
    return pg.types.getTypeParser(oid, format);
  }) as pg.CustomTypesConfig['getTypeParser'],
};

function openPostgres(url: string, namedStatements: boolean): OpenedDatabase {
  const pool = new pg.Pool({
    connectionString: url,
    types: pgTypes,
    max: 10,
    // As SQLite's busy_timeout: a lock held by an operator or a stuck transaction makes an acknowledgement
    // fail (AE / 0xA700, the sender retries) after 5 s instead of hanging the connection.
    options: '-c lock_timeout=5000',
  });
  // An idle connection dropped by the server must not crash the process; the next query gets a fresh one.
  pool.on('error', () => undefined);
  const commits = new CommitListeners();
  const db = new Kysely<Database>({ dialect: notifyingCommits(new PostgresDialect({ pool: namedStatements ? new NamedStatementPool(pool) : pool }), commits) });
  return {
    db,
    dialect: 'postgres',
    commits,
    close: async () => {
      await db.destroy();
    },
  };
}

function openSqlite(file: string, cacheMb: number): OpenedDatabase {
  if (file !== ':memory:') mkdirSync(path.dirname(file), { recursive: true });
  const sqlite = new SQLite(file);
  // WAL: HTTP reads and the stability sweep never wait behind an ingest commit, and a commit is one append.
  sqlite.pragma('journal_mode = WAL');
  // FULL: we acknowledge C-STORE and HL7 only after COMMIT, so a commit must survive power loss, not just a process crash.
  sqlite.pragma('synchronous = FULL');
  // Referential integrity is part of the data model (instances belong to series belong to studies).
  sqlite.pragma('foreign_keys = ON');
  // An operator's sqlite3 shell or a backup may hold the lock briefly; wait rather than fail an acknowledgement.
  sqlite.pragma('busy_timeout = 5000');
  // Negative: KiB. The page cache is native memory that fills up to this bound as pages are read, so an
  // explicit, small bound keeps RSS flat soon after start (better-sqlite3's own default is 16 MB; schema.ts).
  sqlite.pragma(`cache_size = -${Math.round(cacheMb * 1024)}`);
  const commits = new CommitListeners();
  const db = new Kysely<Database>({ dialect: notifyingCommits(new SqliteDialect({ database: withStatementCache(sqlite) }), commits) });
  return {
    db,
    dialect: 'sqlite',
    commits,
    close: async () => {
      await db.destroy();
    },
  };
}

/** Forward-only: every migration has only `up`; a release never edits a migration that has shipped. */
export async function migrateToLatest(db: Db): Promise<string[]> {
  const provider: MigrationProvider = {
    getMigrations: () => Promise.resolve(migrations as Record<string, Migration>),
  };
  const migrator = new Migrator({ db, provider });
  const { error, results } = await migrator.migrateToLatest();
  if (error) throw error instanceof Error ? error : new Error(String(error));
  return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
}

/** Well above the distinct texts a busy gateway runs (about 200 in the soak, migrations included). */
export const STATEMENT_CACHE_MAX = 256;
/** An IN list of more than 8 placeholders, as kysely writes it: `in (?, ?, ...)`. */
const LONG_IN_LIST = /\bin \((?:\?, ){8,}\?\)/i;

/**
 * kysely's SQLite driver prepares every statement again on every call, which
 * measured 13% of the CPU of the HL7 path. Our queries are few distinct SQL
 * texts with parameters, so a bounded cache keyed by the text serves them.
 * Safe because better-sqlite3 runs each statement to completion before the
 * next call (we never stream rows, so no statement is busy when reused).
 *
 * Each cached statement holds ~5 KB of native SQLite memory that the V8 heap
 * does not see, so the cache holds the hot texts only: least recently used
 * goes first (a one-off text must not push out a statement used every second,
 * as eviction in insertion order did), and a text with a long IN list (its
 * length varies with the data, so it rarely recurs) is not cached at all. A
 * literal inlined into the SQL (a new text per call: ~25 a minute in the soak)
 * once filled the cache and churned it; values must be bound parameters.
 */
export function withStatementCache(sqlite: SQLite.Database, max = STATEMENT_CACHE_MAX): SQLite.Database {
  const cache = new Map<string, SQLite.Statement>();
  const prepare = sqlite.prepare.bind(sqlite);
  return new Proxy(sqlite, {
    get(target, prop, receiver) {
      if (prop !== 'prepare') return Reflect.get(target, prop, receiver) as unknown;
      return (source: string) => {
        let stmt = cache.get(source);
        if (stmt) {
          // Map keeps insertion order: re-inserting makes it the most recently used.
          cache.delete(source);
          cache.set(source, stmt);
          return stmt;
        }
        stmt = prepare(source);
        if (LONG_IN_LIST.test(source)) return stmt;
        if (cache.size >= max) cache.delete(cache.keys().next().value as string);
        cache.set(source, stmt);
        return stmt;
      };
    },
  });
}
