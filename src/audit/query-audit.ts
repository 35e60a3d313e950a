import type { Db } from '../db/database.js';
import { recordAudit } from './audit.repository.js';

export interface StudyQuery {
  /** The token's name. */
  actor: string;
  remoteAddress: string;
  /** Which interface was searched. */
  via: 'qido-rs' | 'api';
  /** Study, series or instance level. */
  level: string;
  /**
   * The matching keys as sent (patient id, name, accession...): PHI, so they
   * go to the audit trail and ATNA only, never to the info log.
   */
  keys: Record<string, unknown>;
  results: number;
}

/**
 * `study.query` (ATNA Query, 110112): one audit event per search of the
 * studies, written before the answer goes out. A failed write fails the
 * search: a query of patient data that cannot be audited is not answered.
 */
export function studyQueryAuditor(db: Db, newId: () => string, clock: () => Date = () => new Date()) {
  return async (q: StudyQuery): Promise<void> => {
    const keys = Object.fromEntries(Object.entries(q.keys).filter(([, v]) => v !== undefined && !(Array.isArray(v) && v.length === 0)));
    await recordAudit(db, newId(), clock().toISOString(), {
      actor: q.actor,
      action: 'study.query',
      entityType: 'query',
      details: { via: q.via, level: q.level, keys, results: q.results, remoteAddress: q.remoteAddress },
    });
  };
}

export type StudyQueryAuditor = ReturnType<typeof studyQueryAuditor>;

/** The peer's address as the audit records it (IPv4-mapped IPv6 written as IPv4). */
export function remoteAddressOf(req: { socket: { remoteAddress?: string | undefined } }): string {
  return (req.socket.remoteAddress ?? 'unknown').replace(/^::ffff:/, '');
}
