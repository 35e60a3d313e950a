import type tls from 'node:tls';
import { api } from 'dicomweb-client';
import XMLHttpRequest from 'xhr2';
import type { GatewayConfig } from '../config/schema.js';
import { DimseClient, AssociationRejected, proposeContexts } from '../dicom/ul/client.js';
import { Status, describeQueryRetrieveStatus, type NaturalDataset } from '../dicom/ul/dimse.js';
import { RejectReason, RejectSource } from '../dicom/ul/pdu.js';
import { SopClass } from '../dicom/uids.js';
import type { Logger } from '../logger.js';
import { clientTlsOptions } from '../tls.js';

type PacsConfig = NonNullable<GatewayConfig['pacs']>;

/** What is asked of the PACS: one patient's studies since a date. */
export interface PriorQuery {
  patientId: string;
  /** Sent as a matching key when known; the answers are checked against it again (relevance.ts). */
  issuerOfPatientId: string | null;
  /** YYYYMMDD: the start of the look-back period. */
  fromDate: string;
}

/** One study as the PACS answered it (study level). */
export interface FoundStudy {
  studyInstanceUid: string;
  patientId: string | null;
  issuerOfPatientId: string | null;
  studyDate: string | null;
  modalities: string[];
  studyDescription: string | null;
  accessionNumber: string | null;
  bodyParts: string[];
  procedureCodes: string[];
  numberOfInstances: number | null;
}

/** A retrieved instance handed to the normal ingest path (the same one C-STORE uses). */
export type InstanceIngest = (part10: Buffer) => Promise<void>;

export interface RetrieveOutcome {
  completed: number;
  failed: number;
  /** Why it failed, when it did (no PHI). */
  error?: string;
}

/**
 * The hospital PACS as the priors service sees it: find a patient's studies, retrieve one. DIMSE retrieves
 * by C-MOVE to our own SCP (the instances arrive through the C-STORE path; `ingest` is not used); DICOMweb
 * retrieves by WADO-RS and hands each instance to `ingest`.
 */
export interface PacsClient {
  findStudies(q: PriorQuery): Promise<FoundStudy[]>;
  retrieveStudy(studyInstanceUid: string, ingest: InstanceIngest): Promise<RetrieveOutcome>;
}

export function createPacsClient(config: PacsConfig, o: { callingAeTitle: string; logger: Logger }): PacsClient {
  return config.type === 'dimse' ? new DimsePacsClient(config, o) : new DicomwebPacsClient(config);
}

const STUDY_KEYS = {
  StudyInstanceUID: '',
  PatientID: '',
  IssuerOfPatientID: '',
  StudyDate: '',
  ModalitiesInStudy: '',
  StudyDescription: '',
  AccessionNumber: '',
  NumberOfStudyRelatedInstances: '',
} as const;

/**
 * C-FIND (Study Root, study level) and C-MOVE on the gateway's own upper layer (dicom/ul), one association
 * per operation. Only a final Success counts: a C-FIND that ends in any other status (cancel 0xFE00, out of
 * resources 0xA7xx, unable to process 0xCxxx, ...) or is cut off after pending answers fails as a whole, so
 * a partial list of priors is never taken for the full one; a C-MOVE fails unless it ends in Success with no
 * failed sub-operation. The messages say which status it was, in words and hex, with the PACS's Error Comment.
 */
export class DimsePacsClient implements PacsClient {
  private readonly timeoutMs: number;
  private readonly peer: string;
  private readonly secure: (() => tls.ConnectionOptions) | undefined;
  constructor(
    private readonly config: Extract<PacsConfig, { type: 'dimse' }>,
    private readonly o: { callingAeTitle: string; logger: Logger },
  ) {
    this.timeoutMs = config.timeoutSeconds * 1000;
    this.peer = `PACS ${config.aeTitle}@${config.host}:${config.port}${config.tls ? ' (TLS)' : ''}`;
    const t = config.tls;
    this.secure = t ? () => clientTlsOptions(t, config.host, config.port) : undefined;
  }

  private get callingAe(): string {
    return this.config.callingAeTitle ?? this.o.callingAeTitle;
  }

