import dcmjs, { type DicomDataDict } from 'dcmjs';
import type { GatewayConfig } from '../config/schema.js';
import type { Db } from '../db/database.js';
import type { Spool } from '../dicom/spool.js';
import { ErrorCode, GatewayError } from '../errors.js';
import { fileStream, part10Stream, part10DatasetOffset, type Part10Stream, type Piece } from '../forwarding/destination.js';
import type { DeidPort } from '../forwarding/forwarding.service.js';
import { addHl7Identifiers, dedupeHl7Identifiers, emptyHl7Identifiers, type Hl7Identifiers } from '../forwarding/hl7-identifiers.js';
import { StudyPseudonyms } from '../forwarding/pseudonym.service.js';
import { readSourceHeader } from '../forwarding/source-header.js';
import { rawHl7OfStudy } from '../forwarding/study-identifiers.repository.js';
import type { Principal } from '../http/auth.js';
import { hashId, type Logger } from '../logger.js';
import {
  INSTANCE_ATTRIBUTES,
  SERIES_ATTRIBUTES,
  STUDY_ATTRIBUTES,
  Tag,
  firstValue,
  pick,
  put,
  toDicomJson,
  type DicomJson,
  type Keyword,
} from './dicom-json.js';
import {
  queryInstances,
  querySeries,
  queryStudies,
  readerStudies,
  sentInstances,
  studyHasSeries,
  modalitiesOfStudies,
  type InstanceQueryRow,
  type QidoMatch,
  type ReaderStudy,
  type SeriesQueryRow,
  type StudyQueryRow,
} from './dicomweb.repository.js';

export type QidoLevel = 'study' | 'series' | 'instance';

export interface QidoRequest extends QidoMatch {
  level: QidoLevel;
  /** Tags asked for besides the defaults, or every one held. */
  include: Set<string> | 'all';
  /** The study (and series) named in the path: one that does not exist for the caller is answered 404. */
  parent?: { study: string; series?: string };
}

/** One instance as its caller may have it: the bytes to stream and the UIDs they carry. */
export interface ServedInstance {
  studyInstanceUid: string;
  seriesInstanceUid: string;
  sopInstanceUid: string;
  transferSyntaxUid: string;
  stream: Part10Stream;
}

type SentInstance = Awaited<ReturnType<typeof sentInstances>>[number];

/** A reader's study as they see it: under pseudonyms when their case's copy is de-identified. */
interface ReaderStudyView extends ReaderStudy {
  viewUid: string;
  pseudonyms?: StudyPseudonyms;
  hl7?: Hl7Identifiers;
  instances: (SentInstance & { viewSeriesUid: string; viewSopUid: string })[];
}

/** What one caller may see: everything (admin, qa, system), or a reader's own studies. */
type Scope = { all: true } | { all: false; studies: ReaderStudyView[] };

/** The de-identified (or plain) header and bytes of one instance, for a reader. */
interface InstanceView {
  dict: DicomDataDict;
  stream: Part10Stream;
}

export interface DicomwebServiceOptions {
  db: Db;
  spool: Spool;
  logger: Logger;
  deid: DeidPort;
  deidentification: GatewayConfig['forwarding']['deidentification'];
  pseudonymSecret: () => string;
}

const CACHE_ENTRIES = 512;
const CACHE_MAX_PREFIX_BYTES = 1024 * 1024;

/**
 * QIDO-RS and WADO-RS over what the gateway stores. Admin, QA and system see
 * every study (queries in dicomweb.repository.ts). A reader sees only the
 * studies of their own cases that are being or were delivered, and of each only
 * the instances the delivery sent; when that delivery is de-identified, every
 * header and byte is produced on the fly by forwarding's own de-identifier
 * (deid port) under the same stored pseudonyms, and verified again: an instance
 * whose output the verifier does not pass is not served. Anything outside a
 * reader's scope is answered 404, whether it exists or not.
 */
export class DicomwebService {
  private readonly log: Logger;
  /** De-identified views by delivery and stored file (a new version has another path). */
  private readonly cache = new Map<string, { prefix: Buffer; pixel: { start: number; end: number } | null; clean: boolean }>();

  constructor(private readonly o: DicomwebServiceOptions) {
    this.log = o.logger.child({ component: 'dicomweb' });
  }

