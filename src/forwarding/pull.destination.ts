import type { Destination } from '../config/schema.js';
import { access, constants } from 'node:fs/promises';
import { readFailure, type DestinationSender, type InstanceResult, type SendableInstance } from './destination.js';

/**
 * A `type: pull` destination: the pool fetches the study over our DICOMweb
 * service, so "sending" an instance is making it available. Forwarding still
 * prepares every instance exactly as for a push (risk rules, de-identification,
 * pseudonyms stored, verifier): what it would exclude stays excluded, and the
 * instances it marks sent are the ones /dicom-web serves to the case's reader.
 * Once all are prepared the delivery completes like a push and the case awaits its read.
 */
export class PullDestinationSender implements DestinationSender {
  readonly id: string;

  constructor(config: Extract<Destination, { type: 'pull' }>) {
    this.id = config.id;
  }

  verify(): Promise<{ ok: boolean; detail: string }> {
    return Promise.resolve({ ok: true, detail: 'pull destination: the pool fetches over /dicom-web' });
  }

  async send(batch: readonly SendableInstance[]): Promise<InstanceResult[]> {
    const out: InstanceResult[] = [];
    for (const instance of batch) {
      try {
        // The same stop check a streaming sender makes before each instance (a cancelled case, a held study).
        await instance.beforeSend?.();
      } catch (err) {
        for (const rest of batch.slice(out.length))
          out.push({ sopInstanceUid: rest.sopInstanceUid, ok: false, failure: { transient: true, message: (err as Error).message } });
        return out;
      }
      if ('file' in instance) {
        // Nothing is pushed, but what is marked available must be there to be fetched.
        try {
          await access(instance.file, constants.R_OK);
        } catch (err) {
          out.push({
            sopInstanceUid: instance.sopInstanceUid,
            ok: false,
            failure: { transient: false, message: `could not read the instance: ${readFailure(err)}` },
          });
          continue;
        }
      }
      out.push({ sopInstanceUid: instance.sopInstanceUid, ok: true });
    }
    return out;
  }
}