  async findStudies(q: PriorQuery): Promise<FoundStudy[]> {
    const keys: NaturalDataset = { ...STUDY_KEYS, PatientID: q.patientId, StudyDate: `${q.fromDate}-` };
    if (q.issuerOfPatientId) keys['IssuerOfPatientID'] = q.issuerOfPatientId;
    // A query still answering after the timeout is cancelled (C-CANCEL): it ends with 0xFE00 and fails.
    return this.session(
      'C-FIND',
      SopClass.studyRootFind,
      async (client, signal) => {
        const r = await client.find(keys, 'STUDY', SopClass.studyRootFind, { signal });
        if (r.status !== Status.success) {
          const partial = r.matches.length ? ` after ${r.matches.length} matches (not used: the list is incomplete)` : '';
          throw new PacsAnswered(`${this.peer} ended the C-FIND with ${describeQueryRetrieveStatus(r.status)}${partial}${comment(r.errorComment)}`);
        }
        const found = r.matches.flatMap((m) => {
          const s = fromNatural(m);
          return s ? [s] : [];
        });
        for (const s of found) if (s.modalities.length === 0) await this.fillFromSeries(client, s, signal);
        return found;
      },
      { deadlineMs: this.timeoutMs },
    );
  }

  /**
   * ModalitiesInStudy is optional for a PACS (DCMTK's dcmqrscp does not keep it): without it the relevance
   * rules could not match on modality, so the study's series are asked for theirs (and their body parts) on
   * the same association. A series query that fails leaves the study as it was: it then says nothing.
   */
  private async fillFromSeries(client: DimseClient, s: FoundStudy, signal: AbortSignal): Promise<void> {
    const r = await client.find(
      { StudyInstanceUID: s.studyInstanceUid, SeriesInstanceUID: '', Modality: '', BodyPartExamined: '' },
      'SERIES',
      SopClass.studyRootFind,
      {
        signal,
      },
    );
    if (r.status !== Status.success) return;
    const series = r.matches.flatMap((m) => fromNatural({ ...m, ModalitiesInStudy: m['Modality'] }) ?? []);
    s.modalities = [...new Set(series.flatMap((x) => x.modalities))];
    if (s.bodyParts.length === 0) s.bodyParts = [...new Set(series.flatMap((x) => x.bodyParts))];
  }

  async retrieveStudy(studyInstanceUid: string): Promise<RetrieveOutcome> {
    const destination = this.config.moveDestination ?? this.o.callingAeTitle;
    let last = { completed: 0, failed: 0 };
    let r;
    try {
      r = await this.session(
        'C-MOVE',
        SopClass.studyRootMove,
        (client, signal) =>
          client.move({ StudyInstanceUID: studyInstanceUid }, destination, 'STUDY', SopClass.studyRootMove, {
            signal,
            onPending: (c) => (last = { completed: c.completed, failed: c.failed }),
          }),
        { progress: () => last.completed },
      );
    } catch (err) {
      return { ...last, error: (err as Error).message };
    }
    if (r.status === Status.success && r.failed === 0) return { completed: r.completed, failed: 0 };
    return {
      completed: r.completed,
      failed: r.failed,
      error: `${this.peer} ended the C-MOVE to ${destination} with ${describeQueryRetrieveStatus(r.status)}, ${r.failed} failed, ${r.warning} with warnings${comment(r.errorComment)}`,
    };
  }

  /**
   * One association for one operation: dial, negotiate `sopClassUid`, run, release. Silence longer than the
   * timeout ends it (the association's idle timer); `deadlineMs` also cancels an operation that keeps
   * answering past it (a C-MOVE has none: a large study keeps answering pending). Errors name the PACS and
   * say how far it got (`progress`).
   */
  private async session<T>(
    op: string,
    sopClassUid: string,
    run: (client: DimseClient, signal: AbortSignal) => Promise<T>,
    o: { deadlineMs?: number; progress?: () => number } = {},
  ): Promise<T> {
    let client: DimseClient;
    try {
      client = await DimseClient.connect({
        host: this.config.host,
        port: this.config.port,
        callingAe: this.callingAe,
        calledAe: this.config.aeTitle,
        contexts: proposeContexts([sopClassUid]),
        timeoutMs: this.timeoutMs,
        peer: this.peer,
        ...(this.secure ? { tls: this.secure } : {}),
      });
    } catch (err) {
      if (err instanceof AssociationRejected) throw new Error(`${this.peer} rejected the association: ${rejectReason(err.rejection)}`);
      throw new Error(`${this.peer}: ${(err as Error).message}`);
    }
    if (!client.contextFor(sopClassUid)) {
      await client.release();
      throw new Error(`${this.peer} does not accept ${op} (${sopClassUid})`);
    }
    const controller = new AbortController();
    const deadline = o.deadlineMs === undefined ? undefined : setTimeout(() => controller.abort(), o.deadlineMs);
    try {
      const result = await run(client, controller.signal);
      await client.release();
      return result;
    } catch (err) {
      if (err instanceof PacsAnswered) {
        // the PACS answered, just not with Success: the association is sound and ends normally
        await client.release();
        throw err;
      }
      client.abort();
      const n = o.progress?.() ?? 0;
      throw new Error(`${op} with ${this.peer} did not finish${n ? ` (${n} sub-operations completed)` : ''}: ${(err as Error).message}`);
    } finally {
      clearTimeout(deadline);
    }
  }
}

