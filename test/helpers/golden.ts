/**
 * Locates the shared golden reference data. Tests run from the repo root, and
 * the golden folder sits beside the repo (../shared/golden).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

export function goldenDir(): string {
  return path.resolve(process.cwd(), '../shared/golden');
}

/** The golden tiny checkpoint folder. */
export function goldenCheckpointDir(): string {
  return path.join(goldenDir(), 'dimoo-tiny');
}

/** A case file path, e.g. goldenCase('forward.json'). */
export function goldenCase(name: string): string {
  return path.join(goldenDir(), 'cases', 'dimoo-tiny', name);
}

export function readGoldenJson<T = unknown>(name: string): T {
  return JSON.parse(fs.readFileSync(goldenCase(name), 'utf8')) as T;
}
