import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { makeTempDir } from './tmp.js';

/**
 * A real Orthanc (1.10.1, Debian) with the DICOMweb plugin, for interop tests.
 *
 * Orthanc 1.10.1 has no bind-address option, so when we are root it runs in
 * its own network namespace (`unshare -n`, loopback only): nothing outside
 * this test can reach it. The test process lives in the host namespace, so
 * a relay inside the namespace exposes Orthanc's HTTP port on a Unix socket
 * (Unix sockets are filesystem objects, not namespaced) and a relay here
 * publishes that socket on 127.0.0.1:<free port>. Orthanc's DICOM port is
 * published the same way (a second Unix socket and relay), so it can be a
 * C-STORE destination. Ports of ours that Orthanc calls (DICOMweb servers,
 * DICOM modalities) go the other way: a relay inside the namespace listens on
 * 127.0.0.1:<inner port> and forwards, through a Unix socket, to a relay here
 * that connects to the real port. Without `unshare` Orthanc runs directly on free
 * loopback ports with RemoteAccessAllowed false and its DICOM listener off
 * (it would listen on every interface): `dicom` is then undefined.
 */
export interface OrthancPeer {
  /** http://127.0.0.1:<port> (Orthanc REST) */
  baseUrl: string;
  /** baseUrl + /dicom-web */
  dicomwebUrl: string;
  isolated: boolean;
  /** Orthanc's C-STORE SCP (AE ORTHANC) on 127.0.0.1, only when isolated; undefined otherwise. */
  dicom?: { host: string; port: number; aeTitle: string };
  stop(): Promise<void>;
}

export const ORTHANC_BIN = '/usr/sbin/Orthanc';
export const DICOMWEB_PLUGIN = '/usr/share/orthanc/plugins/libOrthancDicomWeb.so';

/** Why Orthanc cannot be used here, or undefined when it can. */
export function orthancUnavailable(): string | undefined {
  if (!existsSync(ORTHANC_BIN)) return `Orthanc is not installed (${ORTHANC_BIN} missing; apt-get install orthanc orthanc-dicomweb)`;
  if (!existsSync(DICOMWEB_PLUGIN)) return `the Orthanc DICOMweb plugin is not installed (${DICOMWEB_PLUGIN} missing; apt-get install orthanc-dicomweb)`;
  return undefined;
}

let canUnshare: boolean | undefined;
function unshareWorks(): boolean {
  if (canUnshare === undefined) {
    const r = spawnSync('unshare', ['-n', 'sh', '-c', 'ip link set lo up'], { stdio: 'ignore', timeout: 5000 });
    canUnshare = r.status === 0;
  }
  return canUnshare;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

// Runs inside the namespace: Unix socket -> 127.0.0.1:<Orthanc HTTP port>.
const NS_RELAY = `
const net = require('node:net');
const [sock, port] = process.argv.slice(1);
net.createServer((c) => {
  const u = net.connect(Number(port), '127.0.0.1');
  u.setNoDelay(true);
  c.pipe(u).pipe(c);
  c.on('error', () => u.destroy()); u.on('error', () => c.destroy());
}).listen(sock);
`;

/** Publishes a Unix socket (a relay inside the namespace) on 127.0.0.1:<free port> here; resolves with the port. */
async function publish(sock: string, relays: net.Server[]): Promise<number> {
  const port = await freePort();
  const relay = net.createServer((c) => {
    c.setNoDelay(true);
    const u = net.connect(sock);
    c.pipe(u).pipe(c);
    c.on('error', () => u.destroy());
    u.on('error', () => c.destroy());
  });
  relays.push(relay);
  await new Promise<void>((resolve, reject) => {
    relay.once('error', reject);
    relay.listen(port, '127.0.0.1', () => resolve());
  });
  return port;
}

async function waitForHttp(url: string, child: ChildProcess, log: () => string, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < until) {
    if (child.exitCode !== null) throw new Error(`Orthanc exited with ${child.exitCode}: ${log().slice(-2000)}`);
    try {
      const r = await fetch(url, { signal: AbortSignal.timeout(1000) });
      if (r.ok) return;
      last = `HTTP ${r.status}`;
    } catch (e) {
      last = (e as Error).message;
    }
    await new Promise((r) => setTimeout(r, 150));
  }
  throw new Error(`Orthanc did not come up at ${url} (${last}): ${log().slice(-2000)}`);
}

