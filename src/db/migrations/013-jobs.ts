import type { Kysely } from 'kysely';

// One durable job table under every background task (src/jobs/). `active_key` is `key` while the job is
// unfinished and null once it is dead, so the unique index de-duplicates only unfinished jobs on both engines
// (NULLs are distinct in SQLite and PostgreSQL alike). Times are ISO-8601 UTC text, written from the database's
// own clock (db/dialect.ts `dbNow`), so leases never compare two hosts' clocks.
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('jobs')
    .addColumn('id', 'varchar(64)', (c) => c.primaryKey())
    .addColumn('kind', 'varchar(64)', (c) => c.notNull())
    .addColumn('key', 'varchar(512)')
    .addColumn('active_key', 'varchar(512)')
    .addColumn('queue', 'varchar(512)')
    .addColumn('payload', 'text', (c) => c.notNull())
    .addColumn('state', 'varchar(16)', (c) => c.notNull())
    .addColumn('run_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('max_attempts', 'integer', (c) => c.notNull())
    .addColumn('locked_by', 'varchar(128)')
    .addColumn('lock_token', 'varchar(64)')
    .addColumn('locked_until', 'varchar(32)')
    .addColumn('last_error', 'text')
    .addColumn('created_at', 'varchar(32)', (c) => c.notNull())
    .addColumn('updated_at', 'varchar(32)', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('jobs_kind_active_key').on('jobs').columns(['kind', 'active_key']).unique().execute();
  await db.schema.createIndex('jobs_kind_state_run_at').on('jobs').columns(['kind', 'state', 'run_at']).execute();
  await db.schema.createIndex('jobs_queue').on('jobs').columns(['queue', 'id']).execute();
}
