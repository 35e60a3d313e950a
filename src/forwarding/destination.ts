import { readFileMeta } from '../dicom/part10.js';
import { createReadStream } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';

/** One instance to forward, exactly as stored (or as de-identified). */
export interface OutgoingInstance {
  sopClassUid: string;
  sopInstanceUid: string;
  transferSyntaxUid: string;
  /** complete Part 10 file */
  bytes: Buffer;
  /**
   * Called by a streaming sender just before this instance goes on the wire
   * (after the previous one was answered); a rejection stops the batch there,
   * the association released, the rest reported not sent (a cancelled case).
   */
  beforeSend?: () => Promise<void>;
}

/**
 * The same, with a loader that reads (and de-identifies) the file when the
 * sender gets to it: a sender that streams (DIMSE) calls each loader just
 * before sending that instance, so only one file is in memory at a time
 * whatever the batch size. A loader that rejects fails that instance.
 */
export type LazyOutgoingInstance = Omit<OutgoingInstance, 'bytes'> & {
  bytes: () => Promise<Buffer>;
};

/** Bytes in memory, or a byte range [start, end) of a file read when it is sent. */
export type Piece = Buffer | { path: string; start: number; end: number };

/**
 * A Part 10 file as pieces sent one after another: a stored file as is
 * (one range), or a de-identified header in memory followed by the original
 * Pixel Data element read from the stored file. `datasetOffset` is where the
 * dataset starts (after the meta header: DIMSE sends only the dataset).
 */
export interface Part10Stream {
  pieces: Piece[];
  length: number;
  datasetOffset: number;
}

/** An instance whose bytes are streamed from pieces, never held whole in memory. */
export type StreamedOutgoingInstance = Omit<OutgoingInstance, 'bytes'> & { stream: Part10Stream };

/**
 * A stored file sent as it is, opened only when the sender gets to it: preparing a batch touches no file, and a
 * sender that reads ahead reads it while the receiver answers the instance before. A file that cannot be read
 * fails its own instance.
 */
export type FileOutgoingInstance = Omit<OutgoingInstance, 'bytes'> & { file: string };

export type SendableInstance = OutgoingInstance | LazyOutgoingInstance | StreamedOutgoingInstance | FileOutgoingInstance;

const pieceLength = (p: Piece): number => (Buffer.isBuffer(p) ? p.length : p.end - p.start);

export function part10Stream(pieces: Piece[], datasetOffset: number): Part10Stream {
  return { pieces, datasetOffset, length: pieces.reduce((n, p) => n + pieceLength(p), 0) };
}

/**
 * The bytes of a stream from `from` on, as chunks of at most `chunkBytes`,
 * read from disk only as fast as the caller asks for them (back-pressure is
 * the caller's pace of iteration).
 */
export async function* readPieces(stream: Part10Stream, from = 0, chunkBytes = 1024 * 1024): AsyncGenerator<Buffer> {
  let skip = from;
  for (const p of stream.pieces) {
    const len = pieceLength(p);
    if (skip >= len) {
      skip -= len;
      continue;
    }
    if (Buffer.isBuffer(p)) {
      for (let o = skip; o < p.length; o += chunkBytes) yield p.subarray(o, Math.min(p.length, o + chunkBytes));
    } else if (p.end > p.start + skip) {
      const rs = createReadStream(p.path, { start: p.start + skip, end: p.end - 1, highWaterMark: chunkBytes });
      for await (const chunk of rs) yield chunk as Buffer;
    }
    skip = 0;
  }
}

/** Fills `out` from the file at `position` on; returns the bytes read (fewer only if the file ends first). */
async function readFully(fh: FileHandle, out: Buffer, position: number): Promise<number> {
  let n = 0;
  while (n < out.length) {
    const { bytesRead } = await fh.read(out, n, out.length - n, position + n);
    if (bytesRead === 0) break;
    n += bytesRead;
  }
  return n;
}

/** A file's byte range [start, end) in one buffer, or less if the file ends first: one open, its reads, one close. */
async function readRange(path: string, start: number, end: number): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const out = Buffer.allocUnsafe(end - start);
    const n = await readFully(fh, out, start);
    return n === out.length ? out : out.subarray(0, n);
  } finally {
    await fh.close();
  }
}

