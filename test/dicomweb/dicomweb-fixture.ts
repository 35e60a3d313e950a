import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { buildConfig } from '../../src/config/load.js';
import { createGateway, type Gateway } from '../../src/gateway.js';
import { eventually } from '../helpers/eventually.js';
import { silentLogger } from '../helpers/hl7-peers.js';
import { gatewayInTempDir, makeTempDir } from '../helpers/tmp.js';

export const DW_TOKENS = {
  admin: 'dw-admin-token-0123456789abcdef',
  pacs: 'dw-pacs-system-token-0123456789abcdef',
  /** dr-a reads CT at a de-identifying pull destination. */
  drA: 'dw-reader-a-token-0123456789abcdef',
  /** dr-b reads MR at a plain pull destination. */
  drB: 'dw-reader-b-token-0123456789abcdef',
  /** dr-c has no case. */
  drC: 'dw-reader-c-token-0123456789abcdef',
} as const;

/** A multipart/related; type="application/dicom" body of the given Part 10 files (whole, or cut where a test wants). */
export function multipartBody(parts: Buffer[], o: { close?: boolean } = {}): { body: Buffer; contentType: string; boundary: string } {
  const boundary = `test-${randomBytes(8).toString('hex')}`;
  const chunks: Buffer[] = [];
  parts.forEach((p, i) => {
    chunks.push(Buffer.from(`${i === 0 ? '' : '\r\n'}--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`, 'latin1'));
    chunks.push(p);
  });
  if (o.close !== false) chunks.push(Buffer.from(`\r\n--${boundary}--\r\n`, 'latin1'));
  return { body: Buffer.concat(chunks), contentType: `multipart/related; type="application/dicom"; boundary=${boundary}`, boundary };
}

export function files(paths: string[]): Buffer[] {
  return paths.map((p) => readFileSync(p));
}

/**
 * The whole gateway in-process: C-STORE and HTTP on loopback, two pull
 * destinations (one de-identifying) with a reader each, gateway assignment,
 * the database from GATEWAY_TEST_DATABASE_URL when set (PostgreSQL) else SQLite.
 */
export class DicomwebGateway {
  readonly tmp = makeTempDir('gw-dicomweb-');
  gw!: Gateway;
  base = '';

  async start(): Promise<void> {
    const config = buildConfig({
      ...gatewayInTempDir(this.tmp.dir),
      hl7: { port: 0, ris: { host: '127.0.0.1', port: 9 } },
      destinations: [
        { id: 'pull-deid', type: 'pull', deidentify: true },
        { id: 'pull-plain', type: 'pull', deidentify: false },
      ],
      readers: [
        { id: 'dr-a', name: 'Ada Reader', modalities: ['CT'], destination: 'pull-deid', maxOpenCases: 50 },
        { id: 'dr-b', name: 'Ben Reader', modalities: ['MR'], destination: 'pull-plain', maxOpenCases: 50 },
        { id: 'dr-c', name: 'Cy Reader', modalities: ['XA'], destination: 'pull-plain', maxOpenCases: 50 },
      ],
      assignment: { strategy: 'gateway' },
      forwarding: { pollIntervalSeconds: 0.1 },
      auth: {
        tokens: [
          { token: DW_TOKENS.admin, role: 'admin', name: 'alice' },
          { token: DW_TOKENS.pacs, role: 'system', name: 'PACS1' },
          { token: DW_TOKENS.drA, role: 'reader', readerId: 'dr-a', name: 'ada' },
          { token: DW_TOKENS.drB, role: 'reader', readerId: 'dr-b', name: 'ben' },
          { token: DW_TOKENS.drC, role: 'reader', readerId: 'dr-c', name: 'cy' },
        ],
      },
    });
    this.gw = createGateway(config, { logger: silentLogger });
    await this.gw.start();
    this.base = `http://127.0.0.1:${this.gw.ports().http}`;
  }

  async stop(): Promise<void> {
    await this.gw?.stop();
    this.tmp.cleanup();
  }

  get dicomweb(): string {
    return `${this.base}/dicom-web`;
  }

  async stow(
    body: Buffer,
    contentType: string,
    token: string = DW_TOKENS.pacs,
    p = '/studies',
  ): Promise<{ status: number; json: Record<string, { Value?: unknown[] }> }> {
    const res = await fetch(`${this.dicomweb}${p}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': contentType, accept: 'application/dicom+json' },
      body,
    });
    const text = await res.text();
    return { status: res.status, json: text ? (JSON.parse(text) as Record<string, { Value?: unknown[] }>) : {} };
  }

  async get(p: string, token: string, accept = 'application/dicom+json'): Promise<{ status: number; contentType: string; body: Buffer }> {
    const res = await fetch(`${this.dicomweb}${p}`, { headers: { authorization: `Bearer ${token}`, accept } });
    return { status: res.status, contentType: res.headers.get('content-type') ?? '', body: Buffer.from(await res.arrayBuffer()) };
  }

  async api(method: string, p: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
    const res = await fetch(`${this.base}${p}`, {
      method,
      headers: { authorization: `Bearer ${DW_TOKENS.admin}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: res.status, json: (await res.json()) as Record<string, unknown> };
  }

  async waitStable(uid: string): Promise<void> {
    await eventually(
      async () => ((await this.api('GET', `/api/studies/${uid}`)).json['state'] === 'stable' ? true : undefined),
      'the study to be stable',
      20_000,
    );
  }

  /** A manual second read of a stored study; resolves with the case once it awaits its read (nothing was pushed). */
  async caseFor(uid: string): Promise<{ caseId: string; readerId: string }> {
    await this.waitStable(uid);
    const r = await this.api('POST', '/api/cases', { studyInstanceUid: uid, reason: 'dicomweb test' });
    if (r.status !== 201 && r.status !== 200) throw new Error(`case not created: ${r.status} ${JSON.stringify(r.json)}`);
    const caseId = String(r.json['id']);
    return eventually(
      async () => {
        const c = (await this.api('GET', `/api/cases/${caseId}`)).json;
        return c['state'] === 'awaiting-read' && c['readerId'] ? { caseId, readerId: String(c['readerId']) } : undefined;
      },
      'the case to await its read',
      20_000,
    );
  }
}

/** The parts of a multipart/related answer (WADO-RS), with their headers. */
export function parseMultipart(body: Buffer, contentType: string): { headers: Record<string, string>; data: Buffer }[] {
  const m = /boundary="?([^";]+)"?/.exec(contentType);
  if (!m) throw new Error(`no boundary in ${contentType}`);
  const delim = Buffer.from(`--${m[1]}`);
  const out: { headers: Record<string, string>; data: Buffer }[] = [];
  let at = body.indexOf(delim);
  while (at >= 0) {
    const start = at + delim.length;
    if (body.subarray(start, start + 2).toString() === '--') break;
    const headerEnd = body.indexOf('\r\n\r\n', start);
    const headers: Record<string, string> = {};
    for (const line of body
      .subarray(start + 2, headerEnd)
      .toString('latin1')
      .split('\r\n')) {
      const c = line.indexOf(':');
      if (c > 0) headers[line.slice(0, c).trim().toLowerCase()] = line.slice(c + 1).trim();
    }
    const next = body.indexOf(Buffer.concat([Buffer.from('\r\n'), delim]), headerEnd + 4);
    out.push({ headers, data: body.subarray(headerEnd + 4, next) });
    at = next + 2;
  }
  return out;
}

export const fixtureDir = (t: DicomwebGateway, name: string): string => path.join(t.tmp.dir, name);
