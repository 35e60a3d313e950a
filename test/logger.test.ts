import { Writable } from 'node:stream';
import { expect } from 'chai';
import winston from 'winston';
import { createLogger, hashId } from '../src/logger.js';

function capture(level: string): { logger: winston.Logger; lines: string[] } {
  const lines: string[] = [];
  const logger = createLogger({ level, format: 'json' });
  logger.clear();
  logger.add(
    new winston.transports.Stream({
      stream: new Writable({
        write(chunk: Buffer, _e, cb) {
          lines.push(chunk.toString());
          cb();
        },
      }),
    }),
  );
  return { logger, lines };
}

describe('logger', () => {
  it('hashes study/series/instance UIDs in messages and fields above debug, and keeps DICOM-defined UIDs', () => {
    const { logger, lines } = capture('debug');
    const study = '2.25.69360334498088520568250704887702343618';
    logger.warn(`could not read instances/${study}/1.2.3.4.5.6/x.dcm`, { error: `ENOENT ${study}`, sopClass: '1.2.840.10008.5.1.4.1.1.2' });
    logger.debug(`debug keeps ${study}`);
    expect(lines[0]).to.not.include(study);
    expect(lines[0]).to.include(`uid#${hashId(study)}`);
    expect(lines[0]).to.include('1.2.840.10008.5.1.4.1.1.2');
    expect(lines[1]).to.include(study);
  });
});
