/**
 * dimoo: a TypeScript runtime for Lumina-DiMOO on ONNX Runtime.
 *
 *   import { Dimoo } from 'dimoo';
 *   const dimoo = await Dimoo.load('/models/Lumina-DiMOO');
 *   const { image, codes } = await dimoo.generate({ prompt: 'a red cat', width: 512, height: 512 });
 */
export { Dimoo } from './pipelines/dimoo.js';
export type * from './pipelines/types.js';
export { DEFAULTS, LIMITS } from './pipelines/validate.js';
export { DimooError, isDimooError } from './errors.js';
export { openCheckpoint } from './checkpoint/folder.js';
export type { Checkpoint } from './checkpoint/layout.js';
export { inspectCheckpoint } from './tools/inspect.js';
export { writeRandomCheckpoint } from './tools/random-checkpoint.js';
export { writeRandomVq } from './tools/random-vq.js';
export { Transformer } from './models/transformer.js';
export { VqModel } from './models/vq-model.js';
export { TextTokenizer } from './models/tokenizer.js';
export * as samplers from './samplers/index.js';
// The default choice for applications: the same API on a worker thread, so the
// event loop stays free (ONNX Runtime's `run` blocks the thread that calls it).
export { WorkerDimoo, type WorkerDimooOptions } from './runtime/worker-dimoo.js';
export { Trainer, type TrainOptions } from './training/trainer.js';
export type { StepReport, TrainerConfig } from './training/loop.js';
export { TRAIN_DEFAULTS } from './training/loop.js';
