import { CompiledQuery } from 'kysely';
import type { Db } from './database.js';

interface SavepointStatements {
  begin: CompiledQuery;
  release: CompiledQuery;
  rollback: CompiledQuery;
}

// Built once per name (not a `sql` template compiled per use): the HL7 batch takes one per message.
const statements = new Map<string, SavepointStatements>();

function savepointStatements(name: string): SavepointStatements {
  let s = statements.get(name);
  if (!s) {
    // The name goes into the SQL text as is: the caller's own constant, never received data.
    if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error(`invalid savepoint name "${name}"`);
    s = {
      begin: CompiledQuery.raw(`savepoint ${name}`),
      release: CompiledQuery.raw(`release savepoint ${name}`),
      rollback: CompiledQuery.raw(`rollback to savepoint ${name}`),
    };
    statements.set(name, s);
  }
  return s;
}

/** Savepoints inside the caller's transaction (the same statements on SQLite and PostgreSQL). */
export async function beginSavepoint(trx: Db, name: string): Promise<void> {
  await trx.executeQuery(savepointStatements(name).begin);
}

export async function releaseSavepoint(trx: Db, name: string): Promise<void> {
  await trx.executeQuery(savepointStatements(name).release);
}

/** Undoes what was done since the savepoint; the savepoint stays until released. */
export async function rollbackToSavepoint(trx: Db, name: string): Promise<void> {
  await trx.executeQuery(savepointStatements(name).rollback);
}
