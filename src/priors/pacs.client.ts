import dimse from 'dcmjs-dimse';
import { api } from 'dicomweb-client';
import XMLHttpRequest from 'xhr2';
import type { GatewayConfig } from '../config/schema.js';
import type { Logger } from '../logger.js';

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
 * C-FIND (Study Root, study level) and C-MOVE with dcmjs-dimse's Client, unmodified. The gateway's own
 * upper layer (dicom/ul) will replace it; until then this is the one place that uses the library's SCU.
 */
export class DimsePacsClient implements PacsClient {
  private readonly timeoutMs: number;
  constructor(
    private readonly config: Extract<PacsConfig, { type: 'dimse' }>,
    private readonly o: { callingAeTitle: string; logger: Logger },
  ) {
    this.timeoutMs = config.timeoutSeconds * 1000;
  }

  private get callingAe(): string {
    return this.config.callingAeTitle ?? this.o.callingAeTitle;
  }

  findStudies(q: PriorQuery): Promise<FoundStudy[]> {
    const keys: Record<string, unknown> = { ...STUDY_KEYS, PatientID: q.patientId, StudyDate: `${q.fromDate}-` };
    if (q.issuerOfPatientId) keys['IssuerOfPatientID'] = q.issuerOfPatientId;
    const request = dimse.requests.CFindRequest.createStudyFindRequest(keys);
    const found: FoundStudy[] = [];
    let failure: string | undefined;
    request.on('response', (res: InstanceType<typeof dimse.responses.CFindResponse>) => {
      const status = res.getStatus();
      if ((status === dimse.constants.Status.Pending || status === 0xff01) && res.hasDataset()) {
        const s = fromNatural(res.getDataset()!.getElements());
        if (s) found.push(s);
      } else if (status !== dimse.constants.Status.Success && status !== dimse.constants.Status.Pending && status !== 0xff01) {
        failure = `C-FIND status 0x${status.toString(16).padStart(4, '0')}`;
      }
    });
    return this.run(request).then(() => {
      if (failure) throw new Error(failure);
      return found;
    });
  }

  async retrieveStudy(studyInstanceUid: string): Promise<RetrieveOutcome> {
    const destination = this.config.moveDestination ?? this.o.callingAeTitle;
    const request = dimse.requests.CMoveRequest.createStudyMoveRequest(destination, studyInstanceUid);
    let last: { status: number; completed: number; failed: number } | undefined;
    request.on('response', (res: InstanceType<typeof dimse.responses.CMoveResponse>) => {
      last = { status: res.getStatus(), completed: res.getCompleted(), failed: res.getFailures() };
    });
    try {
      await this.run(request);
    } catch (err) {
      return { completed: last?.completed ?? 0, failed: last?.failed ?? 0, error: (err as Error).message };
    }
    if (!last) return { completed: 0, failed: 0, error: 'no C-MOVE response' };
    const ok = last.status === dimse.constants.Status.Success || (last.status & 0xf000) === 0xb000;
    return ok && last.failed === 0
      ? { completed: last.completed, failed: 0 }
      : { completed: last.completed, failed: last.failed, error: `C-MOVE status 0x${last.status.toString(16).padStart(4, '0')}, ${last.failed} failed` };
  }

  /** One association with one request; resolves when it is released, rejects on a network error, rejection or timeout. */
  private run(request: InstanceType<typeof dimse.requests.Request>): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const client = new dimse.Client();
      let settled = false;
      const done = (err?: Error): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err) reject(err);
        else resolve();
      };
      const timer = setTimeout(() => {
        try {
          client.abort();
        } catch {
          /* not connected */
        }
        done(new Error(`PACS did not answer within ${this.timeoutMs / 1000}s`));
      }, this.timeoutMs);
      client.on('networkError', (e: Error) => done(new Error(`PACS network error: ${e.message}`)));
      client.on('associationRejected', () => done(new Error('PACS rejected the association')));
      client.on('closed', () => done());
      client.addRequest(request);
      client.send(this.config.host, this.config.port, this.callingAe, this.config.aeTitle, {
        connectTimeout: this.timeoutMs,
        associationTimeout: this.timeoutMs,
        pduTimeout: this.timeoutMs,
      });
    });
  }
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
