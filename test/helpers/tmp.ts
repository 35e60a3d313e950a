import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { migrateToLatest, openDatabase, type OpenedDatabase } from '../../src/db/database.js';

/**
 * With `GATEWAY_TEST_DATABASE_URL=postgres://...` (a role that may CREATE
 * DATABASE) every test database is a fresh PostgreSQL database instead of a
 * SQLite file; without it, SQLite exactly as before.
 */
export const testPostgresUrl: string | undefined = process.env['GATEWAY_TEST_DATABASE_URL'] || undefined;

/**
 * The server the PostgreSQL-only tests (two instances, SKIP LOCKED) use: the
 * suite's own, or `GATEWAY_TEST_POSTGRES_URL` while the rest of the suite runs
 * on SQLite (CI sets it, so those tests run in both passes, skipped in neither).
 */
export const postgresServerUrl: string | undefined = testPostgresUrl ?? (process.env['GATEWAY_TEST_POSTGRES_URL'] || undefined);

/** Databases created per temp folder, dropped by that folder's cleanup. */
const createdDatabases: { owner: string; name: string }[] = [];

/**
 * Runs SQL on the admin URL from a child process: the helpers that build a
 * config are synchronous, and a database must exist before the gateway opens it.
 */
function adminSql(statements: string[]): void {
  const script = `
    const pg = require('pg');
    const c = new pg.Client({ connectionString: process.argv[1] });
    (async () => { await c.connect(); for (const s of JSON.parse(process.argv[2])) await c.query(s); await c.end(); })()
      .catch((e) => { console.error(e.message); process.exit(1); });`;
  execFileSync(process.execPath, ['-e', script, postgresServerUrl!, JSON.stringify(statements)], {
    cwd: path.resolve(import.meta.dirname, '../..'),
    stdio: ['ignore', 'ignore', 'inherit'],
  });
}

/** The URL of a database named `name` on the test server (same credentials as GATEWAY_TEST_DATABASE_URL). */
export function postgresUrlFor(name: string): string {
  const u = new URL(postgresServerUrl!);
  u.pathname = `/${name}`;
  return u.toString();
}

/** Creates an empty PostgreSQL database, dropped when `owner`'s temp folder is cleaned up (or by `dropTestDatabase`). */
export function createTestPostgresDatabase(owner: string): string {
  const name = `gw_test_${randomBytes(6).toString('hex')}`;
  adminSql([`CREATE DATABASE ${name}`]);
  createdDatabases.push({ owner, name });
  return postgresUrlFor(name);
}

function dropDatabases(names: string[]): void {
  if (names.length === 0) return;
  // FORCE: a test that failed half-way may still hold connections.
  adminSql(names.map((n) => `DROP DATABASE IF EXISTS ${n} WITH (FORCE)`));
}

/**
 * The `database.url` for a gateway (or component) under test whose SQLite file
 * would be `sqliteFile`: that file, or a fresh PostgreSQL database when
 * GATEWAY_TEST_DATABASE_URL is set (dropped by the cleanup of the temp folder
 * that holds `sqliteFile`).
 */
export function testDatabaseUrl(sqliteFile: string): string {
  if (!testPostgresUrl) return `sqlite:${sqliteFile}`;
  // The same file means the same database (a test that restarts a gateway on its data).
  const known = byFile.get(sqliteFile);
  if (known && createdDatabases.some((d) => d.name === known.name)) return known.url;
  const url = createTestPostgresDatabase(path.dirname(sqliteFile));
  byFile.set(sqliteFile, { name: new URL(url).pathname.slice(1), url });
  return url;
}
const byFile = new Map<string, { name: string; url: string }>();

/**
 * The part of a whole-gateway test config that places it: every listener on an
 * ephemeral loopback port, spool and database in `dir`, and studies stable
 * after 0.2 s so tests do not wait long for them.
 */
export function gatewayInTempDir(dir: string) {
  return {
    dicom: { port: 0, stableAfterSeconds: 0.2 },
    hl7: { port: 0 },
    http: { port: 0 },
    storage: { dir: path.join(dir, 'data'), minFreeMb: 0 },
    database: { url: testDatabaseUrl(path.join(dir, 'gw.db')) },
  };
}

/** A fresh folder per test, removed after; every test DB and spool lives in one. */
export function makeTempDir(prefix = 'gw-test-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  return {
    dir,
    cleanup: () => {
      rmSync(dir, { recursive: true, force: true });
      const mine = createdDatabases.filter((d) => d.owner === dir || d.owner.startsWith(dir + path.sep));
      for (const d of mine) createdDatabases.splice(createdDatabases.indexOf(d), 1);
      dropDatabases(mine.map((d) => d.name));
    },
  };
}

/** A migrated database in a fresh temp folder (SQLite, or PostgreSQL with GATEWAY_TEST_DATABASE_URL): the real engine, as every DB test uses. */
export async function openTempDatabase(): Promise<{ dir: string; opened: OpenedDatabase; close: () => Promise<void> }> {
  const tmp = makeTempDir();
  const opened = openDatabase(testDatabaseUrl(path.join(tmp.dir, 'gw.db')));
  await migrateToLatest(opened.db);
  return {
    dir: tmp.dir,
    opened,
    close: async () => {
      await opened.close();
      tmp.cleanup();
    },
  };
}

/** A migrated PostgreSQL database in a fresh temp folder, whichever engine the rest of the suite uses (PostgreSQL-only tests). */
export async function openTempPostgresDatabase(): Promise<{ dir: string; opened: OpenedDatabase; close: () => Promise<void> }> {
  const tmp = makeTempDir();
  const opened = openDatabase(createTestPostgresDatabase(tmp.dir));
  await migrateToLatest(opened.db);
  return {
    dir: tmp.dir,
    opened,
    close: async () => {
      await opened.close();
      tmp.cleanup();
    },
  };
}

/** For PostgreSQL-only tests: prints the agreed `skipped:` line and skips when no server is configured. */
export function requirePostgres(ctx: Mocha.Context): string {
  if (!postgresServerUrl) {
    console.log('skipped: no PostgreSQL (set GATEWAY_TEST_POSTGRES_URL or GATEWAY_TEST_DATABASE_URL)');
    ctx.skip();
  }
  return postgresServerUrl!;
}
