/**
 * One error type for the whole gateway. Protocol adapters map its code once,
 * here, to an HTTP status, a DIMSE status and an HL7 acknowledgement code, so a
 * domain decision ("the disk is full") reads the same on every socket.
 */
export const ErrorCode = {
  invalidInput: 'invalid-input',
  unreadableData: 'unreadable-data',
  unsupported: 'unsupported',
  unauthorized: 'unauthorized',
  forbidden: 'forbidden',
  notFound: 'not-found',
  conflict: 'conflict',
  outOfResources: 'out-of-resources',
  transient: 'transient',
  /** Too many attempts from one peer (failed logins): answered without looking at the request. */
  rateLimited: 'rate-limited',
  internal: 'internal',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export class GatewayError extends Error {
  readonly code: ErrorCode;
  readonly details: unknown;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; details?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'GatewayError';
    this.code = code;
    this.details = options?.details;
  }
}

/** Anything thrown that is not ours is an internal error: never leak its message to a peer as if it were a verdict. */
export function toGatewayError(err: unknown): GatewayError {
  if (err instanceof GatewayError) return err;
  const e = err as NodeJS.ErrnoException | undefined;
  if (e && (e.code === 'ENOSPC' || e.code === 'EDQUOT' || e.code === 'EMFILE' || e.code === 'ENFILE')) {
    return new GatewayError(ErrorCode.outOfResources, `storage unavailable (${e.code})`, { cause: err });
  }
  if (e && (e.code === 'SQLITE_BUSY' || e.code === 'SQLITE_LOCKED' || e.code === 'SQLITE_FULL' || e.code === 'SQLITE_IOERR')) {
    return new GatewayError(e.code === 'SQLITE_FULL' ? ErrorCode.outOfResources : ErrorCode.transient, `database unavailable (${e.code})`, { cause: err });
  }
  // PostgreSQL SQLSTATEs that a retry can cure: lock wait timed out, serialization/deadlock, connection lost, server shutting down.
  if (e && typeof e.code === 'string' && /^(55P03|40001|40P01|57P0[1-3]|08\d{3}|53300|53100)$/.test(e.code)) {
    return new GatewayError(e.code === '53100' ? ErrorCode.outOfResources : ErrorCode.transient, `database unavailable (${e.code})`, { cause: err });
  }
  return new GatewayError(ErrorCode.internal, 'internal error', { cause: err });
}

const httpStatus: Record<ErrorCode, number> = {
  'invalid-input': 400,
  'unreadable-data': 400,
  unsupported: 415,
  unauthorized: 401,
  forbidden: 403,
  'not-found': 404,
  conflict: 409,
  'out-of-resources': 507,
  transient: 503,
  'rate-limited': 429,
  internal: 500,
};

/** DIMSE C-STORE statuses (PS3.4 B.2.3 and PS3.7 C): A7xx refused out of resources, Cxxx cannot understand. */
const dimseStatus: Record<ErrorCode, number> = {
  'invalid-input': 0xc000,
  'unreadable-data': 0xc000,
  unsupported: 0xa900,
  unauthorized: 0x0124,
  forbidden: 0x0124,
  'not-found': 0xc000,
  conflict: 0xc000,
  'out-of-resources': 0xa700,
  transient: 0xa700,
  'rate-limited': 0xa700,
  internal: 0xc001,
};

/** HL7 MSA-1: AE asks the sender to retry, AR tells it not to. */
const hl7AckCode: Record<ErrorCode, 'AE' | 'AR'> = {
  'invalid-input': 'AR',
  'unreadable-data': 'AR',
  unsupported: 'AR',
  unauthorized: 'AR',
  forbidden: 'AR',
  'not-found': 'AR',
  conflict: 'AR',
  'out-of-resources': 'AE',
  transient: 'AE',
  'rate-limited': 'AE',
  internal: 'AE',
};

export const httpStatusFor = (e: GatewayError): number => httpStatus[e.code];
export const dimseStatusFor = (e: GatewayError): number => dimseStatus[e.code];
export const hl7AckCodeFor = (e: GatewayError): 'AE' | 'AR' => hl7AckCode[e.code];
