import { spawn, spawnSync } from 'node:child_process';

export * from '../../scripts/lib/raw-scu.js';

let dcmtkPresent: boolean | undefined;
/** True when DCMTK's command-line tools are on the PATH. */
export function hasDcmtk(): boolean {
  if (dcmtkPresent === undefined) {
    const r = spawnSync('storescu', ['--version'], { stdio: 'ignore' });
    dcmtkPresent = r.status === 0;
  }
  return dcmtkPresent;
}

export interface ToolResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a DCMTK tool with TCP_NODELAY=1 (without it DCMTK waits on Nagle: about 20 instances/s). */
export function runDcmtk(tool: string, args: string[], timeoutMs = 60_000): Promise<ToolResult> {
  return new Promise((resolve) => {
    const child = spawn(tool, args, { env: { ...process.env, TCP_NODELAY: '1' } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      resolve({ code: -1, stdout, stderr: stderr + err.message });
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

// ---------------------------------------------------------------------------------------------
// GDCM's gdcmscu

/** The uncaught exception Debian's gdcmscu 3.0.21 ends with once an association is released (see GDCM_RELEASE_ABORT). */
export const GDCM_ABORT_MESSAGE = 'ProtocolStream as nullptr is invalid';

/**
 * Why Debian's gdcmscu 3.0.21 exits by SIGABRT (status 134) after every association it releases:
 * in ULConnectionManager::RunEventLoop the A-RELEASE-RP transition (AR3) closes the transport and frees
 * the connection's protocol stream, and the loop then dereferences ULConnection::GetProtocol() once more;
 * 3.0.21 checks it for null and throws gdcm::Exception("ProtocolStream as nullptr is invalid"), which
 * nothing catches. Reproduce with DCMTK as the SCP: `storescp -v 11112 & gdcmscu --echo --call ANY
 * 127.0.0.1 11112; echo $?` prints 134 while storescp logs "Received Echo Request" and "Association
 * Release". Every invocation tried does it (--echo, --store -i FILE and -r -i DIR, --aetitle/--call,
 * 127.0.0.1 or localhost, -p PORT, -V/-W/-D), so its exit status says nothing: the -D trace and the SCP do.
 */
export const GDCM_RELEASE_ABORT =
  "Debian gdcmscu 3.0.21 aborts (SIGABRT, exit 134: 'ProtocolStream as nullptr is invalid') after the A-RELEASE-RP of every association";

export interface GdcmscuResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** stdout + stderr: with -D, GDCM's trace of every PDU and DIMSE command. */
  output: string;
  /** The PDU types received, in order (from the -D trace): 2 A-ASSOCIATE-AC, 3 -RJ, 4 P-DATA-TF, 6 A-RELEASE-RP, 7 A-ABORT. */
  pdus: number[];
  /**
   * True when the exchange ran to its end: exit 0, or the known abort (GDCM_RELEASE_ABORT) right after an
   * A-RELEASE-RP, which only comes after a completed association. Any other end is false.
   */
  completed: boolean;
}

/** Runs gdcmscu with -D (its PDU trace is how a completed exchange is told from a failed one). */
export function runGdcmscu(args: string[], timeoutMs = 60_000): Promise<GdcmscuResult> {
  return new Promise((resolve) => {
    const child = spawn('gdcmscu', ['-D', ...args]);
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      resolve({ code: -1, signal: null, output: output + err.message, pdus: [], completed: false });
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const pdus = [...output.matchAll(/^PDU code: (\d+)/gm)].map((m) => Number(m[1]));
      const releasedThenAborted = signal === 'SIGABRT' && output.includes(GDCM_ABORT_MESSAGE) && pdus.at(-1) === 6;
      resolve({ code, signal, output, pdus, completed: code === 0 || releasedThenAborted });
    });
  });
}
