import type { Destination } from '../config/schema.js';
import type { Logger } from '../logger.js';
import { DicomwebDestinationSender } from './dicomweb.destination.js';
import { DimseDestinationSender } from './dimse.destination.js';

/** One instance to forward, exactly as stored (or as de-identified). */
export interface OutgoingInstance {
  sopClassUid: string;
  sopInstanceUid: string;
  transferSyntaxUid: string;
  /** complete Part 10 file */
  bytes: Buffer;
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
  send(batch: OutgoingInstance[]): Promise<InstanceResult[]>;
  close?(): Promise<void>;
}

export function createDestinationSender(config: Destination, options: { callingAeTitle: string; logger: Logger }): DestinationSender {
  switch (config.type) {
    case 'dimse':
      return new DimseDestinationSender(config, options);
    case 'dicomweb':
      return new DicomwebDestinationSender(config, options);
  }
}

/** Every instance of the batch failed the same way (connection refused, association rejected, HTTP 503...). */
export function failAll(batch: readonly OutgoingInstance[], failure: SendFailure): InstanceResult[] {
  return batch.map((i) => ({ sopInstanceUid: i.sopInstanceUid, ok: false, failure: { ...failure } }));
}
