import { createHmac } from 'node:crypto';
import type { Db } from '../db/database.js';
import { findPseudonym, insertPseudonyms, pseudonymsOfStudy } from './pseudonym.repository.js';

export const PseudonymKind = { uid: 'uid', patientId: 'patient-id', accession: 'accession' } as const;

/**
 * Pseudonyms for one study sent to one destination. They are derived with an
 * HMAC of the original under a secret kept in the database, so the same
 * original always gets the same pseudonym for that destination (a resend is
 * idempotent at the receiver), and every mapping is also stored so a report
 * that comes back under the pseudonyms links to the real study.
 */
export class StudyPseudonyms {
  private readonly known = new Map<string, string>();
  private readonly fresh: { kind: string; original: string; pseudonym: string }[] = [];

  private constructor(
    private readonly secret: string,
    readonly destinationId: string,
    readonly studyInstanceUid: string,
  ) {}

  static async load(db: Db, secret: string, destinationId: string, studyInstanceUid: string): Promise<StudyPseudonyms> {
    const p = new StudyPseudonyms(secret, destinationId, studyInstanceUid);
    for (const r of await pseudonymsOfStudy(db, destinationId, studyInstanceUid)) p.known.set(`${r.kind}|${r.original}`, r.pseudonym);
    return p;
  }

  uid(original: string): string {
    return this.map(PseudonymKind.uid, original, (h) => `2.25.${BigInt(`0x${h.slice(0, 32)}`).toString(10)}`);
  }

  patientId(original: string): string {
    return this.map(PseudonymKind.patientId, original, (h) => `ANON${h.slice(0, 12).toUpperCase()}`);
  }

  patientName(originalPatientId: string): string {
    return `ANON^${this.patientId(originalPatientId)}`;
  }

  accessionNumber(original: string): string {
    return this.map(PseudonymKind.accession, original, (h) => `A${h.slice(0, 15).toUpperCase()}`);
  }

  /** Between 1 and 365 days back, the same for every study of the patient at this destination. */
  dateShiftDays(originalPatientId: string): number {
    const h = this.hmac('date-shift', originalPatientId);
    return -(1 + (parseInt(h.slice(0, 8), 16) % 365));
  }

  /** Mappings made since loading, to store before anything is sent under them. */
  async persist(db: Db, now: string): Promise<number> {
    if (this.fresh.length === 0) return 0;
    const rows = this.fresh.splice(0).map((f) => ({
      destination_id: this.destinationId,
      kind: f.kind,
      original: f.original,
      pseudonym: f.pseudonym,
      study_instance_uid: this.studyInstanceUid,
      created_at: now,
    }));
    await insertPseudonyms(db, rows);
    return rows.length;
  }

  private map(kind: string, original: string, derive: (hex: string) => string): string {
    const key = `${kind}|${original}`;
    let p = this.known.get(key);
    if (p === undefined) {
      p = derive(this.hmac(kind, original));
      this.known.set(key, p);
      this.fresh.push({ kind, original, pseudonym: p });
    }
    return p;
  }

  private hmac(kind: string, original: string): string {
    return createHmac('sha256', this.secret).update(`${this.destinationId}\u0000${kind}\u0000${original}`).digest('hex');
  }
}

/** The real study behind a pseudonymous StudyInstanceUID or accession a destination sent back. */
export async function resolvePseudonym(
  db: Db,
  destinationId: string | undefined,
  kind: string,
  pseudonym: string,
): Promise<{ studyInstanceUid: string; original: string } | undefined> {
  const row = await findPseudonym(db, destinationId, kind, pseudonym);
  return row ? { studyInstanceUid: row.study_instance_uid, original: row.original } : undefined;
}
