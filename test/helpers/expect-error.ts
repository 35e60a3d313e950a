import { expect } from 'chai';
import { GatewayError } from '../../src/errors.js';

/** Runs `fn`, which must throw a GatewayError, and returns it for assertions on its code and message. */
export function thrownGatewayError(fn: () => unknown): GatewayError {
  try {
    fn();
  } catch (err) {
    expect(err).to.be.instanceOf(GatewayError);
    return err as GatewayError;
  }
  throw new Error('expected a GatewayError');
}
