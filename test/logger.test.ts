import { Writable } from 'node:stream';
import { expect } from 'chai';
import winston from 'winston';
import { createLogger, hashId, phiFields } from '../src/logger.js';

function capture(level: string, phi = false): { logger: winston.Logger; lines: string[] } {
  const lines: string[] = [];
  const logger = createLogger({ level, format: 'json', phi });
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
    const { logger, lines } = capture('debug', true);
    const study = '2.25.69360334498088520568250704887702343618';
    logger.warn(`could not read instances/${study}/1.2.3.4.5.6/x.dcm`, { error: `ENOENT ${study}`, sopClass: '1.2.840.10008.5.1.4.1.1.2' });
    logger.debug(`debug keeps ${study}`);
    expect(lines[0]).to.not.include(study);
    expect(lines[0]).to.include(`uid#${hashId(study)}`);
    expect(lines[0]).to.include('1.2.840.10008.5.1.4.1.1.2');
    expect(lines[1]).to.include(study);
  });

  it('with log.phi off (the default) drops PHI fields and hashes UIDs even at debug', () => {
    const { logger, lines } = capture('debug');
    const study = '2.25.69360334498088520568250704887702343618';
    const child = logger.child({ component: 'hl7' });
    child.debug(`linked ${study}`, { controlId: 'C1', ...phiFields({ patientId: 'PID-SECRET-1', accessionNumbers: ['ACC-SECRET-1'] }) });
    child.info('message', { controlId: 'C2', patientId: 'PID-SECRET-2', accessionNumber: 'ACC-SECRET-2', reportText: 'secret words', patientName: 'Doe^Jane' });
    expect(lines).to.have.length(2);
    for (const l of lines) expect(l).to.not.match(/SECRET|secret words|Doe\^Jane/);
    expect(lines[0]).to.not.include(study);
    expect(lines[0]).to.include(`uid#${hashId(study)}`);
    expect(JSON.parse(lines[0]!)).to.include({ controlId: 'C1', component: 'hl7' });
    expect(JSON.parse(lines[1]!)).to.include({ controlId: 'C2' });
  });

  it('with log.phi on writes PHI fields at debug only, never at info', () => {
    const { logger, lines } = capture('debug', true);
    logger.debug('linked', { controlId: 'C1', ...phiFields({ patientId: 'PID-SECRET-1' }) });
    logger.info('linked', { controlId: 'C2', ...phiFields({ patientId: 'PID-SECRET-2' }), accessionNumber: 'ACC-SECRET-2' });
    expect((JSON.parse(lines[0]!) as { phi: { patientId: string } }).phi.patientId).to.equal('PID-SECRET-1');
    expect(lines[1]).to.not.include('SECRET');
  });
});
