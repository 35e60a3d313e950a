/**
 * Exponential backoff with equal jitter: the delay doubles per attempt up to
 * a cap; half of it is fixed, half random, so many jobs failing together do
 * not all come back at the same moment.
 */
export function backoffMs(attempt: number, baseSeconds: number, maxSeconds: number, random: () => number = Math.random): number {
  const cap = Math.min(maxSeconds, baseSeconds * 2 ** (attempt - 1)) * 1000;
  return Math.round(cap / 2 + (random() * cap) / 2);
}
