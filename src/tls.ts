import { readFileSync } from 'node:fs';
import type net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import type { GatewayConfig } from './config/schema.js';

/**
 * TLS for every listener and client of the gateway: the config sections hold
 * PEM file paths; this turns them into node:tls options. Files are read when a
 * listener starts or a client connects (a renewed client certificate is used
 * without a restart), and checked once at start-up by `tlsConfigProblems`.
 */

export type TlsListenerConfig = NonNullable<GatewayConfig['hl7']['tls']>;
export type DicomTlsListenerConfig = NonNullable<GatewayConfig['dicom']['tls']>;
export type TlsClientConfig = NonNullable<GatewayConfig['hl7']['ris']['tls']>;

/** BCP 195: nothing older than TLS 1.2 (DCMTK's default profile asks the same). */
export const MIN_TLS_VERSION = 'TLSv1.2' as const;

function pem(file: string): Buffer {
  return readFileSync(file);
}

/** Options for tls.createServer / https.createServer. */
export function serverTlsOptions(c: TlsListenerConfig): tls.TlsOptions {
  return {
    cert: pem(c.cert),
    key: pem(c.key),
    ...(c.ca ? { ca: pem(c.ca) } : {}),
    minVersion: MIN_TLS_VERSION,
    requestCert: c.requireClientCert,
    rejectUnauthorized: c.requireClientCert,
  };
}

/** Options for tls.connect to `host`; the peer's certificate is verified (chain and name) unless rejectUnauthorized is false. */
export function clientTlsOptions(c: TlsClientConfig, host: string, port: number): tls.ConnectionOptions {
  return {
    host,
    port,
    ...(c.ca ? { ca: pem(c.ca) } : {}),
    ...(c.cert && c.key ? { cert: pem(c.cert), key: pem(c.key) } : {}),
    ...(c.servername ? { servername: c.servername } : {}),
    rejectUnauthorized: c.rejectUnauthorized,
    minVersion: MIN_TLS_VERSION,
  };
}

/**
 * Node leaves a server-side TLS socket whose handshake failed or timed out
 * (handshakeTimeout) open, and server.close() waits for it: this closes such a
 * socket (after `onFailure` logs it) and lets stop() cut the connections still
 * in their handshake, which no connection handler knows about yet.
 */
export function watchHandshakes(server: tls.Server, onFailure: (err: Error, remote: string) => void): { cutPending(): void } {
  const pending = new Map<string, net.Socket>();
  const key = (s: net.Socket): string => `${s.remoteAddress ?? '?'}:${s.remotePort ?? '?'}`;
  server.on('connection', (raw: net.Socket) => {
    const k = key(raw);
    pending.set(k, raw);
    raw.once('close', () => {
      if (pending.get(k) === raw) pending.delete(k);
    });
  });
  server.on('secureConnection', (s: tls.TLSSocket) => pending.delete(key(s)));
  server.on('tlsClientError', (err: Error, s: tls.TLSSocket) => {
    onFailure(err, key(s));
    s.destroy();
  });
  return {
    cutPending() {
      for (const s of pending.values()) s.destroy();
      pending.clear();
    },
  };
}

/** The subject common name(s) of the verified client certificate on a TLS socket; empty for plain TCP or no certificate. */
export function peerCommonNames(socket: unknown): string[] {
  if (!(socket instanceof tls.TLSSocket) || !socket.authorized) return [];
  const cn = socket.getPeerCertificate()?.subject?.CN as string | string[] | undefined;
  return cn === undefined ? [] : [cn].flat();
}

/**
 * Why a caller on a TLS association may not use this calling AE title, or
 * undefined when it may: its certificate's subject CN must be the AE title.
 */
export function subjectAeMismatch(socket: unknown, callingAe: string): string | undefined {
  const names = peerCommonNames(socket);
  if (names.length === 0) return 'no verified client certificate';
  if (names.includes(callingAe)) return undefined;
  return `client certificate subject CN "${names.join('", "')}" is not the calling AE title`;
}

/** Every TLS section of a config, with its key path, for the start-up check. */
function tlsSections(c: GatewayConfig): { at: string; kind: 'listener' | 'client'; tls: Record<string, unknown> }[] {
  const out: { at: string; kind: 'listener' | 'client'; tls: Record<string, unknown> }[] = [];
  const add = (at: string, kind: 'listener' | 'client', t: object | undefined): void => {
    if (t) out.push({ at, kind, tls: t as Record<string, unknown> });
  };
  if (c.dicom.enabled) add('dicom.tls', 'listener', c.dicom.tls);
  if (c.hl7.enabled) add('hl7.tls', 'listener', c.hl7.tls);
  if (c.http.enabled) add('http.tls', 'listener', c.http.tls);
  add('hl7.ris.tls', 'client', c.hl7.ris.tls);
  add('escalation.hl7.tls', 'client', c.escalation.hl7?.tls);
  if (c.audit.syslog?.protocol === 'tls') add('audit.syslog', 'client', c.audit.syslog);
  c.destinations.forEach((d, i) => {
    if (d.type === 'dimse') add(`destinations[${i}].tls`, 'client', d.tls);
  });
  return out;
}

/**
 * Resolves the TLS file paths of a parsed (not yet frozen) config against
 * `cwd`, in place, and reports every file that cannot be read and every
 * certificate/key set that node cannot use (not PEM, key not matching the
 * certificate), with its key path like any other config problem.
 */
export function tlsConfigProblems(c: GatewayConfig, cwd: string): { path: string; message: string }[] {
  const problems: { path: string; message: string }[] = [];
  for (const { at, kind, tls: t } of tlsSections(c)) {
    const files: Record<string, Buffer> = {};
    for (const key of ['cert', 'key', 'ca'] as const) {
      const v = t[key];
      if (typeof v !== 'string') continue;
      const abs = path.resolve(cwd, v);
      t[key] = abs;
      try {
        files[key] = readFileSync(abs);
      } catch (err) {
        problems.push({ path: `${at}.${key}`, message: `cannot read ${abs}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` });
      }
    }
    if (Object.keys(files).length !== ['cert', 'key', 'ca'].filter((k) => typeof t[k] === 'string').length) continue;
    try {
      // Parses every PEM and checks that the key belongs to the certificate.
      tls.createSecureContext({ ...files, minVersion: MIN_TLS_VERSION });
      if (kind === 'listener' && !files.cert) throw new Error('a listener needs cert and key');
    } catch (err) {
      problems.push({ path: at, message: `unusable certificate, key or CA file: ${(err as Error).message}` });
    }
  }
  return problems;
}