const comment = (c: string | undefined): string => (c ? `: ${c}` : '');

/** A final answer other than Success: the operation failed, the association did not. */
class PacsAnswered extends Error {}

/** PS3.8 Table 9-21, the reasons a PACS gives when it does not know us or itself by those AE titles. */
function rejectReason(r: { result: number; source: number; reason: number }): string {
  if (r.source === RejectSource.serviceUser && r.reason === RejectReason.callingAeNotRecognized) return 'calling AE title not recognized';
  if (r.source === RejectSource.serviceUser && r.reason === RejectReason.calledAeNotRecognized) return 'called AE title not recognized';
  return `result ${r.result}, source ${r.source}, reason ${r.reason}`;
}

/** What we call on dicomweb-client (its typings omit `request`). */
interface QidoWadoClient {
  searchForStudies(o: {
    queryParams: Record<string, string>;
    request?: { instance: XMLHttpRequest };
  }): Promise<Record<string, { vr?: string; Value?: unknown[] }>[]>;
  searchForInstances(o: {
    studyInstanceUID: string;
    queryParams?: Record<string, string>;
    request?: { instance: XMLHttpRequest };
  }): Promise<Record<string, { vr?: string; Value?: unknown[] }>[]>;
  retrieveInstance(o: {
    studyInstanceUID: string;
    seriesInstanceUID: string;
    sopInstanceUID: string;
    request?: { instance: XMLHttpRequest };
  }): Promise<ArrayBuffer | ArrayBuffer[]>;
}

/**
 * QIDO-RS + WADO-RS with dicomweb-client (on xhr2: the library needs an XMLHttpRequest in Node). Instances
 * are retrieved one at a time, so a large prior never sits in memory whole.
 */
export class DicomwebPacsClient implements PacsClient {
  private readonly client: QidoWadoClient;
  private readonly timeoutMs: number;

  constructor(config: Extract<PacsConfig, { type: 'dicomweb' }>) {
    this.timeoutMs = config.timeoutSeconds * 1000;
    this.client = new api.DICOMwebClient({
      url: config.url.replace(/\/+$/, ''),
      headers: { ...config.headers },
      verbose: false,
      singlepart: false,
    }) as unknown as QidoWadoClient;
  }

  async findStudies(q: PriorQuery): Promise<FoundStudy[]> {
    const queryParams: Record<string, string> = {
      PatientID: q.patientId,
      StudyDate: `${q.fromDate}-`,
      includefield: '00100021,00080061,00081030,00201208,00081032',
    };
    if (q.issuerOfPatientId) queryParams['IssuerOfPatientID'] = q.issuerOfPatientId;
    const rows = await this.call((instance) => this.client.searchForStudies({ queryParams, request: { instance } }));
    return (Array.isArray(rows) ? rows : []).flatMap((r) => {
      const s = fromNatural(naturalize(r));
      return s ? [s] : [];
    });
  }

  async retrieveStudy(studyInstanceUid: string, ingest: InstanceIngest): Promise<RetrieveOutcome> {
    let completed = 0;
    let failed = 0;
    let error: string | undefined;
    let list: Record<string, { Value?: unknown[] }>[];
    try {
      list = await this.call((instance) => this.client.searchForInstances({ studyInstanceUID: studyInstanceUid, request: { instance } }));
    } catch (err) {
      return { completed: 0, failed: 0, error: `QIDO-RS instances: ${(err as Error).message}` };
    }
    for (const row of Array.isArray(list) ? list : []) {
      const n = naturalize(row);
      const series = str(n['SeriesInstanceUID']);
      const sop = str(n['SOPInstanceUID']);
      if (!series || !sop) continue;
      try {
        const got = await this.call((instance) =>
          this.client.retrieveInstance({ studyInstanceUID: studyInstanceUid, seriesInstanceUID: series, sopInstanceUID: sop, request: { instance } }),
        );
        const parts = Array.isArray(got) ? got : [got];
        for (const p of parts) await ingest(Buffer.from(p));
        completed++;
      } catch (err) {
        failed++;
        error = `WADO-RS: ${(err as Error).message}`;
      }
    }
    return error ? { completed, failed, error } : { completed, failed };
  }

