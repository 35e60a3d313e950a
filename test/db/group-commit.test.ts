import { expect } from 'chai';
import { GroupCommitQueue } from '../../src/db/group-commit.js';

const turn = () => new Promise<void>((r) => setImmediate(r));
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

describe('GroupCommitQueue', () => {
  function recording(maxBatch = 64, windowMs = 5) {
    const batches: number[][] = [];
    const q = new GroupCommitQueue<number, string>(
      async (batch) => {
        batches.push(batch);
        return batch.map((n) => `done ${n}`);
      },
      maxBatch,
      windowMs,
    );
    return { q, batches };
  }

  it('a lone sender is committed on the next turn, without waiting for the window', async () => {
    const { q, batches } = recording(64, 10_000);
    const t0 = performance.now();
    expect(await q.submit(1)).to.equal('done 1');
    expect(await q.submit(2)).to.equal('done 2');
    expect(performance.now() - t0).to.be.lessThan(1000);
    expect(batches).to.deep.equal([[1], [2]]);
  });

  it('items submitted in the same turn share one batch', async () => {
    const { q, batches } = recording();
    const out = await Promise.all([q.submit(1), q.submit(2), q.submit(3)]);
    expect(out).to.deep.equal(['done 1', 'done 2', 'done 3']);
    expect(batches).to.deep.equal([[1, 2, 3]]);
  });

  it('waits (within the window) for as many items as the last batch held, then commits them together', async () => {
    const { q, batches } = recording(64, 200);
    await Promise.all([q.submit(1), q.submit(2), q.submit(3)]);
    // The three senders come back one at a time, a little apart.
    const a = q.submit(4);
    await sleep(5);
    const b = q.submit(5);
    await turn();
    const c = q.submit(6);
    expect(await Promise.all([a, b, c])).to.deep.equal(['done 4', 'done 5', 'done 6']);
    expect(batches).to.deep.equal([
      [1, 2, 3],
      [4, 5, 6],
    ]);
  });

  it('when fewer come back, commits what it has after the window and expects that many next time', async () => {
    const { q, batches } = recording(64, 20);
    await Promise.all([q.submit(1), q.submit(2), q.submit(3)]);
    const t0 = performance.now();
    expect(await q.submit(4)).to.equal('done 4');
    expect(performance.now() - t0).to.be.at.least(15);
    const t1 = performance.now();
    expect(await q.submit(5)).to.equal('done 5');
    expect(performance.now() - t1, 'no second wait').to.be.lessThan(15);
    expect(batches).to.deep.equal([[1, 2, 3], [4], [5]]);
  });

  it('never puts more than maxBatch in one batch, and commits the rest without waiting', async () => {
    const { q, batches } = recording(2, 10_000);
    const t0 = performance.now();
    const out = await Promise.all([1, 2, 3, 4, 5].map((n) => q.submit(n)));
    expect(out).to.have.length(5);
    expect(batches).to.deep.equal([[1, 2], [3, 4], [5]]);
    expect(performance.now() - t0).to.be.lessThan(1000);
  });

  it('a failed batch rejects its items only; the queue keeps working', async () => {
    let fail = true;
    const q = new GroupCommitQueue<number, number>(async (batch) => {
      if (fail) throw new Error('disk full');
      return batch;
    });
    const results = await Promise.allSettled([q.submit(1), q.submit(2)]);
    expect(results.map((r) => r.status)).to.deep.equal(['rejected', 'rejected']);
    fail = false;
    expect(await Promise.all([q.submit(3), q.submit(4)])).to.deep.equal([3, 4]);
    expect(q.stats).to.deep.include({ batches: 2, items: 4, largestBatch: 2 });
  });

  it('windowMs 0 is the plain next-turn batching', async () => {
    const { q, batches } = recording(64, 0);
    await Promise.all([q.submit(1), q.submit(2)]);
    expect(await q.submit(3)).to.equal('done 3');
    expect(batches).to.deep.equal([[1, 2], [3]]);
  });
});
