import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { migrateToLatest, openDatabase, type OpenedDatabase } from '../../src/db/database.js';

/** A fresh folder per test, removed after; every test DB and spool lives in one. */
export function makeTempDir(prefix = 'gw-test-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A migrated SQLite database in a fresh temp folder: the real engine, as every DB test uses. */
export async function openTempDatabase(): Promise<{ dir: string; opened: OpenedDatabase; close: () => Promise<void> }> {
  const tmp = makeTempDir();
  const opened = openDatabase(`sqlite:${path.join(tmp.dir, 'gw.db')}`);
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
