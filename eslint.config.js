// Lint: typescript-eslint's recommended rules plus the type-checked rules that catch real bugs in async server
// code (promises not awaited or passed where a callback is expected), and import cycles (import-x no-cycle).
// Formatting is prettier's (`npm run format:check`), so no stylistic rules here.
import tseslint from 'typescript-eslint';
import importX from 'eslint-plugin-import-x';
import { createTypeScriptImportResolver } from 'eslint-import-resolver-typescript';

const sqlBoundary = 'SQL lives in *.repository.ts (services and routes call repositories)';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'data/**', 'src/http/console/vendor/**'] },
  ...tseslint.configs.recommended,
  {
    files: ['src/**/*.ts', 'test/**/*.ts', 'scripts/**/*.ts'],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    plugins: { 'import-x': importX },
    // Without the TypeScript extensions and a resolver that maps './x.js' to x.ts, no-cycle never follows an import.
    settings: {
      ...importX.flatConfigs.typescript.settings,
      'import-x/resolver-next': [createTypeScriptImportResolver({ project: './tsconfig.json' })],
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: { arguments: false, attributes: false } }],
      '@typescript-eslint/await-thenable': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      '@typescript-eslint/no-explicit-any': 'off',
      'import-x/no-cycle': ['error', { ignoreExternal: true }],
    },
  },
  {
    // The SQL boundary: query builders, `sql` templates and raw statements only in repositories (and src/db: the
    // connection, the dialect differences, migrations). Services and routes call repositories. test/ and scripts/
    // may query directly (fixtures, assertions, benches), so this block covers src/ only.
    files: ['src/**/*.ts'],
    ignores: ['src/**/*.repository.ts', 'src/db/**'],
    rules: {
      'no-restricted-syntax': [
        'error',
        {
          selector:
            'CallExpression[callee.type="MemberExpression"][callee.property.name=/^(selectFrom|insertInto|updateTable|deleteFrom|replaceInto|mergeInto)$/]',
          message: sqlBoundary,
        },
        { selector: 'TaggedTemplateExpression[tag.name="sql"]', message: sqlBoundary },
        // sql.raw / sql.lit / sql.ref / sql.join ..., and hand-written statements compiled once.
        { selector: 'CallExpression[callee.type="MemberExpression"][callee.object.name="sql"]', message: sqlBoundary },
        { selector: 'CallExpression[callee.object.name="CompiledQuery"][callee.property.name="raw"]', message: sqlBoundary },
      ],
    },
  },
  {
    // Ambient declarations of untyped packages name classes that only types use.
    files: ['src/types/*.d.ts'],
    rules: { '@typescript-eslint/no-unused-vars': 'off' },
  },
  {
    // Tests use chai's property assertions (`expect(x).to.be.true`) and non-null assertions on fixtures.
    files: ['test/**/*.ts'],
    rules: { '@typescript-eslint/no-unused-expressions': 'off', '@typescript-eslint/no-non-null-assertion': 'off' },
  },
);
