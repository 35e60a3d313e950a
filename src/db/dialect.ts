import { PostgresAdapter, sql, type RawBuilder, type SelectQueryBuilder } from 'kysely';
import type { Db } from './database.js';

/**
 * The one place where SQLite and PostgreSQL differ. Everything else (migrations,
 * repositories) is the same kysely code for both: text ids and ISO-8601 text
 * times, 0/1 integers for booleans, `onConflict` for insert-or-ignore/upsert.
 *
 * What differs, and why it is handled here:
 * - concurrency: SQLite has one writer (kysely runs every query of a process on
 *   one connection, and a second process waits on the file lock), so a read
 *   followed by a write in one transaction is already exclusive. PostgreSQL runs
 *   transactions side by side, from several gateway instances; there, work is
 *   claimed with `FOR UPDATE SKIP LOCKED` and decisions that read-then-write a
 *   shared counter take a transaction-scoped advisory lock first.
 * - `count(*)`/`sum()` come back as int8 from PostgreSQL: database.ts installs
 *   type parsers on its own pool so they arrive as numbers, as on SQLite.
 */
export type DialectName = 'sqlite' | 'postgres';

/** Which engine a Kysely (or a transaction of it) talks to. */
export function dialectOf(db: Db): DialectName {
  return db.getExecutor().adapter instanceof PostgresAdapter ? 'postgres' : 'sqlite';
}

/** Whether rows can be locked by a claim so that other instances skip them (PostgreSQL). */
export function supportsSkipLocked(db: Db): boolean {
  return dialectOf(db) === 'postgres';
}

/**
 * A claim's candidate SELECT: on PostgreSQL the rows are locked for this
 * transaction and rows another instance has locked are skipped (so instances
 * never wait on each other nor take the same row). On SQLite the caller's
 * transaction is already the only writer.
 */
export function forClaim<DB, TB extends keyof DB, O>(db: Db, q: SelectQueryBuilder<DB, TB, O>): SelectQueryBuilder<DB, TB, O> {
  return supportsSkipLocked(db) ? q.forUpdate().skipLocked() : q;
}

/**
 * Serialises, across instances, the transactions that read and then write the
 * same shared state under `key` (e.g. one radiologist's sampling counters):
 * PostgreSQL's transaction-scoped advisory lock, released at COMMIT/ROLLBACK.
 * SQLite needs nothing (one writer). Call inside a transaction, always taking
 * several keys in the same order.
 */
export async function lockKey(trx: Db, key: string): Promise<void> {
  if (dialectOf(trx) !== 'postgres') return;
  await sql`select pg_advisory_xact_lock(hashtextextended(${key}, 0))`.execute(trx);
}

/**
 * PostgreSQL text cannot hold NUL (SQLite can): a stray NUL in a received
 * message (junk on the wire, a broken sender) becomes U+FFFD on both engines,
 * so what is stored is the same whichever one is used, and storing never fails.
 */
export function storableText(text: string): string {
  return text.includes('\u0000') ? text.replace(/\u0000/g, '\uFFFD') : text;
}

/** A unique or primary key violation, in either engine's words (SQLite constraint codes, PostgreSQL SQLSTATE 23505). */
export function isUniqueViolation(err: unknown): boolean {
  const code = (err as { code?: unknown } | undefined)?.code;
  return code === '23505' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || code === 'SQLITE_CONSTRAINT_UNIQUE';
}

/**
 * The database's own "now" (plus `plusSeconds`), as the ISO-8601 UTC text every
 * time column holds (`2026-03-01T10:00:00.000Z`, as `Date.toISOString()`), for
 * every lease and "due" comparison: instances on different hosts then share one
 * clock, the database's, and never compare each other's. PostgreSQL: the
 * statement's start (one value within a statement); SQLite: 'now' is likewise
 * fixed for the duration of one statement.
 */
export function dbNow(db: Db, plusSeconds = 0): RawBuilder<string> {
  if (dialectOf(db) === 'postgres') {
    return sql<string>`to_char((statement_timestamp() at time zone 'UTC') + make_interval(secs => ${plusSeconds}::double precision), 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;
  }
  return sql<string>`strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ${`${plusSeconds >= 0 ? '+' : ''}${plusSeconds.toFixed(3)} seconds`})`;
}

/**
 * Locks the selected rows for the rest of the transaction on PostgreSQL (a
 * concurrent claim waits, then sees the row as it was committed); SQLite's
 * transaction is already the only writer.
 */
export function forUpdate<DB, TB extends keyof DB, O>(db: Db, q: SelectQueryBuilder<DB, TB, O>): SelectQueryBuilder<DB, TB, O> {
  return supportsSkipLocked(db) ? q.forUpdate() : q;
}

/**
 * A trigger that runs `statement` (plain SQL that may name the new row as `NEW`) after each insert into `table`,
 * in the inserting transaction. SQLite takes the statement inline; PostgreSQL needs it wrapped in a plpgsql function.
 * For a write that must always accompany another (an outbox row for every event), done by the database in the
 * same statement's round trip instead of a second one from every caller.
 */
export async function createAfterInsertTrigger(db: Db, name: string, table: string, statement: string): Promise<void> {
  if (dialectOf(db) === 'postgres') {
    await sql.raw(`create function ${name}() returns trigger language plpgsql as $body$ begin ${statement}; return null; end $body$`).execute(db);
    await sql.raw(`create trigger ${name} after insert on ${table} for each row execute function ${name}()`).execute(db);
  } else {
    await sql.raw(`create trigger ${name} after insert on ${table} begin ${statement}; end`).execute(db);
  }
}
