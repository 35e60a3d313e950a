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
 * C-STORE destination. Without `unshare` Orthanc runs directly on free
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

// Runs inside the namespace: 127.0.0.1:<port> -> Unix socket (a peer outside the namespace that Orthanc calls).
const NS_REVERSE_RELAY = `
const net = require('node:net');
const [port, sock] = process.argv.slice(1);
net.createServer((c) => {
  const u = net.connect(sock);
  c.setNoDelay(true);
  c.pipe(u).pipe(c);
  c.on('error', () => u.destroy()); u.on('error', () => c.destroy());
}).listen(Number(port), '127.0.0.1');
`;

/** A DICOM peer Orthanc may call (C-MOVE destination, C-FIND/C-MOVE caller), listening here on 127.0.0.1:port. */
export interface OrthancModality {
  aeTitle: string;
  port: number;
}

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

/**
 * `modalities` (isolated only): peers Orthanc knows by AE title and can reach (through a relay into the
 * namespace), so it answers their C-FIND / C-MOVE and sends C-MOVE results to them.
 */
export async function startOrthanc(options: { modalities?: OrthancModality[] } = {}): Promise<OrthancPeer> {
  const tmp = makeTempDir('gw-orthanc-');
  const isolated = unshareWorks();
  const modalities = isolated ? (options.modalities ?? []) : [];
  // In the namespace any port is free; outside we pick free ones.
  const httpPort = isolated ? 8042 : await freePort();
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
    DicomWeb: { Enable: true, Root: '/dicom-web/', Host: '127.0.0.1', Port: httpPort, Ssl: false, StowMaxInstances: 0, StowMaxSize: 0 },
    ConcurrentJobs: 1,
    HttpThreadsCount: 8,
    // inside the namespace each modality is reached on 127.0.0.1:(11000 + index), relayed to the peer here
    DicomModalities: Object.fromEntries(modalities.map((m, i) => [m.aeTitle.toLowerCase(), [m.aeTitle, '127.0.0.1', 11000 + i]])),
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
    const reverse = modalities.map((m, i) => ({ port: 11000 + i, sock: path.join(tmp.dir, `modality-${i}.sock`), target: m.port }));
    const reverseScript = reverse.map((r, i) => ` & node -e "$7" "${r.port}" "$${8 + i}"`).join('');
    const script = `ip link set lo up || exit 97; "${ORTHANC_BIN}" "$1" & node -e "$2" "$3" "$4" & node -e "$2" "$5" "$6"${reverseScript} & wait`;
    // The peers' sockets exist before Orthanc can call them.
    for (const r of reverse) {
      const server = net.createServer((c) => {
        c.setNoDelay(true);
        const u = net.connect(r.target, '127.0.0.1');
        u.setNoDelay(true);
        c.pipe(u).pipe(c);
        c.on('error', () => u.destroy());
        u.on('error', () => c.destroy());
      });
      relays.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(r.sock, () => resolve());
      });
    }
    // TCP_NODELAY=1: Orthanc's DICOM layer is DCMTK, which otherwise leaves Nagle on (about 20 instances/s).
    child = spawn('unshare', ['-n', 'sh', '-c', script, 'sh', configPath, NS_RELAY, sock, String(httpPort), dicomSock, String(config.DicomPort), NS_REVERSE_RELAY, ...reverse.map((r) => r.sock)], {
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, TCP_NODELAY: '1' },
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
