import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import express, { type NextFunction, type Request, type Response, type Router } from 'express';
import { ErrorCode, GatewayError } from '../errors.js';
import { readPieces } from '../forwarding/destination.js';
import { requireRole } from '../http/auth.js';
import { put, tagOf, type DicomJson } from './dicom-json.js';
import type { DicomwebService, QidoLevel, QidoRequest } from './dicomweb.service.js';
import type { StowService } from './stow.service.js';
import { contentTypeParams } from './multipart.js';
import { remoteAddressOf, type StudyQueryAuditor } from '../audit/query-audit.js';

const DICOM_JSON = 'application/dicom+json';
/** QIDO answers at most this many matches per request; `limit` may ask for fewer. */
const MAX_LIMIT = 1000;

/** Match keys we evaluate (keyword or tag); includefield, limit, offset and fuzzymatching are controls. */
const MATCH_KEYS = new Map<string, keyof QidoRequest>([
  ['0020000D', 'studyInstanceUid'],
  ['0020000E', 'seriesInstanceUid'],
  ['00080018', 'sopInstanceUid'],
  ['00100020', 'patientId'],
  ['00100010', 'patientName'],
  ['00080050', 'accessionNumber'],
  ['00080020', 'studyDate'],
  ['00080060', 'modality'],
  ['00080061', 'modalitiesInStudy'],
]);
const CONTROL_KEYS = new Set(['includefield', 'limit', 'offset', 'fuzzymatching']);

/**
 * The DICOMweb routes under /dicom-web (PS3.18): STOW-RS for admin and
 * system tokens (a PACS pushing), QIDO-RS and WADO-RS for every role, a
 * reader scoped to their own cases by the service. Authentication is the
 * API's (bearer tokens), applied by the server before this router.
 */
