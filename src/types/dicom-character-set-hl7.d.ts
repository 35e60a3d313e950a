// What src/hl7/charset.ts uses of dicom-character-set (the package ships no typings).
declare module 'dicom-character-set' {
  export function convertBytes(specificCharacterSet: string, bytes: Uint8Array, options: { vr: string }): string;
}
