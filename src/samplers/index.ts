/**
 * The samplers: pure functions and state machines over token ids and logits
 * (no model, no I/O). See each module's header for semantics.
 */
export * from './prng.js';
export * from './f32.js';
export * from './schedule.js';
export * from './guidance.js';
export * from './maskgit.js';
export * from './mlcache.js';
export * from './text-blockwise.js';