/** Reads a whole stream into memory (the prefetch, transcoding, tests): only where a whole instance is wanted. */
export async function streamToBuffer(stream: Part10Stream): Promise<Buffer> {
  const parts: Buffer[] = [];
  let n = 0;
  for (const p of stream.pieces) {
    const c = Buffer.isBuffer(p) ? p : await readRange(p.path, p.start, p.end);
    parts.push(c);
    n += c.length;
  }
  // Buffer.concat would pad a short read with zeros (or cut a long one) to the announced length: a file changed or
  // truncated since it was measured must fail, as sending it streamed does, never go out padded.
  if (n !== stream.length) throw new Error(`the data set source gave ${n} of ${stream.length} bytes (changed or truncated)`);
  // One file range is a fresh buffer and already the whole: no copy. A caller's in-memory piece is still copied,
  // so the result never shares memory with the caller.
  return parts.length === 1 && !stream.pieces.some((p) => Buffer.isBuffer(p)) ? parts[0]! : Buffer.concat(parts, n);
}

/** Where the dataset starts in a Part 10 file: past the preamble, DICM and the group 0002 elements (PS3.10 7.1). */
export function part10DatasetOffset(head: Buffer): number {
  return readFileMeta(head).end;
}

/** A stored file as a stream: its size and where its dataset starts, read from its first bytes. */
export function fileStream(path: string): Promise<Part10Stream> {
  return openForSending(path, 0);
}

/**
 * A stored file ready to send: read whole when it has at most `maxInMemory` bytes (one open, one read, one close),
 * otherwise its size and dataset offset, its bytes streamed from disk as they are sent.
 */
export async function openForSending(path: string, maxInMemory: number): Promise<Part10Stream> {
  const fh = await open(path, 'r');
  try {
    const size = (await fh.stat()).size;
    const whole = size <= maxInMemory;
    const head = Buffer.allocUnsafe(whole ? size : Math.min(size, 64 * 1024));
    const n = await readFully(fh, head, 0);
    if (whole && n !== size) throw new Error(`the file gave ${n} of ${size} bytes (changed or truncated)`);
    const datasetOffset = part10DatasetOffset(head.subarray(0, n));
    return whole ? part10Stream([head], datasetOffset) : { pieces: [{ path, start: 0, end: size }], length: size, datasetOffset };
  } finally {
    await fh.close();
  }
}

/** Why a stored file could not be read, without its path (a spool path is made of UIDs). */
export function readFailure(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return e?.code ? `${e.code}${e.syscall ? ` (${e.syscall})` : ''}` : e instanceof Error ? e.message : String(err);
}

/** The instance's bytes, loading them if needed (a streamed instance is read whole: avoid on large files). */
export async function loadBytes(instance: SendableInstance): Promise<Buffer> {
  if ('stream' in instance) return streamToBuffer(instance.stream);
  if ('file' in instance) return streamToBuffer(await fileStream(instance.file));
  return typeof instance.bytes === 'function' ? instance.bytes() : instance.bytes;
}

/** `transient`: retry later (network, timeout, peer busy); otherwise retrying the same bytes cannot succeed. */
export type SendFailure = { transient: boolean; message: string };

export interface InstanceResult {
  sopInstanceUid: string;
  ok: boolean;
  failure?: SendFailure;
}

export interface DestinationSender {
  readonly id: string;
  /** C-ECHO / a QIDO call; never throws. */
  verify(): Promise<{ ok: boolean; detail: string }>;
  /** Sends a batch; one result per instance, in order; never throws (a connection failure is a transient failure of every instance). */
  send(batch: readonly SendableInstance[]): Promise<InstanceResult[]>;
  close?(): Promise<void>;
}

/** Every instance of the batch failed the same way (connection refused, association rejected, HTTP 503...). */
export function failAll(batch: readonly { sopInstanceUid: string }[], failure: SendFailure): InstanceResult[] {
  return batch.map((i) => ({ sopInstanceUid: i.sopInstanceUid, ok: false, failure: { ...failure } }));
}
