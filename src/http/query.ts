import { ErrorCode, GatewayError } from '../errors.js';

/** A non-empty string query parameter, or undefined. */
export function queryString(v: unknown): string | undefined {
  return typeof v === 'string' && v.length > 0 ? v : undefined;
}

/** An integer query parameter within bounds; 400 with the parameter's name otherwise. */
export function queryInt(v: unknown, dflt: number, min: number, max: number, name: string): number {
  if (v === undefined) return dflt;
  const n = typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new GatewayError(ErrorCode.invalidInput, `${name} must be an integer from ${min} to ${max}`);
  return n;
}

/** An ISO-8601 date or date-time parameter, normalised to UTC ISO text. */
export function queryTime(v: unknown, name: string): string | undefined {
  if (v === undefined || v === null || v === '') return undefined;
  const t = typeof v === 'string' ? Date.parse(v) : NaN;
  if (Number.isNaN(t)) throw new GatewayError(ErrorCode.invalidInput, `${name} must be an ISO-8601 date or date-time`);
  return new Date(t).toISOString();
}

export function oneOf<T extends string>(v: unknown, allowed: readonly T[], name: string): T | undefined {
  const s = queryString(v);
  if (s === undefined) return undefined;
  if (!(allowed as readonly string[]).includes(s)) throw new GatewayError(ErrorCode.invalidInput, `${name} must be one of ${allowed.join(', ')}`);
  return s as T;
}
