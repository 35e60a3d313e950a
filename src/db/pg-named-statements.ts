import { createHash } from 'node:crypto';
import type { PostgresCursor, PostgresPool, PostgresPoolClient, PostgresQueryResult } from 'kysely';
import type pg from 'pg';

/** Distinct texts given a name, for the whole pool; the soak runs about 200 (SQLite's cache has the same bound). */
export const NAMED_STATEMENTS_MAX = 256;

/** Only plain DML is named: transaction control, savepoints and migrations' DDL gain nothing from it. */
const DML = /^\s*(select|insert|update|delete|with)\b/i;
/** An IN list of more than 8 placeholders (`in ($1, $2, ...)`): its length varies with the data, so its text rarely recurs. */
const LONG_IN_LIST = /\bin \((?:\$\d+, ){8,}\$\d+\)/i;
/**
 * `select *` and `returning *`: PostgreSQL refuses to run a prepared statement
 * whose result columns changed since it was prepared ("cached plan must not
 * change result type"), which a migration by another instance of a rolling
 * upgrade could cause. Texts with a `*` other than `count(*)` stay unnamed.
 */
const STAR = /\*/;

/**
 * Errors after which the connection's prepared statements cannot be trusted:
 * a result type changed under a statement (0A000 with that message), or the
 * server no longer knows a name pg believes it prepared (26000: a proxy that
 * switched the server connection). The connection is then closed, not reused.
 */
function poisonsStatements(err: unknown): boolean {
  const e = err as { code?: string; message?: string };
  return e.code === '26000' || (e.code === '0A000' && /cached plan must not change result type/i.test(e.message ?? ''));
}

/**
 * kysely's PostgreSQL driver sends every statement unnamed, so PostgreSQL
 * parses and plans each one on every call: measured at 1.2 s of the server's
 * time per 120 forwarded cases, on texts that never change (the job claim, the
 * per-instance stop check). This pool gives the hot texts a name (a hash of the
 * text), so each connection parses a text once and PostgreSQL can keep a
 * generic plan after a few runs (its plan cache re-plans when a table it uses
 * changes). The pool's public interface is all kysely uses (`connect`,
 * `query(text, values)`, `release`, `end`); pg's own named-query support does
 * the protocol.
 *
 * Off (`database.postgresNamedStatements: false`) behind a proxy that pools
 * transactions without tracking prepared statements (PgBouncer before 1.21, or
 * without `max_prepared_statements`): a name prepared on one server connection
 * is unknown on the next.
 */
export class NamedStatementPool implements PostgresPool {
  private readonly names = new Map<string, string>();
  private readonly wrapped = new WeakMap<pg.PoolClient, NamingClient>();

  constructor(
    private readonly pool: pg.Pool,
    private readonly max = NAMED_STATEMENTS_MAX,
  ) {}

  async connect(): Promise<PostgresPoolClient> {
    const client = await this.pool.connect();
    // The same wrapper for the same connection: kysely keeps its per-connection state keyed by the client.
    let w = this.wrapped.get(client);
    if (!w) {
      w = new NamingClient(client, (text) => this.nameOf(text));
      this.wrapped.set(client, w);
    }
    w.poisoned = false;
    return w;
  }

  end(): Promise<void> {
    return this.pool.end();
  }

  /**
   * The name for `text`, or null when it stays unnamed. Only named texts are kept and count towards the bound, so
   * the unnamed ones (`select *`, long IN lists, one-off texts) never use up the room of a frequent text.
   */
  nameOf(text: string): string | null {
    const known = this.names.get(text);
    if (known !== undefined) return known;
    if (this.names.size >= this.max) return null;
    if (!DML.test(text) || LONG_IN_LIST.test(text) || STAR.test(text.replace(/count\(\*\)/gi, ''))) return null;
    const name = 'gw_' + createHash('sha1').update(text).digest('hex').slice(0, 24);
    this.names.set(text, name);
    return name;
  }
}

class NamingClient implements PostgresPoolClient {
  poisoned = false;

  constructor(
    private readonly client: pg.PoolClient,
    private readonly nameOf: (text: string) => string | null,
  ) {}

  query<R>(sql: string, parameters: readonly unknown[]): Promise<PostgresQueryResult<R>>;
  query<R>(cursor: PostgresCursor<R>): PostgresCursor<R>;
  query<R>(sqlOrCursor: string | PostgresCursor<R>, parameters?: readonly unknown[]): Promise<PostgresQueryResult<R>> | PostgresCursor<R> {
    // A cursor (kysely's streaming) goes through as it is.
    if (typeof sqlOrCursor !== 'string') return this.client.query(sqlOrCursor as unknown as pg.Submittable) as unknown as PostgresCursor<R>;
    const name = this.nameOf(sqlOrCursor);
    const values = parameters ? [...parameters] : [];
    const run = name ? this.client.query({ name, text: sqlOrCursor, values }) : this.client.query(sqlOrCursor, values);
    return (run as unknown as Promise<PostgresQueryResult<R>>).catch((err: unknown) => {
      if (poisonsStatements(err)) this.poisoned = true;
      throw err;
    });
  }

  release(destroy?: boolean): void {
    this.client.release(destroy === true || this.poisoned);
  }
}
