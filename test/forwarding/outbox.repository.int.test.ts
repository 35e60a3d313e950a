import { expect } from 'chai';
import type { RootOperationNode } from 'kysely';
import type { Db } from '../../src/db/database.js';
import { addMissingInstances, insertDelivery } from '../../src/forwarding/outbox.repository.js';
import { insertInstance } from '../../src/studies/study.repository.js';
import { openTempDatabase, testPostgresUrl } from '../helpers/tmp.js';

describe(`outbox repository (${testPostgresUrl ? 'PostgreSQL' : 'SQLite'})`, () => {
  let t: Awaited<ReturnType<typeof openTempDatabase>>;
  let db: Db;
  const now = '2026-03-01T10:00:00.000Z';

  beforeEach(async () => {
    t = await openTempDatabase();
    db = t.opened.db;
  });
  afterEach(async () => t.close());

  async function study(uid: string, n: number): Promise<void> {
    for (let i = 1; i <= n; i++) {
      const header = {
        sopClassUid: '1.2.840.10008.5.1.4.1.1.2',
        sopInstanceUid: `${uid}.1.${i}`,
        transferSyntaxUid: '1.2.840.10008.1.2.1',
        studyInstanceUid: uid,
        seriesInstanceUid: `${uid}.1`,
        accessionNumber: null,
        patientId: null,
        modality: 'CT',
        studyDescription: null,
        seriesDescription: null,
        bodyPartExamined: null,
        studyDate: null,
        referringPhysicianName: null,
        seriesNumber: 1,
        instanceNumber: i,
      };
      await insertInstance(db, { ...header, filePath: `x/${i}.dcm`, sizeBytes: 10, sha256: 'ab', callingAe: null }, now);
    }
  }

  // The delivery id used to be inlined as a literal: one SQL text per delivery, each prepared and cached as its
  // own statement (database.ts), which grew the gateway's native memory for as long as deliveries were made.
  it('plans a delivery with the same SQL text whatever its id, and lists each instance under its own delivery', async () => {
    await study('1.2.3.1', 2);
    await study('1.2.3.2', 3);
    const seen: { node: RootOperationNode; queryId: Parameters<ReturnType<Db['getExecutor']>['compileQuery']>[1] }[] = [];
    const spy = db.withPlugin({
      transformQuery: (args) => {
        seen.push({ node: args.node, queryId: args.queryId });
        return args.node;
      },
      transformResult: (args) => Promise.resolve(args.result),
    });
    await insertDelivery(db, { id: 'd-one', caseId: 'c1', destinationId: 'pool', studyInstanceUid: '1.2.3.1', deidentify: false, now });
    await insertDelivery(db, { id: 'd-two', caseId: 'c2', destinationId: 'pool', studyInstanceUid: '1.2.3.2', deidentify: false, now });
    const count = seen.length;
    expect(await addMissingInstances(spy, 'd-one', '1.2.3.1')).to.equal(0); // insertDelivery planned them already
    await db.deleteFrom('delivery_instances').execute();
    expect(await addMissingInstances(spy, 'd-one', '1.2.3.1')).to.equal(2);
    expect(await addMissingInstances(spy, 'd-two', '1.2.3.2')).to.equal(3);
    const texts = seen
      .slice(count)
      .map((q) => db.getExecutor().compileQuery(q.node, q.queryId).sql)
      .filter((s) => s.startsWith('insert into "delivery_instances"'));
    expect(texts).to.have.length(3);
    expect(new Set(texts).size, 'one SQL text').to.equal(1);
    expect(texts[0]).to.not.include('d-one');

    const rows = await db.selectFrom('delivery_instances').select(['delivery_id', 'sop_instance_uid', 'state']).orderBy('sop_instance_uid').execute();
    expect(rows).to.deep.equal([
      { delivery_id: 'd-one', sop_instance_uid: '1.2.3.1.1.1', state: 'pending' },
      { delivery_id: 'd-one', sop_instance_uid: '1.2.3.1.1.2', state: 'pending' },
      { delivery_id: 'd-two', sop_instance_uid: '1.2.3.2.1.1', state: 'pending' },
      { delivery_id: 'd-two', sop_instance_uid: '1.2.3.2.1.2', state: 'pending' },
      { delivery_id: 'd-two', sop_instance_uid: '1.2.3.2.1.3', state: 'pending' },
    ]);
  });
});