  private async scope(principal: Principal): Promise<Scope> {
    if (principal.role !== 'reader') return { all: true };
    if (!principal.readerId) return { all: false, studies: [] };
    const studies: ReaderStudyView[] = [];
    for (const s of await readerStudies(this.o.db, principal.readerId)) {
      const sent = await sentInstances(this.o.db, s.deliveryId);
      if (sent.length === 0) continue;
      if (!s.deidentify) {
        studies.push({
          ...s,
          viewUid: s.studyInstanceUid,
          instances: sent.map((i) => ({ ...i, viewSeriesUid: i.series_instance_uid, viewSopUid: i.sop_instance_uid })),
        });
        continue;
      }
      const pseudonyms = await StudyPseudonyms.load(this.o.db, this.o.pseudonymSecret(), s.destinationId, s.studyInstanceUid);
      const hl7 = emptyHl7Identifiers();
      for (const raw of await rawHl7OfStudy(this.o.db, s.studyInstanceUid)) addHl7Identifiers(raw, hl7);
      studies.push({
        ...s,
        viewUid: pseudonyms.uid(s.studyInstanceUid),
        pseudonyms,
        hl7: dedupeHl7Identifiers(hl7),
        instances: sent.map((i) => ({ ...i, viewSeriesUid: pseudonyms.uid(i.series_instance_uid), viewSopUid: pseudonyms.uid(i.sop_instance_uid) })),
      });
    }
    return { all: false, studies };
  }

  // ---- QIDO-RS ----

  async search(principal: Principal, q: QidoRequest, baseUrl: string): Promise<DicomJson[]> {
    const scope = await this.scope(principal);
    // A parent in the path that does not exist, or that the caller may not see, is not found (the same answer for both).
    if (q.parent) {
      const { study, series } = q.parent;
      const found = scope.all
        ? await studyHasSeries(this.o.db, study, series)
        : scope.studies.find((s) => s.viewUid === study && (series === undefined || s.instances.some((i) => i.viewSeriesUid === series)));
      if (!found) throw new GatewayError(ErrorCode.notFound, series ? 'no such series' : 'no such study');
    }
    if (scope.all) return this.searchAll(q, baseUrl);
    return this.searchReader(scope.studies, q, baseUrl);
  }

  private async searchAll(q: QidoRequest, baseUrl: string): Promise<DicomJson[]> {
    const extra = async (ds: DicomJson, samplePath: string | null): Promise<DicomJson> => {
      if (q.include !== 'all' && [...q.include].every((t) => t in ds)) return ds;
      if (!samplePath) return ds;
      try {
        const header = toDicomJson((await readSourceHeader(this.o.spool.absolute(samplePath))).dict);
        const wanted = q.include === 'all' ? header : pick(header, q.include);
        return { ...wanted, ...ds };
      } catch {
        return ds;
      }
    };
    const withExtras = async (ds: DicomJson, samplePath: string | null, defaults: readonly Keyword[]): Promise<DicomJson> => {
      const full = await extra(ds, samplePath);
      return pick(full, q.include === 'all' ? 'all' : new Set([...defaults.map((k) => Tag[k][0]), Tag.RetrieveURL[0], ...q.include]));
    };
    if (q.level === 'study') {
      const rows = await queryStudies(this.o.db, q);
      const mods = await modalitiesOfStudies(
        this.o.db,
        rows.map((r) => r.study_instance_uid),
      );
      return Promise.all(rows.map((r) => withExtras(this.studyJson(r, mods.get(r.study_instance_uid) ?? [], baseUrl), r.sample_path, STUDY_ATTRIBUTES)));
    }
    if (q.level === 'series') {
      const rows = await querySeries(this.o.db, q);
      return Promise.all(rows.map((r) => withExtras(this.seriesJson(r, baseUrl), r.sample_path, [...SERIES_ATTRIBUTES, 'StudyInstanceUID'])));
    }
    const rows = await queryInstances(this.o.db, q);
    return Promise.all(
      rows.map((r) => withExtras(this.instanceJson(r, baseUrl), r.file_path, [...INSTANCE_ATTRIBUTES, 'StudyInstanceUID', 'SeriesInstanceUID'])),
    );
  }