  /** One library call on its own xhr2 instance, bounded by our timer (the library has none). */
  private call<T>(run: (instance: XMLHttpRequest) => Promise<T>): Promise<T> {
    const xhr = new XMLHttpRequest();
    xhr.timeout = this.timeoutMs;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        try {
          xhr.abort();
        } catch {
          /* finished */
        }
        reject(new Error(`no answer within ${this.timeoutMs / 1000}s`));
      }, this.timeoutMs);
      run(xhr).then(
        (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        (err: { status?: number; message?: string }) => {
          clearTimeout(timer);
          reject(new Error(typeof err?.status === 'number' ? `HTTP ${err.status}` : (err?.message ?? 'request failed')));
        },
      );
    });
  }
}

/** DICOM JSON (PS3.18 F.2) to keyword-keyed values, for the few study-level attributes read here. */
const TAGS: Record<string, string> = {
  '0020000D': 'StudyInstanceUID',
  '0020000E': 'SeriesInstanceUID',
  '00080018': 'SOPInstanceUID',
  '00100020': 'PatientID',
  '00100021': 'IssuerOfPatientID',
  '00080020': 'StudyDate',
  '00080061': 'ModalitiesInStudy',
  '00081030': 'StudyDescription',
  '00080050': 'AccessionNumber',
  '00201208': 'NumberOfStudyRelatedInstances',
  '00180015': 'BodyPartExamined',
  '00081032': 'ProcedureCodeSequence',
};

function naturalize(row: Record<string, { Value?: unknown[] }>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [tag, v] of Object.entries(row)) {
    const key = TAGS[tag.toUpperCase()];
    if (!key || !v?.Value) continue;
    out[key] =
      key === 'ProcedureCodeSequence'
        ? v.Value.map((item) => naturalize(item as Record<string, { Value?: unknown[] }>))
        : v.Value.length === 1
          ? v.Value[0]
          : v.Value;
  }
  // code items: CodeValue / CodingSchemeDesignator
  if (row['00080100']?.Value) out['CodeValue'] = row['00080100'].Value[0];
  if (row['00080102']?.Value) out['CodingSchemeDesignator'] = row['00080102'].Value[0];
  return out;
}

function str(v: unknown): string | null {
  if (Array.isArray(v)) v = v[0];
  if (v === undefined || v === null) return null;
  const s = String(v).trim();
  return s === '' ? null : s;
}

function list(v: unknown): string[] {
  const values = Array.isArray(v) ? v : v === undefined || v === null ? [] : String(v).split('\\');
  return [...new Set(values.map((x) => String(x).trim().toUpperCase()).filter(Boolean))];
}

/** A study-level answer (dcmjs naturalized, or naturalized DICOM JSON) as a FoundStudy; undefined without a UID. */
export function fromNatural(e: Record<string, unknown>): FoundStudy | undefined {
  const uid = str(e['StudyInstanceUID']);
  if (!uid) return undefined;
  const codes = (Array.isArray(e['ProcedureCodeSequence']) ? e['ProcedureCodeSequence'] : []) as Record<string, unknown>[];
  const n = Number(str(e['NumberOfStudyRelatedInstances']));
  return {
    studyInstanceUid: uid,
    patientId: str(e['PatientID']),
    issuerOfPatientId: str(e['IssuerOfPatientID']),
    studyDate: str(e['StudyDate']),
    modalities: list(e['ModalitiesInStudy']),
    studyDescription: str(e['StudyDescription']),
    accessionNumber: str(e['AccessionNumber']),
    bodyParts: list(e['BodyPartExamined']),
    procedureCodes: codes.flatMap((c) => {
      const v = str(c['CodeValue']);
      return v ? [`${str(c['CodingSchemeDesignator']) ?? ''}:${v}`] : [];
    }),
    numberOfInstances: Number.isFinite(n) && n > 0 ? n : null,
  };
}
