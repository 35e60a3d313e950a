/** Builders shared by the rule tests: a valid input with overridable parts, and rules from YAML text. */
import { parse } from 'yaml';
import { compileRuleSet, evaluate, type CompileOptions } from '../../src/rules/evaluate.js';
import { validateRuleSet } from '../../src/rules/rule.schema.js';
import type { Decision, EvaluationInput, OrderInput, ReportVersion, Rule, StudyInput } from '../../src/rules/rule.types.js';

export const SECRET = 'test-sampling-secret';

export function rulesFromYaml(yamlText: string): Rule[] {
  const result = validateRuleSet(parse(yamlText));
  if (!result.ok) throw new Error(`invalid test rules: ${JSON.stringify(result.errors)}`);
  return result.rules;
}

export function engine(
  yamlText: string,
  options: CompileOptions = { samplingSecret: SECRET },
): (input: Partial<EvaluationInput> & { order?: OrderInput }) => Decision {
  const compiled = compileRuleSet(rulesFromYaml(yamlText), options);
  return (partial) => evaluate(compiled, makeInput(partial));
}

export function makeStudy(overrides: Partial<StudyInput> = {}): StudyInput {
  return {
    studyInstanceUid: '1.2.826.0.1.3680043.8.498.1',
    accessionNumber: 'ACC1',
    patientId: 'P1',
    modalities: ['CT'],
    bodyParts: ['CHEST'],
    studyDescription: 'CT CHEST WITH CONTRAST',
    patientAgeYears: 64,
    callingAe: 'PACS1',
    ...overrides,
  };
}

export function makeOrder(overrides: Partial<OrderInput> = {}): OrderInput {
  return { accessionNumber: 'ACC1', procedureCode: 'CTCHESTC', procedureText: 'CT chest with contrast', diagnoses: [], ...overrides };
}

export function finalReport(text: string, overrides: Partial<ReportVersion> = {}): ReportVersion {
  return { status: 'F', text, radiologistId: 'dr-smith', observedAt: new Date('2024-03-12T10:00:00Z'), ...overrides };
}

export function makeInput(partial: Partial<EvaluationInput> = {}): EvaluationInput {
  return {
    study: makeStudy(),
    reports: [finalReport('FINDINGS: Lungs are clear. No pleural effusion.\nIMPRESSION: No acute cardiopulmonary abnormality.')],
    aiResults: [],
    manualRequests: [],
    now: new Date('2024-03-12T12:00:00Z'),
    ...partial,
  };
}

export function ruleIds(d: Decision): string[] {
  return d.reasons.map((r) => r.ruleId);
}