// Runs inside the namespace: 127.0.0.1:<port> -> Unix socket (a relay here connects it to a port of ours).
const NS_BACK_RELAY = `
const net = require('node:net');
const [port, sock] = process.argv.slice(1);
net.createServer((c) => {
  const u = net.connect(sock);
  c.setNoDelay(true);
  c.pipe(u).pipe(c);
  c.on('error', () => u.destroy()); u.on('error', () => c.destroy());
}).listen(Number(port), '127.0.0.1');
`;

/** A DICOMweb server Orthanc's plugin knows by name (DicomWeb.Servers): a port of ours on 127.0.0.1, reachable from Orthanc. */
export interface OrthancDicomwebServer {
  port: number;
  /** Path on that port, e.g. /dicom-web/ */
  path: string;
  headers?: Record<string, string>;
}

/** A DICOM peer Orthanc knows by AE title (DicomModalities): C-FIND/C-MOVE caller or C-MOVE destination on 127.0.0.1:port here. */
export interface OrthancModality {
  aeTitle: string;
  port: number;
}

export interface StartOrthancOptions {
  /** Merged over the test configuration (e.g. query/retrieve permissions); its DicomModalities add to `modalities`. */
  config?: Record<string, unknown>;
  /** Servers of ours that Orthanc's DICOMweb plugin calls (STOW to us, retrieve from us). */
  dicomwebServers?: Record<string, OrthancDicomwebServer>;
  /** DICOM peers of ours that Orthanc answers and sends C-MOVE results to (useful only when isolated: the DICOM listener is off otherwise). */
  modalities?: OrthancModality[];
}

// Ports inside the namespace at which Orthanc reaches the peers of ours (one back relay each).
const BACK_RELAY_BASE_PORT = 11000;

