import { expect } from 'chai';
import type { Db } from '../../src/db/database.js';
import { studiesReceivedPage } from '../../src/rules/evaluation-input.repository.js';
import { insertInstance } from '../../src/studies/study.repository.js';
import { openTempDatabase, testPostgresUrl } from '../helpers/tmp.js';

// The dry run walks every stored study of a period a page at a time (rules/dry-run.ts): each exactly once,
// oldest first, also when several were first received at the same instant (a page boundary among them).
describe(`evaluation inputs: the dry run's pages of received studies (${testPostgresUrl ? 'PostgreSQL' : 'SQLite'})`, () => {
  let t: Awaited<ReturnType<typeof openTempDatabase>>;
  let db: Db;

  beforeEach(async () => {
    t = await openTempDatabase();
    db = t.opened.db;
  });
  afterEach(async () => t.close());

  async function study(uid: string, receivedAt: string): Promise<void> {
    const header = {
      sopClassUid: '1.2.840.10008.5.1.4.1.1.2',
      sopInstanceUid: `${uid}.1.1`,
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
      instanceNumber: 1,
    };
    await insertInstance(db, { ...header, filePath: `${uid}.dcm`, sizeBytes: 10, sha256: 'ab', callingAe: null }, receivedAt);
  }

  async function walk(o: { from?: string; to?: string }, limit: number): Promise<string[][]> {
    const pages: string[][] = [];
    let after: { at: string; uid: string } | undefined;
    for (;;) {
      const page = await studiesReceivedPage(db, { ...o, after }, limit);
      if (page.length === 0) return pages;
      pages.push(page.map((s) => s.study_instance_uid));
      const last = page[page.length - 1]!;
      after = { at: last.first_received_at, uid: last.study_instance_uid };
    }
  }

  it('pages oldest first, ties by UID, each study once across page boundaries; from is inclusive, to exclusive', async () => {
    const t1 = '2026-03-01T10:00:00.000Z';
    const t2 = '2026-03-01T11:00:00.000Z';
    const t3 = '2026-03-01T12:00:00.000Z';
    await study('1.2.9', t1);
    await study('1.2.5', t2);
    await study('1.2.7', t2);
    await study('1.2.6', t2);
    await study('1.2.1', t3);
    expect(await walk({}, 2)).to.deep.equal([['1.2.9', '1.2.5'], ['1.2.6', '1.2.7'], ['1.2.1']]);
    expect((await walk({}, 10)).flat()).to.deep.equal(['1.2.9', '1.2.5', '1.2.6', '1.2.7', '1.2.1']);
    expect((await walk({ from: t2 }, 2)).flat()).to.deep.equal(['1.2.5', '1.2.6', '1.2.7', '1.2.1']);
    expect((await walk({ from: t1, to: t3 }, 1)).flat()).to.deep.equal(['1.2.9', '1.2.5', '1.2.6', '1.2.7']);
  });
});
