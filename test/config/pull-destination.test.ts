import { expect } from 'chai';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { ConfigError, buildConfig } from '../../src/config/load.js';
import { createDestinationSender } from '../../src/forwarding/destination.factory.js';
import { silentLogger } from '../helpers/hl7-peers.js';
import { makeTempDir } from '../helpers/tmp.js';

describe('config: type: pull destinations', () => {
  it('takes a pull destination with its defaults, and refuses push-only keys on it', () => {
    const c = buildConfig({ destinations: [{ id: 'pool-pull', type: 'pull', deidentify: true }] });
    expect(c.destinations[0]).to.deep.include({ id: 'pool-pull', type: 'pull', deidentify: true, batchSize: 100 });
    let err: unknown;
    try {
      buildConfig({ destinations: [{ id: 'pool-pull', type: 'pull', url: 'http://pool/dicom-web' }] });
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(ConfigError);
    expect((err as ConfigError).problems.map((p) => p.path).join(' ')).to.include('destinations');
  });

  it('its sender pushes nothing: every instance is reported available, and a stop before one ends the batch there', async () => {
    const [d] = buildConfig({ destinations: [{ id: 'pool-pull', type: 'pull' }] }).destinations;
    const sender = createDestinationSender(d!, { callingAeTitle: 'SECONDREAD', logger: silentLogger });
    expect((await sender.verify()).ok).to.equal(true);
    const inst = (uid: string, stop = false) => ({
      sopClassUid: '1.2.840.10008.5.1.4.1.1.2',
      sopInstanceUid: uid,
      transferSyntaxUid: '1.2.840.10008.1.2.1',
      bytes: Buffer.alloc(0),
      beforeSend: () => (stop ? Promise.reject(new Error('the case was cancelled')) : Promise.resolve()),
    });
    const results = await sender.send([inst('1.1'), inst('1.2', true), inst('1.3')]);
    expect(results.map((r) => [r.sopInstanceUid, r.ok])).to.deep.equal([
      ['1.1', true],
      ['1.2', false],
      ['1.3', false],
    ]);
    expect(results[1]!.failure?.message).to.equal('the case was cancelled');
  });

  it('a stored file handed by path is reported available only if it is there to be fetched', async () => {
    const [d] = buildConfig({ destinations: [{ id: 'pool-pull', type: 'pull' }] }).destinations;
    const sender = createDestinationSender(d!, { callingAeTitle: 'SECONDREAD', logger: silentLogger });
    const tmp = makeTempDir();
    try {
      writeFileSync(path.join(tmp.dir, 'here.dcm'), 'x');
      const inst = (uid: string, file: string) => ({
        sopClassUid: '1.2.840.10008.5.1.4.1.1.2',
        sopInstanceUid: uid,
        transferSyntaxUid: '1.2.840.10008.1.2.1',
        file,
      });
      const results = await sender.send([inst('1.1', path.join(tmp.dir, 'here.dcm')), inst('1.2', path.join(tmp.dir, 'gone.dcm'))]);
      expect(results.map((r) => [r.sopInstanceUid, r.ok])).to.deep.equal([
        ['1.1', true],
        ['1.2', false],
      ]);
      expect(results[1]!.failure).to.deep.equal({ transient: false, message: 'could not read the instance: ENOENT (access)' });
    } finally {
      tmp.cleanup();
    }
  });
});
