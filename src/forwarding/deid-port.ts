import { deidentifyFile } from './deidentify.js';
import type { DeidPort } from './forwarding.service.js';
import type { Hl7Identifiers } from './hl7-identifiers.js';
import { instanceRisk, riskInputFromDataset } from './instance-risk.js';
import { KnownIdentifiers } from './known-identifiers.js';

/** The study's HL7 identifiers as the verifier's needles (built once per delivery attempt: the object is reused). */
const cache = new WeakMap<Hl7Identifiers, KnownIdentifiers>();
export function knownFromHl7(h: Hl7Identifiers): KnownIdentifiers {
  let k = cache.get(h);
  if (!k) {
    k = new KnownIdentifiers();
    for (const n of h.personNames) k.addPersonName(n.name, n.kind);
    for (const i of h.ids) k.addId(i.id, i.kind);
    for (const d of h.dates) k.addDate(d.date, d.kind);
    for (const t of h.texts) k.addText(t.text, t.kind);
    cache.set(h, k);
  }
  return k;
}

/**
 * Forwarding's view of the de-identification engine: the risk rules on the
 * source header, and the streaming de-identifier, which also verifies its own
 * output against the source's identifiers plus the study's HL7 ones.
 */
export const deidPort: DeidPort = {
  risk: (header) => instanceRisk(riskInputFromDataset(header.dict)),
  async deidentify(absPath, pseudonyms, o) {
    const r = await deidentifyFile(absPath, pseudonyms, {
      retainLongitudinalModifiedDates: o.retainLongitudinalModifiedDates,
      retainPatientCharacteristics: o.retainPatientCharacteristics,
      safePrivateTags: o.safePrivateTags,
      releasedByReviewer: o.releasedByReviewer,
      knownIdentifiers: knownFromHl7(o.hl7),
    });
    return { prefix: r.prefix, pixel: r.pixel, verification: r.verification };
  },
};
