// A Node worker (concurrency 1) on a queue that taskflow fills; with TF_QUEUES
// (comma-separated), one such worker on each of those queues instead.
//
// What it does with a job depends on the last dot-separated part of its name:
//   add    returns data.x + data.y; without data.x (a chain step) x is the value of
//          its one child
//   gather (a flow parent) returns {label: data.label, sum, keys, failed}: the sum of
//          its children's values (a child's own .sum when it is an object), their
//          keys sorted, and getIgnoredChildrenFailures()
//   total  (a chord callback) returns the sum of its children's values + data.bonus
//   flaky  throws on its first attempt, then returns data.x + data.y
//   boom   always throws "boom <data.x>"
//   slow   waits 50 ms, then returns data.x + data.y
//   report sets progress data.x, logs "y=<data.y>", returns data.x + data.y
// Prints: idle (each time a queue is drained), process {job} when a job
// starts, completed {id, returnvalue}, failed {id, reason, attemptsMade}.
// Stops when its stdin closes, then prints done.
import { Worker, queueName, options, emit, describe, deadline } from './_bull.mjs';

deadline(Number(process.env.TF_DEADLINE_MS || 30000));

function sumOf(values) {
  return Object.values(values).reduce(
    (total, value) => total + (typeof value === 'number' ? value : value.sum), 0);
}

async function processor(job) {
  emit('process', { job: { ...describe(job), queue: job.queueName } });
  const kind = job.name.split('.').pop();
  if (kind === 'gather') {
    const values = (await job.getChildrenValues()) ?? {};
    return {
      label: job.data.label, sum: sumOf(values), keys: Object.keys(values).sort(),
      failed: await job.getIgnoredChildrenFailures(),
    };
  }
  if (kind === 'total') {
    return sumOf((await job.getChildrenValues()) ?? {}) + (job.data.bonus ?? 0);
  }
  if (kind === 'add' && job.data.x === undefined) {
    const [previous] = Object.values((await job.getChildrenValues()) ?? {});
    return previous + job.data.y;
  }
  if (kind === 'boom') {
    throw new Error(`boom ${job.data.x}`);
  }
  if (kind === 'report') {
    await job.updateProgress(job.data.x);
    await job.log(`y=${job.data.y}`);
  }
  if (kind === 'slow') {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  if (kind === 'flaky' && job.attemptsMade === 0) {
    throw new Error('flaky: first attempt fails');
  }
  return job.data.x + job.data.y;
}

const queues = (process.env.TF_QUEUES || queueName).split(',');
const workers = queues.map((name) => {
  const worker = new Worker(name, processor, {
    ...options, concurrency: 1, name: 'node-interop-worker',
  });
  worker.on('drained', () => emit('idle', { queue: name }));
  worker.on('completed', (job, returnvalue) => emit('completed', { id: job.id, returnvalue }));
  worker.on('failed', (job, err) => emit('failed', {
    id: job?.id, reason: err.message, attemptsMade: job?.attemptsMade,
  }));
  worker.on('error', (err) => emit('error', { message: String(err?.stack ?? err) }));
  return worker;
});
await Promise.all(workers.map((worker) => worker.waitUntilReady()));
emit('ready');

process.stdin.resume();
process.stdin.on('end', async () => {
  await Promise.all(workers.map((worker) => worker.close()));
  emit('done');
  process.exit(0);
});
