// A Node producer: adds jobs, then waits for each to finish (run by a
// taskflow worker) through QueueEvents, and reads them back with Job.fromId.
//
// TF_JOBS: JSON list of groups; a group is a list of {key, name, data, opts}.
// A group of one is added with queue.add, a larger one with queue.addBulk
// (one MULTI, so its jobs appear together).
// Prints: added {key, id}, then finished {key, id, outcome, value, job, logs},
// then events {byJob, returnvalues} (what QueueEvents saw), then done.
import { Queue, QueueEvents, Job, queueName, options, emit, describe, deadline }
  from './_bull.mjs';

deadline(Number(process.env.TF_DEADLINE_MS || 30000));
const groups = JSON.parse(process.env.TF_JOBS);
const waitMs = Number(process.env.TF_WAIT_MS || 15000);

const queue = new Queue(queueName, options);
// From the stream's start ('$' would miss what happens before the first XREAD);
// each test has a queue of its own.
const events = new QueueEvents(queueName, { ...options, lastEventId: '0-0' });
const seen = {};
const returnvalues = {};
events.on('completed', (args) => {
  returnvalues[args.jobId] = args.returnvalue;
});
for (const name of ['added', 'waiting', 'delayed', 'active', 'completed', 'failed',
                    'retries-exhausted']) {
  events.on(name, (args) => {
    (seen[args.jobId] ??= []).push(name);
  });
}
await queue.waitUntilReady();
await events.waitUntilReady();

const added = [];
for (const group of groups) {
  let jobs;
  if (group.length === 1) {
    const [spec] = group;
    jobs = [await queue.add(spec.name, spec.data, spec.opts ?? {})];
  } else {
    jobs = await queue.addBulk(group.map((spec) => ({
      name: spec.name, data: spec.data, opts: spec.opts ?? {},
    })));
  }
  group.forEach((spec, i) => {
    added.push({ key: spec.key, job: jobs[i] });
    emit('added', { key: spec.key, id: jobs[i].id });
  });
}

for (const { key, job } of added) {
  let outcome;
  let value;
  try {
    value = await job.waitUntilFinished(events, waitMs);
    outcome = 'completed';
  } catch (err) {
    outcome = 'failed';
    value = err.message;
  }
  const stored = await Job.fromId(queue, job.id);
  const { logs } = await queue.getJobLogs(job.id);
  emit('finished', { key, id: job.id, outcome, value: value ?? null,
                     job: stored ? describe(stored) : null, logs });
}

// The events of the last job may still be on their way to QueueEvents.
await new Promise((resolve) => setTimeout(resolve, 200));
emit('events', { byJob: seen, returnvalues });
await events.close();
await queue.close();
emit('done');
process.exit(0);
