// dicom-character-set ships no typings: only what this project calls is declared here.
declare module 'dicom-character-set' {
  /** Decodes DICOM text bytes per a Specific Character Set value (backslash-separated, ISO 2022 escapes handled). */
  export function convertBytes(specificCharacterSet: string | undefined, bytes: Uint8Array, options?: { vr?: string }): string;
}