  private studyJson(r: StudyQueryRow, modalities: string[], baseUrl: string): DicomJson {
    const ds: DicomJson = {};
    put(ds, 'StudyInstanceUID', r.study_instance_uid);
    put(ds, 'StudyDate', r.study_date);
    put(ds, 'AccessionNumber', r.accession_number);
    put(ds, 'ModalitiesInStudy', modalities);
    put(ds, 'ReferringPhysicianName', r.referring_physician);
    put(ds, 'PatientName', r.patient_name);
    put(ds, 'PatientID', r.patient_id);
    put(ds, 'IssuerOfPatientID', r.issuer_of_patient_id);
    put(ds, 'PatientBirthDate', r.patient_birth_date);
    put(ds, 'StudyDescription', r.study_description);
    put(ds, 'NumberOfStudyRelatedSeries', r.series_count);
    put(ds, 'NumberOfStudyRelatedInstances', r.instance_count);
    put(ds, 'RetrieveURL', `${baseUrl}/studies/${r.study_instance_uid}`);
    return ds;
  }

  private seriesJson(r: SeriesQueryRow, baseUrl: string): DicomJson {
    const ds = this.studyJson(r, r.modality ? [r.modality] : [], baseUrl);
    put(ds, 'SeriesInstanceUID', r.series_instance_uid);
    put(ds, 'Modality', r.modality);
    put(ds, 'SeriesNumber', r.series_number);
    put(ds, 'SeriesDescription', r.series_description);
    put(ds, 'BodyPartExamined', r.body_part_examined);
    put(ds, 'NumberOfSeriesRelatedInstances', r.series_instance_count);
    put(ds, 'RetrieveURL', `${baseUrl}/studies/${r.study_instance_uid}/series/${r.series_instance_uid}`);
    return ds;
  }

  private instanceJson(r: InstanceQueryRow, baseUrl: string): DicomJson {
    const ds = this.seriesJson(r, baseUrl);
    put(ds, 'SOPClassUID', r.sop_class_uid);
    put(ds, 'SOPInstanceUID', r.sop_instance_uid);
    put(ds, 'InstanceNumber', r.instance_number);
    put(ds, 'AvailableTransferSyntaxUID', r.transfer_syntax_uid);
    put(ds, 'RetrieveURL', `${baseUrl}/studies/${r.study_instance_uid}/series/${r.series_instance_uid}/instances/${r.sop_instance_uid}`);
    return ds;
  }

  /**
   * A reader's search: every answer is built from the headers as the reader
   * has them (de-identified when their copy is), so it carries the
   * pseudonymised values and matches on them; counts are of what was sent.
   */
  private async searchReader(studies: ReaderStudyView[], q: QidoRequest, baseUrl: string): Promise<DicomJson[]> {
    const out: DicomJson[] = [];
    for (const s of studies) {
      if (q.studyInstanceUid?.length && !q.studyInstanceUid.includes(s.viewUid)) continue;
      const bySeries = new Map<string, ReaderStudyView['instances']>();
      for (const i of s.instances) bySeries.set(i.viewSeriesUid, [...(bySeries.get(i.viewSeriesUid) ?? []), i]);
      const modalities = [...new Set(s.instances.map((i) => i.modality).filter((m): m is string => !!m))];
      const studyPart = async (sample: ReaderStudyView['instances'][number]): Promise<DicomJson | undefined> => {
        const v = await this.view(s, sample);
        if (!v) return undefined;
        const header = toDicomJson(v.dict);
        const ds: DicomJson = {};
        for (const k of STUDY_ATTRIBUTES) {
          const tag = Tag[k][0];
          if (header[tag]) ds[tag] = header[tag]!;
        }
        put(ds, 'StudyInstanceUID', s.viewUid);
        put(ds, 'ModalitiesInStudy', modalities);
        put(ds, 'NumberOfStudyRelatedSeries', bySeries.size);
        put(ds, 'NumberOfStudyRelatedInstances', s.instances.length);
        put(ds, 'RetrieveURL', `${baseUrl}/studies/${s.viewUid}`);
        return { ...header, ...ds };
      };
      if (q.level === 'study') {
        const ds = await studyPart(s.instances[0]!);
        if (ds && matches(ds, q)) out.push(finish(ds, q.include, STUDY_ATTRIBUTES));
        continue;
      }
      for (const [seriesUid, list] of bySeries) {
        if (q.seriesInstanceUid?.length && !q.seriesInstanceUid.includes(seriesUid)) continue;
        if (q.level === 'series') {
          const ds = await studyPart(list[0]!);
          if (!ds) continue;
          put(ds, 'NumberOfSeriesRelatedInstances', list.length);
          put(ds, 'RetrieveURL', `${baseUrl}/studies/${s.viewUid}/series/${seriesUid}`);
          if (matches(ds, q)) out.push(finish(ds, q.include, [...SERIES_ATTRIBUTES, 'StudyInstanceUID']));
          continue;
        }
        for (const i of list) {
          if (q.sopInstanceUid?.length && !q.sopInstanceUid.includes(i.viewSopUid)) continue;
          const ds = await studyPart(i);
          if (!ds) continue;
          put(ds, 'NumberOfSeriesRelatedInstances', list.length);
          put(ds, 'AvailableTransferSyntaxUID', i.transfer_syntax_uid);
          put(ds, 'RetrieveURL', `${baseUrl}/studies/${s.viewUid}/series/${seriesUid}/instances/${i.viewSopUid}`);
          if (matches(ds, q)) out.push(finish(ds, q.include, [...INSTANCE_ATTRIBUTES, 'StudyInstanceUID', 'SeriesInstanceUID']));
        }
      }
    }
    return out.slice(q.offset, q.offset + q.limit);
  }