export function dicomwebRouter(service: DicomwebService, stow: StowService, auditQuery?: StudyQueryAuditor): Router {
  const r = express.Router();

  const store = async (req: Request, res: Response): Promise<void> => {
    const studyUid = param(req, 'study');
    const outcome = await stow.receive(req, req.get('content-type') ?? '', {
      ...(studyUid ? { studyInstanceUid: studyUid } : {}),
      sender: req.principal?.name ?? 'dicomweb',
      remoteAddress: remoteAddressOf(req),
    });
    const base = baseUrl(req);
    const body: DicomJson = {};
    const ok = outcome.results.filter((x) => x.ok);
    const failed = outcome.results.filter((x) => !x.ok);
    const studies = new Set(ok.map((x) => x.studyInstanceUid));
    if (studies.size === 1) put(body, 'RetrieveURL', `${base}/studies/${[...studies][0]!}`);
    if (failed.length > 0) {
      body['00081198'] = {
        vr: 'SQ',
        Value: failed.map((x) => {
          const item: DicomJson = {
            '00081150': x.sopClassUid ? { vr: 'UI', Value: [x.sopClassUid] } : { vr: 'UI' },
            '00081155': x.sopInstanceUid ? { vr: 'UI', Value: [x.sopInstanceUid] } : { vr: 'UI' },
            '00081197': { vr: 'US', Value: [x.failureReason ?? 0x0110] },
          };
          return item;
        }),
      };
    }
    if (ok.length > 0) {
      body['00081199'] = {
        vr: 'SQ',
        Value: ok.map((x) => ({
          '00081150': { vr: 'UI', Value: [x.sopClassUid] },
          '00081155': { vr: 'UI', Value: [x.sopInstanceUid] },
          '00081190': { vr: 'UR', Value: [`${base}/studies/${x.studyInstanceUid}/instances/${x.sopInstanceUid}`] },
        })),
      };
    }
    let status = 200;
    if (outcome.bodyError && ok.length === 0 && failed.length === 0) throw outcome.bodyError;
    if (failed.length > 0 || outcome.bodyError) status = ok.length > 0 ? 202 : failed.every((x) => x.failureReason === 0xa700) ? 503 : 409;
    if (outcome.bodyError) res.set('Warning', `299 gateway "${outcome.bodyError.message.replace(/"/g, "'")}"`);
    res.status(status).type(DICOM_JSON).send(JSON.stringify(body));
  };
  r.post('/studies', requireRole('admin', 'system'), store);
  r.post('/studies/:study', requireRole('admin', 'system'), store);

  const search = (level: QidoLevel) => async (req: Request, res: Response) => {
    acceptJson(req);
    const q = parseQuery(req, level);
    const result = await service.search(req.principal!, q.request, baseUrl(req));
    if (auditQuery) {
      const { include: _include, limit: _limit, offset: _offset, level: _level, ...keys } = q.request;
      await auditQuery({ actor: req.principal!.name, remoteAddress: remoteAddressOf(req), via: 'qido-rs', level, keys: { ...keys }, results: result.length });
    }
    if (q.ignored.length > 0)
      res.set('Warning', `299 gateway "The following attributes are not supported for matching: ${q.ignored.join(', ').replace(/"/g, '')}"`);
    res.status(200).type(DICOM_JSON).send(JSON.stringify(result));
  };
  r.get('/studies', search('study'));
  r.get('/series', search('series'));
  r.get('/instances', search('instance'));
  r.get('/studies/:study/series', search('series'));
  r.get('/studies/:study/instances', search('instance'));
  r.get('/studies/:study/series/:series/instances', search('instance'));

  const retrieve = async (req: Request, res: Response) => {
    acceptDicom(req);
    const instances = await service.retrieve(req.principal!, uidsOf(req));
    const boundary = `gw-${randomBytes(12).toString('hex')}`;
    res.status(200);
    res.set('Content-Type', `multipart/related; type="application/dicom"; boundary=${boundary}`);
    let aborted = false;
    res.once('close', () => (aborted = true));
    const write = async (chunk: Buffer | string): Promise<void> => {
      if (!res.write(chunk)) await Promise.race([once(res, 'drain'), once(res, 'close')]);
    };
    for (const i of instances) {
      if (aborted) return;
      await write(`--${boundary}\r\nContent-Type: application/dicom; transfer-syntax=${i.transferSyntaxUid}\r\nContent-Length: ${i.stream.length}\r\n\r\n`);
      for await (const chunk of readPieces(i.stream)) {
        if (aborted) return;
        await write(chunk);
      }
      await write('\r\n');
    }
    res.end(`--${boundary}--\r\n`);
  };
  r.get('/studies/:study', retrieve);
  r.get('/studies/:study/series/:series', retrieve);
  r.get('/studies/:study/series/:series/instances/:sop', retrieve);

  const metadata = async (req: Request, res: Response) => {
    acceptJson(req);
    const result = await service.metadata(req.principal!, uidsOf(req), baseUrl(req));
    res.status(200).type(DICOM_JSON).send(JSON.stringify(result));
  };
  r.get('/studies/:study/metadata', metadata);
  r.get('/studies/:study/series/:series/metadata', metadata);
  r.get('/studies/:study/series/:series/instances/:sop/metadata', metadata);

  r.use((req, _res, next) => next(new GatewayError(ErrorCode.notFound, `no DICOMweb route ${req.method} ${req.baseUrl}${req.path}`)));
  r.use((err: unknown, _req: Request, res: Response, next: NextFunction) => {
    if (!(err instanceof NotAcceptable)) return next(err);
    res.status(406).json({ error: { code: 'not-acceptable', message: err.message } });
  });
  return r;
}

function baseUrl(req: Request): string {
  return `${req.protocol}://${req.get('host') ?? 'localhost'}${req.baseUrl}`;
}

function param(req: Request, name: string): string | undefined {
  const v = (req.params as Record<string, string | string[] | undefined>)[name];
  return Array.isArray(v) ? v[0] : v;
}

function uidsOf(req: Request): { study: string; series?: string; sop?: string } {
  const series = param(req, 'series');
  const sop = param(req, 'sop');
  return { study: param(req, 'study') ?? '', ...(series ? { series } : {}), ...(sop ? { sop } : {}) };
}

/** Each media range of an Accept header, with its parameters. */
function acceptRanges(req: Request): { mediaType: string; params: Record<string, string> }[] {
  const header = req.get('accept');
  if (!header) return [];
  // Commas separate ranges except inside quoted parameters.
  const ranges: string[] = [];
  let cur = '';
  let quoted = false;
  for (const c of header) {
    if (c === '"') quoted = !quoted;
    if (c === ',' && !quoted) {
      ranges.push(cur);
      cur = '';
    } else cur += c;
  }
  ranges.push(cur);
  return ranges.map((x) => contentTypeParams(x.trim())).filter((x) => x.mediaType);
}

