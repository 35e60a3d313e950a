import { expect } from 'chai';
import { FailedLoginLimiter } from '../../src/http/login-limiter.js';

describe('failed-login limiter', () => {
  it('refuses an address after max failures until its minute is over, counting each address alone', () => {
    let now = 1_000_000;
    const l = new FailedLoginLimiter(3, 60_000, () => now);
    for (let i = 1; i <= 3; i++) {
      expect(l.retryAfterSeconds('10.0.0.1')).to.equal(0);
      expect(l.recordFailure('10.0.0.1')).to.equal(i);
    }
    expect(l.retryAfterSeconds('10.0.0.1')).to.equal(60);
    expect(l.retryAfterSeconds('10.0.0.2')).to.equal(0);
    now += 45_500;
    expect(l.retryAfterSeconds('10.0.0.1')).to.equal(15);
    expect(l.firstRefusal('10.0.0.1')).to.equal(true);
    expect(l.firstRefusal('10.0.0.1')).to.equal(false);
    now += 14_500;
    expect(l.retryAfterSeconds('10.0.0.1')).to.equal(0);
    // A new window starts from nothing, and reports its first refusal again.
    expect(l.recordFailure('10.0.0.1')).to.equal(1);
  });

  it('stays bounded when many addresses fail', () => {
    let now = 0;
    const l = new FailedLoginLimiter(5, 60_000, () => now, 100);
    for (let i = 0; i < 1000; i++) {
      now += 1;
      l.recordFailure(`10.0.${i >> 8}.${i & 255}`);
    }
    expect(l.tracked).to.be.at.most(100);
  });
});
