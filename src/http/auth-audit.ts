import { recordAudit } from '../audit/audit.repository.js';
import type { Db } from '../db/database.js';
import type { Logger } from '../logger.js';
import type { AuthFailure } from './auth.js';

/**
 * Audit entries for failed logins: one per 401 (the limiter caps them per
 * address and minute) and one when an address starts being refused. The
 * actor is the remote address; the token sent is never recorded.
 */
export function failedLoginAuditor(db: Db, newId: () => string, logger: Logger) {
  const log = logger.child({ component: 'auth' });
  const write = async (f: AuthFailure & { rateLimited: boolean }): Promise<void> => {
    const at = new Date().toISOString();
    if (f.rateLimited) {
      log.warn('failed logins rate-limited', { remoteAddress: f.remoteAddress });
      await recordAudit(db, newId(), at, { actor: f.remoteAddress, action: 'auth.rate-limited', entityType: 'auth', details: { method: f.method, route: f.route } });
      return;
    }
    await recordAudit(db, newId(), at, {
      actor: f.remoteAddress,
      action: 'auth.failed',
      entityType: 'auth',
      details: { reason: f.reason, method: f.method, route: f.route, failuresThisMinute: f.failures },
    });
  };
  // A failed audit write must not turn a 401 into a 500: the answer is the same either way.
  return (f: AuthFailure & { rateLimited: boolean }): Promise<void> =>
    write(f).catch((err: unknown) => {
      log.error('could not audit a failed login', { error: (err as Error).message });
    });
}