function acceptJson(req: Request): void {
  const ranges = acceptRanges(req);
  if (ranges.length === 0) return;
  if (ranges.some((x) => ['application/dicom+json', 'application/json', '*/*', 'application/*'].includes(x.mediaType))) return;
  throw notAcceptable('this resource is answered as application/dicom+json');
}

/** WADO-RS instances: multipart/related of application/dicom, as stored (any transfer syntax the client accepts as `*`). */
function acceptDicom(req: Request): void {
  const ranges = acceptRanges(req);
  if (ranges.length === 0) return;
  const ok = ranges.some((x) => {
    if (x.mediaType === '*/*') return true;
    if (x.mediaType !== 'multipart/related') return false;
    const type = (x.params['type'] ?? 'application/dicom').toLowerCase();
    return type === 'application/dicom';
  });
  if (!ok) throw notAcceptable('instances are answered as multipart/related; type="application/dicom" (bytes as stored; no rendered or bulk-data media types)');
}

/** 406 has no GatewayError code (errors.ts maps `unsupported` to 415): thrown as this and answered by the router. */
class NotAcceptable extends Error {}

function notAcceptable(message: string): Error {
  return new NotAcceptable(message);
}

function parseQuery(req: Request, level: QidoLevel): { request: QidoRequest; ignored: string[] } {
  const request: QidoRequest = { level, include: new Set(), limit: MAX_LIMIT, offset: 0 };
  const ignored: string[] = [];
  const list = (v: unknown): string[] =>
    (Array.isArray(v) ? v : [v])
      .flatMap((x) => String(x ?? '').split(/[,\\]/))
      .map((x) => x.trim())
      .filter((x) => x !== '');
  for (const [rawKey, value] of Object.entries(req.query)) {
    const key = rawKey;
    const lower = key.toLowerCase();
    if (CONTROL_KEYS.has(lower)) {
      if (lower === 'includefield') {
        for (const f of list(value)) {
          if (f === 'all') request.include = 'all';
          else {
            const tag = tagOf(f);
            if (!tag) throw new GatewayError(ErrorCode.invalidInput, `unknown includefield "${f.slice(0, 64)}"`);
            if (request.include !== 'all') request.include.add(tag);
          }
        }
      } else if (lower === 'limit' || lower === 'offset') {
        const n = Number(list(value)[0]);
        const min = lower === 'limit' ? 1 : 0;
        if (!Number.isInteger(n) || n < min) throw new GatewayError(ErrorCode.invalidInput, `${lower} must be an integer of at least ${min}`);
        if (lower === 'limit') request.limit = Math.min(n, MAX_LIMIT);
        else request.offset = n;
      }
      continue;
    }
    const tag = tagOf(key);
    const field = tag ? MATCH_KEYS.get(tag) : undefined;
    const values = list(value);
    if (!field) {
      ignored.push(key.slice(0, 64));
      continue;
    }
    if (values.length === 0) continue; // an empty key asks for the attribute to be returned, nothing to match
    if (tag && request.include !== 'all') request.include.add(tag);
    switch (field) {
      case 'studyInstanceUid':
      case 'seriesInstanceUid':
      case 'sopInstanceUid':
      case 'modalitiesInStudy':
        request[field] = values;
        break;
      case 'modality':
        if (level === 'study') request.modalitiesInStudy = values;
        else request.modality = values[0]!;
        break;
      case 'studyDate': {
        const m = /^(\d{8})?(-)?(\d{8})?$/.exec(values[0]!);
        if (!m || (!m[1] && !m[3])) throw new GatewayError(ErrorCode.invalidInput, 'StudyDate must be YYYYMMDD or a range YYYYMMDD-YYYYMMDD (either end open)');
        request.studyDate = m[2] ? { ...(m[1] ? { from: m[1] } : {}), ...(m[3] ? { to: m[3] } : {}) } : { from: m[1]!, to: m[1]! };
        break;
      }
      case 'patientId':
      case 'patientName':
      case 'accessionNumber':
        request[field] = String(Array.isArray(value) ? value[0] : value);
        break;
      default:
        break;
    }
  }
  // The UIDs in the path are match keys too.
  const study = param(req, 'study');
  const series = param(req, 'series');
  if (study) request.studyInstanceUid = [study];
  if (series) request.seriesInstanceUid = [series];
  if (study) request.parent = { study, ...(series ? { series } : {}) };
  return { request, ignored };
}
