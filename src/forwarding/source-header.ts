import { open } from 'node:fs/promises';
import dcmjs, { type DicomDataDict } from 'dcmjs';
import { hasPart10Prefix } from '../dicom/part10.js';
import { TransferSyntax } from '../dicom/uids.js';
import { ErrorCode, GatewayError } from '../errors.js';

const PIXEL_DATA = '7FE00010';
const DEFLATE = TransferSyntax.deflate;

/** The source attributes the exclusion decision and the verifier read: the header before Pixel Data, never the pixels. */
export interface SourceHeader {
  dict: DicomDataDict;
  transferSyntaxUid: string;
  sopClassUid: string;
  seriesDescription: string | null;
}

function firstString(dict: DicomDataDict, tag: string): string | null {
  const v = dict[tag]?.Value?.[0];
  return typeof v === 'string' && v.trim() !== '' ? v.replace(/[\0 ]+$/, '') : null;
}

/**
 * Reads a stored Part 10 file's header from a growing prefix (128 KiB, then
 * four times more) until dcmjs reaches Pixel Data or the file ends, so a
 * 2.5 GiB instance costs one small read. dcmjs does not throw on a buffer that
 * ends early: reaching (7FE0,0010) or the end of the file is what says the
 * header is complete. A deflated dataset is read whole (it cannot be cut).
 */
export async function readSourceHeader(absPath: string): Promise<SourceHeader> {
  const fh = await open(absPath, 'r');
  try {
    const size = (await fh.stat()).size;
    let want = Math.min(size, 128 * 1024);
    for (;;) {
      const buf = Buffer.allocUnsafe(want);
      const { bytesRead } = await fh.read(buf, 0, want, 0);
      const bytes = buf.subarray(0, bytesRead);
      if (!hasPart10Prefix(bytes)) throw new GatewayError(ErrorCode.unreadableData, 'stored file is not a DICOM Part 10 file');
      const whole = bytesRead >= size;
      let parsed: InstanceType<typeof dcmjs.data.DicomDict> | undefined;
      try {
        const ab = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length) as ArrayBuffer;
        parsed = dcmjs.data.DicomMessage.readFile(ab, { untilTag: PIXEL_DATA, includeUntilTagValue: false, ignoreErrors: true });
      } catch (err) {
        if (whole) throw new GatewayError(ErrorCode.unreadableData, `stored file cannot be parsed: ${(err as Error).message}`);
      }
      const ts = parsed ? firstString(parsed.meta, '00020010') : null;
      const complete = whole || (parsed !== undefined && PIXEL_DATA in parsed.dict && ts !== DEFLATE);
      if (parsed && complete) {
        const dict = parsed.dict;
        return {
          dict,
          transferSyntaxUid: ts ?? '',
          sopClassUid: firstString(dict, '00080016') ?? firstString(parsed.meta, '00020002') ?? '',
          seriesDescription: firstString(dict, '0008103E'),
        };
      }
      want = ts === DEFLATE ? size : Math.min(size, want * 4);
    }
  } finally {
    await fh.close();
  }
}
