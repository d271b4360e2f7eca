/**
 * What a command needs from the outside world, gathered in one object so the
 * commands can run in-process in tests (captured output, a fake model).
 */
import type { Writable } from 'node:stream';
import type { DimooApi, LoadOptions } from '../pipelines/types.js';

export type ModelLoader = (dir: string, opts: LoadOptions) => Promise<DimooApi>;

export interface CliContext {
  stdout: Writable;
  stderr: Writable;
  /** Opens a checkpoint; the real one imports the pipeline lazily (ONNX Runtime is heavy). */
  loadModel: ModelLoader;
  /** Cancelled on Ctrl-C. */
  signal: AbortSignal;
  env: NodeJS.ProcessEnv;
  /** Home directory (the demo caches its checkpoint below it). */
  home: string;
}
