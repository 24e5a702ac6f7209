// A Node worker (concurrency 1) on a queue that taskflow fills.
//
// What it does with a job depends on the last dot-separated part of its name:
//   add    returns data.x + data.y
//   flaky  throws on its first attempt, then returns data.x + data.y
//   boom   always throws "boom <data.x>"
//   slow   waits 50 ms, then returns data.x + data.y
//   report sets progress data.x, logs "y=<data.y>", returns data.x + data.y
// Prints: idle (each time the queue is drained), process {job} when a job
// starts, completed {id, returnvalue}, failed {id, reason, attemptsMade}.
// Stops when its stdin closes, then prints done.
import { Worker, queueName, options, emit, describe, deadline } from './_bull.mjs';

deadline(Number(process.env.TF_DEADLINE_MS || 30000));

async function processor(job) {
  emit('process', { job: describe(job) });
  const kind = job.name.split('.').pop();
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

const worker = new Worker(queueName, processor, {
  ...options, concurrency: 1, name: 'node-interop-worker',
});
worker.on('drained', () => emit('idle'));
worker.on('completed', (job, returnvalue) => emit('completed', { id: job.id, returnvalue }));
worker.on('failed', (job, err) => emit('failed', {
  id: job?.id, reason: err.message, attemptsMade: job?.attemptsMade,
}));
worker.on('error', (err) => emit('error', { message: String(err?.stack ?? err) }));
await worker.waitUntilReady();
emit('ready');

process.stdin.resume();
process.stdin.on('end', async () => {
  await worker.close();
  emit('done');
  process.exit(0);
});
