import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/**
 * Our own STOW-RS / QIDO-RS test receiver on 127.0.0.1: parses
 * multipart/related bodies, records every request, and answers as told
 * (PS3.18 10.5 response shapes), or never answers at all.
 */
export interface StowPart {
  contentType: string;
  body: Buffer;
  sopInstanceUid: string;
}

export interface RecordedRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  /** multipart/related type parameter, e.g. application/dicom */
  type?: string;
  parts: StowPart[];
}

export type StowBehaviour =
  | { kind: 'store' } // 200 with a ReferencedSOPSequence of every part
  | { kind: 'status'; status: number; body?: unknown } // that status, with a JSON body if given
  | { kind: 'fail'; uids: Map<string, number>; status?: number } // those fail with the given FailureReason, the rest stored (202 by default)
  | { kind: 'hang' }; // read the request, never answer

export interface StowServer {
  url: string;
  port: number;
  requests: RecordedRequest[];
  behaviour: StowBehaviour;
  close(): Promise<void>;
}

/** SOP Instance UID from a Part 10 meta header (0002,0003). */
function sopInstanceUidOf(part10: Buffer): string {
  if (part10.toString('latin1', 128, 132) !== 'DICM') return '';
  let o = 132;
  while (o + 8 <= part10.length && part10.readUInt16LE(o) === 0x0002) {
    const el = part10.readUInt16LE(o + 2);
    const vr = part10.toString('latin1', o + 4, o + 6);
    const long = ['OB', 'OW', 'UN', 'SQ', 'UT'].includes(vr);
    const len = long ? part10.readUInt32LE(o + 8) : part10.readUInt16LE(o + 6);
    const hdr = long ? 12 : 8;
    if (el === 0x0003) return part10.toString('latin1', o + hdr, o + hdr + len).replace(/[\0 ]+$/, '');
    o += hdr + len;
  }
  return '';
}

function param(contentType: string, name: string): string | undefined {
  const m = new RegExp(`;\\s*${name}=("([^"]*)"|[^;\\s]*)`, 'i').exec(contentType);
  return m ? (m[2] ?? m[1]) : undefined;
}

/** RFC 2046 multipart parsing: parts between `--boundary` delimiters (each preceded by CRLF except at the very start). */
export function parseMultipart(body: Buffer, boundary: string): StowPart[] {
  const delim = Buffer.from(`--${boundary}`);
  const parts: StowPart[] = [];
  let pos = body.indexOf(delim);
  if (pos < 0) throw new Error('no boundary in body');
  for (;;) {
    let start = pos + delim.length;
    if (body.toString('latin1', start, start + 2) === '--') break; // close delimiter
    start += 2; // CRLF after the delimiter
    const next = body.indexOf(Buffer.from(`\r\n--${boundary}`), start);
    if (next < 0) throw new Error('unterminated part');
    const part = body.subarray(start, next);
    const headerEnd = part.indexOf('\r\n\r\n');
    if (headerEnd < 0) throw new Error('part without header block');
    const headers = part.toString('latin1', 0, headerEnd);
    const content = part.subarray(headerEnd + 4);
    const ct = /^content-type:\s*(.+)$/im.exec(headers)?.[1]?.trim() ?? '';
    parts.push({ contentType: ct, body: Buffer.from(content), sopInstanceUid: sopInstanceUidOf(content) });
    pos = next + 2;
  }
  return parts;
}

const ref = (uid: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  '00081150': { vr: 'UI', Value: ['1.2.840.10008.5.1.4.1.1.2'] },
  '00081155': { vr: 'UI', Value: [uid] },
  ...extra,
});

export async function startStowServer(behaviour: StowBehaviour = { kind: 'store' }): Promise<StowServer> {
  const requests: RecordedRequest[] = [];
  const sockets = new Set<Socket>();
  const state: StowServer = { url: '', port: 0, requests, behaviour, close: async () => undefined };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const ct = req.headers['content-type'] ?? '';
      const rec: RecordedRequest = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, parts: [] };
      const type = param(ct, 'type');
      if (type !== undefined) rec.type = type;
      if (req.method === 'POST') {
        const boundary = param(ct, 'boundary');
        try {
          rec.parts = boundary ? parseMultipart(body, boundary) : [];
        } catch {
          rec.parts = [];
        }
      }
      requests.push(rec);
      const b = state.behaviour;
      if (b.kind === 'hang') return; // never answer
      const json = (status: number, payload: unknown): void => {
        res.writeHead(status, { 'content-type': 'application/dicom+json' });
        res.end(payload === undefined ? '' : JSON.stringify(payload));
      };
      if (req.method === 'GET') return json(200, []);
      if (b.kind === 'status') return json(b.status, b.body);
      if (b.kind === 'store') return json(200, { '00081199': { vr: 'SQ', Value: rec.parts.map((p) => ref(p.sopInstanceUid)) } });
      const failed = rec.parts.filter((p) => b.uids.has(p.sopInstanceUid));
      const stored = rec.parts.filter((p) => !b.uids.has(p.sopInstanceUid));
      return json(b.status ?? 202, {
        '00081198': { vr: 'SQ', Value: failed.map((p) => ref(p.sopInstanceUid, { '00081197': { vr: 'US', Value: [b.uids.get(p.sopInstanceUid)] } })) },
        '00081199': { vr: 'SQ', Value: stored.map((p) => ref(p.sopInstanceUid)) },
      });
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const port = (server.address() as AddressInfo).port;
  state.port = port;
  state.url = `http://127.0.0.1:${port}/dicom-web`;
  state.close = () =>
    new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    });
  return state;
}
