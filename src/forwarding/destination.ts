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

/**
 * The same, with a loader that reads (and de-identifies) the file when the
 * sender gets to it: a sender that streams (DIMSE) calls each loader just
 * before sending that instance, so only one file is in memory at a time
 * whatever the batch size. A loader that rejects fails that instance.
 */
export type LazyOutgoingInstance = Omit<OutgoingInstance, 'bytes'> & {
  bytes: () => Promise<Buffer>;
  /**
   * Called by a streaming sender just before this instance goes on the wire
   * (after the previous one was answered); a rejection stops the batch there,
   * the association released, the rest reported not sent (a cancelled case).
   */
  beforeSend?: () => Promise<void>;
};

export type SendableInstance = OutgoingInstance | LazyOutgoingInstance;

/** The instance's bytes, loading them if needed. */
export function loadBytes(instance: SendableInstance): Promise<Buffer> {
  return typeof instance.bytes === 'function' ? instance.bytes() : Promise.resolve(instance.bytes);
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

export function createDestinationSender(config: Destination, options: { callingAeTitle: string; logger: Logger }): DestinationSender {
  switch (config.type) {
    case 'dimse':
      return new DimseDestinationSender(config, options);
    case 'dicomweb':
      return new DicomwebDestinationSender(config, options);
  }
}

/** Every instance of the batch failed the same way (connection refused, association rejected, HTTP 503...). */
export function failAll(batch: readonly { sopInstanceUid: string }[], failure: SendFailure): InstanceResult[] {
  return batch.map((i) => ({ sopInstanceUid: i.sopInstanceUid, ok: false, failure: { ...failure } }));
}
