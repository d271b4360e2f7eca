/** The package's version, read from its package.json (for --version and image metadata). */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

let cached: string | undefined;

/** package.json sits 2 folders up from src/util and 3 from dist/src/util; look upwards. */
export function packageVersion(): string {
  if (cached !== undefined) return cached;
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === 'dimoo' && pkg.version) return (cached = pkg.version);
    } catch {
      /* not here; keep climbing */
    }
    dir = path.dirname(dir);
  }
  return '0.0.0';
}
