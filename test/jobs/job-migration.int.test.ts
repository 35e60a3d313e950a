import path from 'node:path';
import { expect } from 'chai';
import { Migrator, type Migration } from 'kysely';
import { migrateToLatest, openDatabase } from '../../src/db/database.js';
import { migrations } from '../../src/db/migrations/index.js';
import { jobsOf } from '../../src/jobs/job.repository.js';
import { makeTempDir, testDatabaseUrl } from '../helpers/tmp.js';

describe('migration 013 (jobs)', () => {
  it('gives every outbound message still to go out its sending job, in its case-and-channel queue, in order', async () => {
    const tmp = makeTempDir();
    const opened = openDatabase(testDatabaseUrl(path.join(tmp.dir, 'gw.db')));
    try {
      const db = opened.db;
      const migrator = new Migrator({ db, provider: { getMigrations: () => Promise.resolve(migrations as Record<string, Migration>) } });
      const before = await migrator.migrateTo('012-rule-text-sampling');
      expect(before.error).to.equal(undefined);
      const at = '2026-03-01T10:00:00.000Z';
      const row = (id: string, state: 'pending' | 'waiting' | 'accepted' | 'failed', kind: 'write-back' | 'webhook' = 'write-back') => ({
        id,
        kind,
        case_id: 'c1',
        report_id: null,
        control_id: null,
        payload: 'x',
        state,
        attempts: 0,
        next_attempt_at: at,
        last_error: null,
        response: null,
        created_at: at,
        updated_at: at,
      });
      await db
        .insertInto('outbound_messages')
        .values([row('m1', 'accepted'), row('m2', 'waiting'), row('m3', 'pending'), row('m4', 'failed'), row('m5', 'pending', 'webhook')])
        .execute();
      await migrateToLatest(db);
      const jobs = await jobsOf(db, 'outbound.send');
      expect(jobs.map((j) => [j.id, j.queue, JSON.parse(j.payload) as unknown, j.state])).to.deep.equal([
        ['m2', 'outbound:write-back:c1', { messageId: 'm2' }, 'pending'],
        ['m3', 'outbound:write-back:c1', { messageId: 'm3' }, 'pending'],
        ['m5', 'outbound:webhook:c1', { messageId: 'm5' }, 'pending'],
      ]);
    } finally {
      await opened.close();
      tmp.cleanup();
    }
  });
});
