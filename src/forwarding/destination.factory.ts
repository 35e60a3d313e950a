import type { Destination } from '../config/schema.js';
import type { Logger } from '../logger.js';
import type { DestinationSender } from './destination.js';
import { DicomwebDestinationSender } from './dicomweb.destination.js';
import { DimseDestinationSender } from './dimse.destination.js';
import { PullDestinationSender } from './pull.destination.js';

/** The sender of a configured destination (apart from destination.ts, which the senders import, so no cycle). */
export function createDestinationSender(config: Destination, options: { callingAeTitle: string; logger: Logger }): DestinationSender {
  switch (config.type) {
    case 'dimse':
      return new DimseDestinationSender(config, options);
    case 'dicomweb':
      return new DicomwebDestinationSender(config, options);
    case 'pull':
      return new PullDestinationSender(config);
  }
}