export async function startOrthanc(options: StartOrthancOptions = {}): Promise<OrthancPeer> {
  const tmp = makeTempDir('gw-orthanc-');
  const isolated = unshareWorks();
  // In the namespace any port is free; outside we pick free ones.
  const httpPort = isolated ? 8042 : await freePort();
  // Every port of ours that Orthanc calls: inside the namespace it is an inner port that a relay connects, through a
  // Unix socket, to the real port here; outside, Orthanc calls the real port directly.
  const backRelays: { innerPort: number; sock: string; port: number }[] = [];
  const reach = (port: number): number => {
    if (!isolated) return port;
    const innerPort = BACK_RELAY_BASE_PORT + backRelays.length;
    backRelays.push({ innerPort, sock: path.join(tmp.dir, `back-${backRelays.length}.sock`), port });
    return innerPort;
  };
  const servers: Record<string, unknown> = {};
  for (const [name, server] of Object.entries(options.dicomwebServers ?? {})) {
    servers[name] = { Url: `http://127.0.0.1:${reach(server.port)}${server.path}`, ...(server.headers ? { HttpHeaders: server.headers } : {}) };
  }
  const modalities: Record<string, unknown> = {};
  for (const m of options.modalities ?? []) modalities[m.aeTitle.toLowerCase()] = [m.aeTitle, '127.0.0.1', reach(m.port)];
  const { DicomModalities: extraModalities, ...extraConfig } = options.config ?? {};
  const config = {
    Name: 'GW-TEST',
    StorageDirectory: path.join(tmp.dir, 'storage'),
    IndexDirectory: path.join(tmp.dir, 'index'),
    StorageCompression: false,
    HttpPort: httpPort,
    HttpServerEnabled: true,
    RemoteAccessAllowed: false,
    AuthenticationEnabled: false,
    DicomServerEnabled: isolated,
    DicomPort: isolated ? 4242 : await freePort(),
    DicomAet: 'ORTHANC',
    Plugins: [DICOMWEB_PLUGIN],
    DicomWeb: { Enable: true, Root: '/dicom-web/', Host: '127.0.0.1', Port: httpPort, Ssl: false, StowMaxInstances: 0, StowMaxSize: 0, Servers: servers },
    DicomModalities: { ...modalities, ...(extraModalities as Record<string, unknown> | undefined) },
    ConcurrentJobs: 1,
    HttpThreadsCount: 8,
    ...extraConfig,
  };
  const configPath = path.join(tmp.dir, 'orthanc.json');
  writeFileSync(configPath, JSON.stringify(config, null, 2));
  let output = '';
  let child: ChildProcess;
  const relays: net.Server[] = [];
  let baseUrl: string;
  let dicom: OrthancPeer['dicom'];
  if (isolated) {
    const sock = path.join(tmp.dir, 'http.sock');
    const dicomSock = path.join(tmp.dir, 'dicom.sock');
    // The sockets of ours exist before Orthanc can call them.
    for (const b of backRelays) {
      const relay = net.createServer((c) => {
        const u = net.connect(b.port, '127.0.0.1');
        u.setNoDelay(true);
        c.pipe(u).pipe(c);
        c.on('error', () => u.destroy());
        u.on('error', () => c.destroy());
      });
      relays.push(relay);
      await new Promise<void>((resolve, reject) => {
        relay.once('error', reject);
        relay.listen(b.sock, () => resolve());
      });
    }
    // Positional arguments: $1 config, $2 relay script, $3/$4 HTTP socket/port, $5/$6 DICOM socket/port, then
    // (inner port, socket) pairs for the back relays; their script comes through the environment.
    const back = backRelays.map((_, i) => `node -e "$NS_BACK_RELAY" "\${${7 + 2 * i}}" "\${${8 + 2 * i}}" & `).join('');
    const script = `ip link set lo up || exit 97; ${back}"${ORTHANC_BIN}" "$1" & node -e "$2" "$3" "$4" & node -e "$2" "$5" "$6" & wait`;
    const backArgs = backRelays.flatMap((b) => [String(b.innerPort), b.sock]);
    // TCP_NODELAY=1: Orthanc's DICOM layer is DCMTK, which otherwise leaves Nagle on (about 20 instances/s).
    child = spawn('unshare', ['-n', 'sh', '-c', script, 'sh', configPath, NS_RELAY, sock, String(httpPort), dicomSock, String(config.DicomPort), ...backArgs], {
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, TCP_NODELAY: '1', NS_BACK_RELAY },
    });
    const hostPort = await publish(sock, relays);
    baseUrl = `http://127.0.0.1:${hostPort}`;
    dicom = { host: '127.0.0.1', port: await publish(dicomSock, relays), aeTitle: config.DicomAet };
  } else {
    child = spawn(ORTHANC_BIN, [configPath], { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    baseUrl = `http://127.0.0.1:${httpPort}`;
  }
  child.stdout?.on('data', (d: Buffer) => (output = (output + d.toString()).slice(-20000)));
  child.stderr?.on('data', (d: Buffer) => (output = (output + d.toString()).slice(-20000)));

  const stop = async (): Promise<void> => {
    for (const r of relays) r.close();
    if (child.exitCode === null && child.pid) {
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      try {
        process.kill(-child.pid, 'SIGTERM'); // our own process group: the shell, Orthanc and the relay
      } catch {
        /* gone */
      }
      const t = setTimeout(() => {
        try {
          process.kill(-child.pid!, 'SIGKILL');
        } catch {
          /* gone */
        }
      }, 5000);
      await exited;
      clearTimeout(t);
    }
    tmp.cleanup();
  };
  try {
    await waitForHttp(`${baseUrl}/system`, child, () => output, 30_000);
    // The DICOM relay inside the namespace starts alongside the HTTP one: wait for its socket too.
    for (let i = 0; dicom && !existsSync(path.join(tmp.dir, 'dicom.sock')); i++) {
      if (i > 100) throw new Error(`Orthanc's DICOM relay did not come up: ${output.slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return { baseUrl, dicomwebUrl: `${baseUrl}/dicom-web`, isolated, dicom, stop };
}
