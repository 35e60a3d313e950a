import { expect } from 'chai';
import { sql } from 'kysely';
import { insertCase } from '../../src/cases/case.repository.js';
import type { CaseRow } from '../../src/cases/case.table.js';
import type { Db } from '../../src/db/database.js';
import { claimFlaggedCase, insertDelivery, lockDelivery, updateDelivery } from '../../src/forwarding/outbox.repository.js';
import { CaseState, DeliveryState } from '../../src/states.js';
import { insertInstance } from '../../src/studies/study.repository.js';
import { eventually } from '../helpers/eventually.js';
import { openTempPostgresDatabase, requirePostgres } from '../helpers/tmp.js';

/**
 * Planning locks a case (or a delivery) that another transaction may hold for a
 * reason that is not planning: a re-evaluation updating a flagged case's
 * reasons, a delivery job recording progress. Skipping a locked row there left
 * the case flagged with nothing left to plan it (seen as a case that never
 * reached the pool when the final report arrived as the study became stable).
 * The lock waits, then answers from what the holder committed.
 */
describe('planning locks wait for the holder and answer from its commit (PostgreSQL)', function () {
  this.timeout(30_000);
  let t: Awaited<ReturnType<typeof openTempPostgresDatabase>> | undefined;
  let db: Db;
  const now = '2026-03-01T10:00:00.000Z';

  beforeEach(async function () {
    requirePostgres(this);
    t = await openTempPostgresDatabase();
    db = t.opened.db;
    await insertInstance(
      db,
      {
        sopClassUid: '1.2.840.10008.5.1.4.1.1.2',
        sopInstanceUid: '1.2.1.1.1',
        transferSyntaxUid: '1.2.840.10008.1.2.1',
        studyInstanceUid: '1.2.1',
        seriesInstanceUid: '1.2.1.1',
        accessionNumber: 'A1',
        patientId: 'MRN1',
        modality: 'CT',
        studyDescription: null,
        seriesDescription: null,
        bodyPartExamined: null,
        studyDate: null,
        referringPhysicianName: null,
        seriesNumber: 1,
        instanceNumber: 1,
        filePath: '1.dcm',
        sizeBytes: 10,
        sha256: 'ab',
        callingAe: null,
      },
      now,
    );
    const row: CaseRow = {
      id: 'c1',
      study_instance_uid: '1.2.1',
      accession_number: 'A1',
      state: CaseState.flagged,
      priority: 'routine',
      sla_hours: 24,
      due_at: now,
      destination_id: 'pool',
      reader_group: null,
      blinded: 1,
      deidentify: null,
      rule_set_version: 1,
      reasons: '[]',
      reader_id: null,
      discrepant: 0,
      sla_breached_at: null,
      escalation_level: 0,
      created_by: 'test',
      created_at: now,
      updated_at: now,
    };
    await insertCase(db, row);
  });
  afterEach(async () => {
    await t?.close();
    t = undefined;
  });

  /** Runs `holder` in a transaction, starts `waiter` once it holds its locks, and commits when `waiter` is blocked. */
  async function whileHeld<T>(holder: (trx: Db) => Promise<void>, waiter: () => Promise<T>): Promise<T> {
    const trx = await db.startTransaction().execute();
    let result: Promise<T> | undefined;
    try {
      await holder(trx);
      result = waiter();
      await eventually(async () => {
        const waiting = await sql<{ n: number }>`select count(*)::int as n from pg_stat_activity
          where datname = current_database() and wait_event_type = 'Lock'`.execute(db);
        return waiting.rows[0]!.n > 0 ? true : undefined;
      }, 'the second transaction waiting for the row');
      await trx.commit().execute();
    } catch (err) {
      await trx.rollback().execute();
      throw err;
    }
    return result;
  }

  it('a flagged case held by a re-evaluation is still claimed for planning once it commits', async () => {
    const claimed = await whileHeld(
      (trx) =>
        trx
          .updateTable('cases')
          .set({ reasons: '[{"ruleId":"r","kind":"sampling","detail":"again"}]' })
          .where('id', '=', 'c1')
          .execute()
          .then(() => undefined),
      () => db.transaction().execute((trx) => claimFlaggedCase(trx, 'c1')),
    );
    expect(claimed, 'still flagged: this planner plans it').to.equal(true);
  });

  it('a case another planner moved to forwarding is not claimed again', async () => {
    const claimed = await whileHeld(
      (trx) =>
        trx
          .updateTable('cases')
          .set({ state: CaseState.forwarding })
          .where('id', '=', 'c1')
          .execute()
          .then(() => undefined),
      () => db.transaction().execute((trx) => claimFlaggedCase(trx, 'c1')),
    );
    expect(claimed).to.equal(false);
  });

  it("a delta waits for the delivery's job and reads the state it committed", async () => {
    await insertDelivery(db, { id: 'd1', caseId: 'c1', destinationId: 'pool', studyInstanceUid: '1.2.1', deidentify: false, now });
    const state = await whileHeld(
      (trx) => updateDelivery(trx, 'd1', { state: DeliveryState.delivered, updated_at: now }),
      () => db.transaction().execute((trx) => lockDelivery(trx, 'd1')),
    );
    expect(state, 'the delta re-opens a delivery its job just closed').to.equal(DeliveryState.delivered);
    expect(await db.transaction().execute((trx) => lockDelivery(trx, 'nope'))).to.equal(undefined);
  });
});
