import { createHash, timingSafeEqual } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import type { Role, TokenConfig } from '../config/schema.js';
import { ErrorCode, GatewayError } from '../errors.js';

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

/**
 * Bearer tokens from the config. Tokens are compared as SHA-256 digests in
 * constant time, so neither a token's length nor its prefix leaks through timing.
 */
export function createAuthenticator(tokens: readonly TokenConfig[]) {
  const known = tokens.map((t, i) => ({
    digest: createHash('sha256').update(t.token).digest(),
    principal: { role: t.role, readerId: t.readerId, name: t.name ?? `${t.role}-token-${i + 1}` } as Principal,
  }));
  return function authenticate(req: Request, _res: Response, next: NextFunction): void {
    const header = req.get('authorization') ?? '';
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!m?.[1]) return next(new GatewayError(ErrorCode.unauthorized, 'missing bearer token'));
    const digest = createHash('sha256').update(m[1]).digest();
    let found: Principal | undefined;
    for (const k of known) if (timingSafeEqual(k.digest, digest)) found = k.principal;
    if (!found) return next(new GatewayError(ErrorCode.unauthorized, 'invalid token'));
    req.principal = found;
    next();
  };
}

export function requireRole(...roles: Role[]) {
  return function checkRole(req: Request, _res: Response, next: NextFunction): void {
    const p = req.principal;
    if (!p) return next(new GatewayError(ErrorCode.unauthorized, 'missing bearer token'));
    if (!roles.includes(p.role)) return next(new GatewayError(ErrorCode.forbidden, `role ${p.role} may not do this`));
    next();
  };
}