  // ---- WADO-RS ----

  /**
   * The instances under a study, series or instance the caller may have, as
   * byte streams (stored files as they are; a reader's de-identified copy as
   * de-identified header + the stored pixel data). 404 when there is none.
   */
  async retrieve(principal: Principal, uids: { study: string; series?: string; sop?: string }): Promise<ServedInstance[]> {
    const scope = await this.scope(principal);
    const out: ServedInstance[] = [];
    if (scope.all) {
      const rows = await queryInstances(this.o.db, {
        studyInstanceUid: [uids.study],
        ...(uids.series ? { seriesInstanceUid: [uids.series] } : {}),
        ...(uids.sop ? { sopInstanceUid: [uids.sop] } : {}),
        limit: 1_000_000,
        offset: 0,
      });
      for (const r of rows) {
        out.push({
          studyInstanceUid: r.study_instance_uid,
          seriesInstanceUid: r.series_instance_uid,
          sopInstanceUid: r.sop_instance_uid,
          transferSyntaxUid: r.transfer_syntax_uid,
          stream: await fileStream(this.o.spool.absolute(r.file_path)),
        });
      }
    } else {
      for (const { study, instance } of this.selectReader(scope.studies, uids)) {
        const v = await this.view(study, instance);
        if (!v) continue;
        out.push({
          studyInstanceUid: study.viewUid,
          seriesInstanceUid: instance.viewSeriesUid,
          sopInstanceUid: instance.viewSopUid,
          transferSyntaxUid: instance.transfer_syntax_uid,
          stream: v.stream,
        });
      }
    }
    if (out.length === 0) throw new GatewayError(ErrorCode.notFound, 'no such study, series or instance');
    return out;
  }

  /** WADO-RS metadata: the header of every instance the caller may have under the UIDs, as DICOM JSON. */
  async metadata(principal: Principal, uids: { study: string; series?: string; sop?: string }, baseUrl: string): Promise<DicomJson[]> {
    const scope = await this.scope(principal);
    const out: DicomJson[] = [];
    if (scope.all) {
      const rows = await queryInstances(this.o.db, {
        studyInstanceUid: [uids.study],
        ...(uids.series ? { seriesInstanceUid: [uids.series] } : {}),
        ...(uids.sop ? { sopInstanceUid: [uids.sop] } : {}),
        limit: 1_000_000,
        offset: 0,
      });
      for (const r of rows) {
        const ds = toDicomJson((await readSourceHeader(this.o.spool.absolute(r.file_path))).dict);
        put(ds, 'RetrieveURL', `${baseUrl}/studies/${r.study_instance_uid}/series/${r.series_instance_uid}/instances/${r.sop_instance_uid}`);
        out.push(ds);
      }
    } else {
      for (const { study, instance } of this.selectReader(scope.studies, uids)) {
        const v = await this.view(study, instance);
        if (!v) continue;
        const ds = toDicomJson(v.dict);
        put(ds, 'RetrieveURL', `${baseUrl}/studies/${study.viewUid}/series/${instance.viewSeriesUid}/instances/${instance.viewSopUid}`);
        out.push(ds);
      }
    }
    if (out.length === 0) throw new GatewayError(ErrorCode.notFound, 'no such study, series or instance');
    return out;
  }

