import { randomBytes } from 'node:crypto';

/**
 * Text ids that sort by creation time (base-36 milliseconds, then a counter
 * within the millisecond, then a random origin per source against other
 * processes). Rows
 * ordered by id are in arrival order, without SERIAL/AUTOINCREMENT, which
 * differ between SQLite and PostgreSQL. One source per owner, never shared
 * module state.
 */
export function createIdSource(): () => string {
  // Random once per source, not per id: randomBytes per call was ~3% of a message's CPU.
  const origin = randomBytes(4).toString('hex');
  let last = 0;
  let seq = 0;
  return () => {
    let now = Date.now();
    // The wall clock may step back (NTP); ids must not.
    if (now <= last) {
      now = last;
      seq++;
    } else {
      last = now;
      seq = 0;
    }
    return `${now.toString(36).padStart(9, '0')}${seq.toString(36).padStart(4, '0')}${origin}`;
  };
}
