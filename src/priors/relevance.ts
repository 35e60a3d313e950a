import type { FoundStudy } from './pacs.client.js';

/** The case's study, as relevance needs it. */
export interface CurrentStudy {
  studyInstanceUid: string;
  patientId: string;
  issuerOfPatientId: string | null;
  studyDate: string | null;
  modalities: readonly string[];
  bodyParts: readonly string[];
  procedureCodes: readonly string[];
}

export interface PriorsPolicy {
  maxStudies: number;
  lookbackDays: number;
  sameModality: boolean;
}

export interface Rejected {
  studyInstanceUid: string;
  reason:
    | 'current-study'
    | 'other-patient'
    | 'other-issuer'
    | 'no-date'
    | 'too-old'
    | 'not-earlier'
    | 'other-modality'
    | 'other-body-part'
    | 'other-procedure'
    | 'over-limit';
}

/** Modalities that say nothing about the anatomy imaged: they neither make nor break a match. */
const NON_IMAGING = new Set(['SR', 'PR', 'KO', 'DOC', 'REG', 'SEG', 'RWV', 'PLAN', 'OT']);

/** The first day of the look-back period, YYYYMMDD (UTC). */
export function lookbackStart(today: Date, lookbackDays: number): string {
  return new Date(today.getTime() - lookbackDays * 86_400_000).toISOString().slice(0, 10).replaceAll('-', '');
}

/**
 * Which of the studies the PACS answered go with the case, most recent first, at most `maxStudies`. Never
 * the current study, never another patient: identity is (id, issuer), and answers whose issuer differs from
 * the case's, when both have one, are another patient's. A study without a date cannot be placed in the
 * look-back period and is left out. `sameModality` asks for a shared imaging modality; body part and
 * procedure code must match where both sides have one.
 */
export function selectRelevantPriors(
  current: CurrentStudy,
  found: readonly FoundStudy[],
  policy: PriorsPolicy,
  today: Date,
): { selected: FoundStudy[]; rejected: Rejected[] } {
  const rejected: Rejected[] = [];
  const from = lookbackStart(today, policy.lookbackDays);
  const imaging = (m: readonly string[]) => m.map((x) => x.toUpperCase()).filter((x) => !NON_IMAGING.has(x));
  const currentModalities = new Set(imaging(current.modalities));
  const currentBody = new Set(current.bodyParts.map((b) => b.toUpperCase()));
  const currentCodes = new Set(current.procedureCodes);
  const seen = new Set<string>();
  const candidates: FoundStudy[] = [];
  for (const s of found) {
    const reject = (reason: Rejected['reason']) => rejected.push({ studyInstanceUid: s.studyInstanceUid, reason });
    if (seen.has(s.studyInstanceUid)) continue;
    seen.add(s.studyInstanceUid);
    if (s.studyInstanceUid === current.studyInstanceUid) reject('current-study');
    else if (s.patientId !== current.patientId) reject('other-patient');
    else if (current.issuerOfPatientId && s.issuerOfPatientId && current.issuerOfPatientId !== s.issuerOfPatientId) reject('other-issuer');
    else if (!s.studyDate || !/^\d{8}$/.test(s.studyDate)) reject('no-date');
    else if (s.studyDate < from) reject('too-old');
    else if (current.studyDate && s.studyDate > current.studyDate) reject('not-earlier');
    else if (policy.sameModality && currentModalities.size > 0 && !imaging(s.modalities).some((m) => currentModalities.has(m))) reject('other-modality');
    else if (currentBody.size > 0 && s.bodyParts.length > 0 && !s.bodyParts.some((b) => currentBody.has(b.toUpperCase()))) reject('other-body-part');
    else if (currentCodes.size > 0 && s.procedureCodes.length > 0 && !s.procedureCodes.some((c) => currentCodes.has(c))) reject('other-procedure');
    else candidates.push(s);
  }
  candidates.sort((a, b) => (b.studyDate ?? '').localeCompare(a.studyDate ?? '') || a.studyInstanceUid.localeCompare(b.studyInstanceUid));
  const selected = candidates.slice(0, policy.maxStudies);
  for (const s of candidates.slice(policy.maxStudies)) rejected.push({ studyInstanceUid: s.studyInstanceUid, reason: 'over-limit' });
  return { selected, rejected };
}