  private *selectReader(studies: ReaderStudyView[], uids: { study: string; series?: string; sop?: string }) {
    for (const study of studies) {
      if (study.viewUid !== uids.study) continue;
      for (const instance of study.instances) {
        if (uids.series && instance.viewSeriesUid !== uids.series) continue;
        if (uids.sop && instance.viewSopUid !== uids.sop) continue;
        yield { study, instance };
      }
    }
  }

  /**
   * One instance as the reader has it. Plain: the stored file. De-identified:
   * forwarding's de-identifier with the delivery's pseudonyms and the study's
   * HL7 identifiers, exactly as the push would send it; when the verifier
   * finds an identifier the instance is not served (undefined).
   */
  private async view(s: ReaderStudyView, i: SentInstance): Promise<InstanceView | undefined> {
    const abs = this.o.spool.absolute(i.file_path);
    if (!s.pseudonyms || !s.hl7) {
      return { dict: (await readSourceHeader(abs)).dict, stream: await fileStream(abs) };
    }
    const key = `${s.deliveryId}|${i.file_path}|${i.released}`;
    let r = this.cache.get(key);
    if (!r) {
      const opts = this.o.deidentification;
      const d = await this.o.deid.deidentify(abs, s.pseudonyms, {
        retainLongitudinalModifiedDates: opts.retainLongitudinalModifiedDates,
        retainPatientCharacteristics: opts.retainPatientCharacteristics,
        safePrivateTags: opts.safePrivateTags,
        releasedByReviewer: i.released === 1,
        hl7: s.hl7,
      });
      r = { prefix: d.prefix, pixel: d.pixel, clean: d.verification.clean };
      if (r.prefix.length <= CACHE_MAX_PREFIX_BYTES) {
        if (this.cache.size >= CACHE_ENTRIES) this.cache.delete(this.cache.keys().next().value as string);
        this.cache.set(key, r);
      }
    }
    if (!r.clean) {
      this.log.warn('de-identified instance not served: the verifier found an identifier', { caseId: s.caseId, sop: hashId(i.sop_instance_uid) });
      return undefined;
    }
    const pieces: Piece[] = [r.prefix];
    if (r.pixel) pieces.push({ path: abs, start: r.pixel.start, end: r.pixel.end });
    const ab = r.prefix.buffer.slice(r.prefix.byteOffset, r.prefix.byteOffset + r.prefix.length) as ArrayBuffer;
    const parsed = dcmjs.data.DicomMessage.readFile(ab, { untilTag: '7FE00010', includeUntilTagValue: false, ignoreErrors: true });
    return { dict: parsed.dict, stream: part10Stream(pieces, part10DatasetOffset(r.prefix)) };
  }
}

/** The defaults of the level, RetrieveURL, and what includefield asked for. */
function finish(ds: DicomJson, include: Set<string> | 'all', defaults: readonly Keyword[]): DicomJson {
  if (include === 'all') return ds;
  return pick(ds, new Set([...defaults.map((k) => Tag[k][0]), Tag.RetrieveURL[0], ...include]));
}

/** The match keys on a dataset as the reader sees it (the same rules as the SQL in dicomweb.repository.ts). */
export function matches(ds: DicomJson, q: QidoMatch): boolean {
  const eq = (tag: string, want: string | undefined): boolean => want === undefined || firstValue(ds, tag) === want;
  if (!eq(Tag.PatientID[0], q.patientId)) return false;
  if (!eq(Tag.AccessionNumber[0], q.accessionNumber)) return false;
  if (!eq(Tag.Modality[0], q.modality)) return false;
  if (q.patientName !== undefined) {
    const re = new RegExp(
      `^${q.patientName
        .replace(/[.+^${}()|[\]\\]/g, '\\$&')
        .replace(/\*/g, '.*')
        .replace(/\?/g, '.')}$`,
      'is',
    );
    if (!re.test(firstValue(ds, Tag.PatientName[0]) ?? '')) return false;
  }
  const date = firstValue(ds, Tag.StudyDate[0]);
  if (q.studyDate?.from && !(date && date >= q.studyDate.from)) return false;
  if (q.studyDate?.to && !(date && date <= q.studyDate.to)) return false;
  if (q.modalitiesInStudy?.length) {
    const mods = (ds[Tag.ModalitiesInStudy[0]]?.Value ?? []).map(String);
    if (!q.modalitiesInStudy.some((m) => mods.includes(m))) return false;
  }
  return true;
}
