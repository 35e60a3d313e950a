import { createHash, timingSafeEqual } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import { tokenDigestHex, type Role, type TokenConfig } from '../config/schema.js';
import { ErrorCode, GatewayError } from '../errors.js';
import { FailedLoginLimiter } from './login-limiter.js';

export interface Principal {
  role: Role;
  readerId?: string;
  /** Shown in the audit log instead of the token. */
  name: string;
}

declare module 'express-serve-static-core' {
  interface Request {
    principal?: Principal;
  }
}

export interface AuthFailure {
  /** The peer's address: the actor of the audit entry (never the token). */
  remoteAddress: string;
  method: string;
  /** The first two path segments (`/api/cases`): no identifiers from the rest of the path. */
  route: string;
  reason: string;
  /** Failures of this address in the current window, this one included. */
  failures: number;
}

export interface AuthOptions {
  /** Failed logins per address per minute before it is answered 429 until the minute is over. */
  maxFailedPerMinute?: number;
  /** Called (and awaited) for every 401, and once per window when an address is refused. */
  onFailure?: (f: AuthFailure & { rateLimited: boolean }) => Promise<void> | void;
  /**
   * Called (and awaited) for a successful authentication, at most once per
   * token and address per `loginAuditIntervalMs` (a console session calls the
   * API constantly: the audit trail wants the sign-in, not every call).
   */
  onSuccess?: (s: AuthSuccess) => Promise<void> | void;
  /** Default 15 minutes. */
  loginAuditIntervalMs?: number;
  now?: () => number;
}

export interface AuthSuccess {
  principal: Principal;
  remoteAddress: string;
  method: string;
  route: string;
}

/** Remembers when each (token, address) was last audited as a login. */
class LoginThrottle {
  private readonly last = new Map<string, number>();
  constructor(
    private readonly intervalMs: number,
    private readonly now: () => number,
  ) {}

  /** True when this login is to be audited now (and remembers it). */
  due(name: string, address: string): boolean {
    const t = this.now();
    const key = `${name}\u0000${address}`;
    const prev = this.last.get(key);
    if (prev !== undefined && t - prev < this.intervalMs) return false;
    // Bounded: entries past the interval are forgotten when the map grows.
    if (this.last.size >= 10_000) for (const [k, v] of this.last) if (t - v >= this.intervalMs) this.last.delete(k);
    this.last.set(key, t);
    return true;
  }
}

/**
 * Bearer tokens from the config. Tokens are compared as SHA-256 digests in
 * constant time, so neither a token's length nor its prefix leaks through timing;
 * the config may hold the digest only (`tokenSha256`).
 */
export function createAuthenticator(tokens: readonly TokenConfig[], options: AuthOptions = {}) {
  const known = tokens.map((t, i) => ({
    digest: Buffer.from(tokenDigestHex(t), 'hex'),
    principal: { role: t.role, readerId: t.readerId, name: t.name ?? `${t.role}-token-${i + 1}` } as Principal,
  }));
  const limiter = new FailedLoginLimiter(options.maxFailedPerMinute ?? 20, 60_000, options.now);
  const logins = new LoginThrottle(options.loginAuditIntervalMs ?? 15 * 60_000, options.now ?? Date.now);
  const report = async (req: Request, f: Omit<AuthFailure, 'method' | 'route'>, rateLimited: boolean) => {
    if (!options.onFailure) return;
    await options.onFailure({ ...f, method: req.method, route: routeOf(req), rateLimited });
  };
  return async function authenticate(req: Request, res: Response, next: NextFunction): Promise<void> {
    const remoteAddress = addressOf(req);
    const wait = limiter.retryAfterSeconds(remoteAddress);
    if (wait > 0) {
      try {
        if (limiter.firstRefusal(remoteAddress)) await report(req, { remoteAddress, reason: 'too many failed logins', failures: 0 }, true);
      } catch (err) {
        return next(err);
      }
      res.set('Retry-After', String(wait));
      return next(
        new GatewayError(ErrorCode.rateLimited, `too many failed logins from this address; retry in ${wait} s`, { details: { retryAfterSeconds: wait } }),
      );
    }
    const header = req.get('authorization') ?? '';
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
    let found: Principal | undefined;
    if (m?.[1]) {
      const digest = createHash('sha256').update(m[1]).digest();
      for (const k of known) if (timingSafeEqual(k.digest, digest)) found = k.principal;
    }
    if (!found) {
      const reason = m?.[1] ? 'invalid token' : 'missing bearer token';
      const failures = limiter.recordFailure(remoteAddress);
      try {
        await report(req, { remoteAddress, reason, failures }, false);
      } catch (err) {
        return next(err);
      }
      return next(new GatewayError(ErrorCode.unauthorized, reason));
    }
    req.principal = found;
    if (options.onSuccess && logins.due(found.name, remoteAddress)) {
      try {
        await options.onSuccess({ principal: found, remoteAddress, method: req.method, route: routeOf(req) });
      } catch (err) {
        return next(err);
      }
    }
    next();
  };
}

function addressOf(req: Request): string {
  const a = req.socket.remoteAddress ?? 'unknown';
  return a.startsWith('::ffff:') ? a.slice('::ffff:'.length) : a;
}

function routeOf(req: Request): string {
  const path = (req.originalUrl.split('?')[0] ?? '').split('/').slice(0, 3).join('/');
  return path.slice(0, 100) || '/';
}

export function requireRole(...roles: Role[]) {
  return function checkRole(req: Request, _res: Response, next: NextFunction): void {
    const p = req.principal;
    if (!p) return next(new GatewayError(ErrorCode.unauthorized, 'missing bearer token'));
    if (!roles.includes(p.role)) return next(new GatewayError(ErrorCode.forbidden, `role ${p.role} may not do this`));
    next();
  };
}
