import type { Compilable, CompiledQuery, QueryResult } from 'kysely';
import type { Db } from './database.js';

const MARK = '\u0000param:';

/**
 * A named parameter inside a `precompiled` builder. Typed as whatever the
 * column wants, so the builder type-checks like any kysely query.
 */
export function param<T = never>(name: string): T {
  return `${MARK}${name}` as T;
}

/**
 * `{column: param('column')}` for every column named: the values of an insert whose parameters are its columns. Give
 * the columns as an object checked with `satisfies Record<keyof SomeTable, true>`, so a column added to the table
 * cannot be left out of the statement.
 */
export function paramsFor<K extends string>(columns: Record<K, true>): Record<K, never> {
  return Object.fromEntries(Object.keys(columns).map((c) => [c, param(c)])) as Record<K, never>;
}

export type PrecompiledQuery<P, R> = (db: Db, params: P) => Promise<QueryResult<R>>;

/**
 * A hot query that kysely builds and compiles once (per dialect), after which
 * every call only binds parameters and runs it. kysely otherwise builds,
 * freezes and compiles the whole operation tree on every call, which was most
 * of the non-SQLite CPU of an HL7 message. The SQL text is identical on every
 * call, so database.ts's statement cache also never prepares it again.
 *
 * Values written with `param('name')` are bound from `params.name` at run time
 * (undefined binds as NULL); any other value in the builder is a constant.
 * Only for queries whose shape never depends on the values (fixed column lists,
 * no IN lists of varying length), on a Kysely without query-transforming
 * plugins that differ between callers (the cache is per dialect adapter).
 */
export function precompiled<P extends object, R = unknown>(build: (db: Db) => Compilable<R>): PrecompiledQuery<P, R> {
  // Keyed by the dialect adapter: shared by the root Kysely and every transaction on it.
  const compiled = new WeakMap<object, { query: CompiledQuery<R>; slots: (string | null)[] }>();
  return (db, params) => {
    const adapter = db.getExecutor().adapter;
    let c = compiled.get(adapter);
    if (!c) {
      const query = build(db).compile();
      const slots = query.parameters.map((v) => (typeof v === 'string' && v.startsWith(MARK) ? v.slice(MARK.length) : null));
      c = { query, slots };
      compiled.set(adapter, c);
    }
    const constants = c.query.parameters;
    const values = params as Record<string, unknown>;
    const parameters = c.slots.map((name, i) => (name === null ? constants[i] : (values[name] ?? null)));
    return db.executeQuery<R>({ ...c.query, parameters });
  };
}
