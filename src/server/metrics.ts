/**
 * `/metrics` in Prometheus' text format (prom-client): queue depth and live
 * workers per model (read from the backend at scrape time), jobs by outcome,
 * job run and queue-wait durations and sampling step durations (counted by
 * the API server for the jobs it queued, so several API servers add up
 * without double counting).
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { JobBackend } from './backend.js';
import type { Job } from './jobs.js';

const DURATION_BUCKETS = [0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800];
const STEP_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export class ServerMetrics {
  readonly registry = new Registry();
  private readonly jobs: Counter<'model' | 'task' | 'outcome'>;
  private readonly duration: Histogram<'model' | 'task'>;
  private readonly wait: Histogram<'model' | 'task'>;
  private readonly steps: Histogram<'model' | 'task'>;

  constructor(backend: JobBackend) {
    const registers = [this.registry];
    const snapshot = (): ReturnType<JobBackend['snapshot']> => backend.snapshot().catch(() => []);
    new Gauge({
      name: 'dimoo_queue_waiting_jobs',
      help: 'Jobs waiting for a model worker',
      labelNames: ['model'],
      registers,
      async collect() {
        this.reset();
        for (const s of await snapshot()) this.set({ model: s.model }, s.waiting);
      },
    });
    new Gauge({
      name: 'dimoo_queue_running_jobs',
      help: 'Jobs running on a model worker',
      labelNames: ['model'],
      registers,
      async collect() {
        this.reset();
        for (const s of await snapshot()) this.set({ model: s.model }, s.running);
      },
    });
    new Gauge({
      name: 'dimoo_live_workers',
      help: 'Model workers taking jobs',
      labelNames: ['model'],
      registers,
      async collect() {
        this.reset();
        for (const s of await snapshot()) this.set({ model: s.model }, s.workers);
      },
    });
    this.jobs = new Counter({
      name: 'dimoo_jobs_total',
      help: 'Finished jobs by outcome (succeeded, failed, cancelled)',
      labelNames: ['model', 'task', 'outcome'],
      registers,
    });
    this.duration = new Histogram({
      name: 'dimoo_job_run_seconds',
      help: 'Time a job ran on a model (start to finish)',
      labelNames: ['model', 'task'],
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.wait = new Histogram({
      name: 'dimoo_job_wait_seconds',
      help: 'Time a job waited in the queue before it started',
      labelNames: ['model', 'task'],
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.steps = new Histogram({
      name: 'dimoo_step_seconds',
      help: 'Duration of one sampling step',
      labelNames: ['model', 'task'],
      buckets: STEP_BUCKETS,
      registers,
    });
  }

  /** Counts a job when it finishes. */
  watch(model: string, job: Job): void {
    void job.done.then(() => {
      const l = { model, task: job.task };
      this.jobs.inc({ ...l, outcome: job.status });
      if (job.startedAt !== undefined) {
        this.wait.observe(l, Math.max(0, job.startedAt - job.createdAt) / 1000);
        if (job.finishedAt !== undefined)
          this.duration.observe(l, Math.max(0, job.finishedAt - job.startedAt) / 1000);
      }
      for (const ms of stepMsOf(job.result)) this.steps.observe(l, ms / 1000);
    });
  }
}

function stepMsOf(r: unknown): number[] {
  if (!r || typeof r !== 'object') return [];
  const o = r as { step_ms?: unknown; images?: unknown };
  const out: number[] = [];
  if (Array.isArray(o.step_ms)) for (const x of o.step_ms) if (typeof x === 'number') out.push(x);
  if (Array.isArray(o.images)) for (const im of o.images) out.push(...stepMsOf(im));
  return out;
}
