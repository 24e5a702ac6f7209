// One-off looks and changes through a Node Queue: `node admin.mjs COMMAND`.
//   counts      print counts {counts} (queue.getJobCounts())
//   pause       queue.pause(), then print paused {paused}
//   resume      queue.resume(), then print paused {paused}
//   is-paused   print paused {paused}
//   workers     print workers {names} (the raw client names of queue.getWorkers())
//   global-concurrency N          queue.setGlobalConcurrency(N), print ok
//   global-rate-limit MAX MS      queue.setGlobalRateLimit(MAX, MS), print ok
//   rate-limit-ttl MAX            print ttl {ms} (queue.getRateLimitTtl(MAX))
//   stalled-check MAX             two rounds of a Node worker's stalled check (the
//                                 first marks active jobs, the second moves those
//                                 without a lock), maxStalledCount MAX; print ok
import { Queue, Worker, queueName, options, emit, deadline, bullmqVersion }
  from './_bull.mjs';

deadline(Number(process.env.TF_DEADLINE_MS || 15000));
const queue = new Queue(queueName, options);
await queue.waitUntilReady();
const command = process.argv[2];
if (command === 'counts') {
  emit('counts', { counts: await queue.getJobCounts(), version: bullmqVersion });
} else if (command === 'workers') {
  emit('workers', { names: (await queue.getWorkers()).map((w) => w.rawname ?? w.name) });
} else if (command === 'global-concurrency') {
  await queue.setGlobalConcurrency(Number(process.argv[3]));
  emit('ok');
} else if (command === 'global-rate-limit') {
  await queue.setGlobalRateLimit(Number(process.argv[3]), Number(process.argv[4]));
  emit('ok');
} else if (command === 'rate-limit-ttl') {
  emit('ttl', { ms: await queue.getRateLimitTtl(Number(process.argv[3])) });
} else if (command === 'stalled-check') {
  const worker = new Worker(queueName, null, {
    ...options, autorun: false, stalledInterval: 50, maxStalledCount: Number(process.argv[3]),
  });
  await worker.waitUntilReady();
  await worker.moveStalledJobsToWait();
  await new Promise((resolve) => setTimeout(resolve, 100));  // the check's 50 ms lock
  await worker.moveStalledJobsToWait();
  await worker.close();
  emit('ok');
} else if (command === 'pause' || command === 'resume' || command === 'is-paused') {
  if (command === 'pause') {
    await queue.pause();
  } else if (command === 'resume') {
    await queue.resume();
  }
  emit('paused', { paused: await queue.isPaused() });
} else {
  emit('error', { message: `unknown command ${command}` });
  await queue.close();
  process.exit(2);
}
await queue.close();
process.exit(0);
