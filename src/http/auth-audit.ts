import { recordAudit } from '../audit/audit.repository.js';
import type { Db } from '../db/database.js';
import type { Logger } from '../logger.js';
import type { AuthFailure, AuthSuccess } from './auth.js';

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
      await recordAudit(db, newId(), at, {
        actor: f.remoteAddress,
        action: 'auth.rate-limited',
        entityType: 'auth',
        details: { method: f.method, route: f.route },
      });
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

/**
 * `auth.login` (ATNA User Authentication, Login, success): the token's name is
 * the actor, its address in the details; throttled by the authenticator to
 * once per token and address per interval. A failed write is logged and the
 * request goes on (refusing a valid token because the audit table is busy
 * would lock users out).
 */
export function loginAuditor(db: Db, newId: () => string, logger: Logger) {
  const log = logger.child({ component: 'auth' });
  return async (s: AuthSuccess): Promise<void> => {
    try {
      await recordAudit(db, newId(), new Date().toISOString(), {
        actor: s.principal.name,
        action: 'auth.login',
        entityType: 'auth',
        details: { remoteAddress: s.remoteAddress, role: s.principal.role, method: s.method, route: s.route },
      });
    } catch (err) {
      log.error('could not audit a login', { error: (err as Error).message });
    }
  };
}
