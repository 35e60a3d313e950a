import { expect } from 'chai';
import { PollLoop } from '../src/poll-loop.js';

describe('PollLoop', () => {
  it('runs at start, again after the interval, at once when kicked, never two passes at a time', async () => {
    let running = 0;
    let maxRunning = 0;
    const starts: number[] = [];
    let release: (() => void) | undefined;
    const loop = new PollLoop(
      async () => {
        running++;
        maxRunning = Math.max(maxRunning, running);
        starts.push(Date.now());
        if (starts.length === 1) await new Promise<void>((r) => (release = r));
        running--;
      },
      60_000,
      () => undefined,
    );
    loop.start();
    await new Promise((r) => setTimeout(r, 20));
    expect(starts).to.have.length(1);
    loop.kick();
    loop.kick();
    release!();
    await new Promise((r) => setTimeout(r, 20));
    // The kicks during the first pass asked for one more pass right after it, not two and not in parallel.
    expect(starts).to.have.length(2);
    expect(maxRunning).to.equal(1);
    await loop.stop();
    loop.kick();
    await new Promise((r) => setTimeout(r, 20));
    expect(starts).to.have.length(2);
  });

  it('reports a failed pass and keeps going', async () => {
    const errors: unknown[] = [];
    let n = 0;
    const loop = new PollLoop(
      async () => {
        n++;
        if (n === 1) throw new Error('boom');
      },
      10,
      (e) => errors.push(e),
    );
    loop.start();
    await new Promise((r) => setTimeout(r, 60));
    await loop.stop();
    expect((errors[0] as Error).message).to.equal('boom');
    expect(n).to.be.greaterThan(1);
  });
});
