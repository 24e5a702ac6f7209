// Shared by the scripts of tests/test_interop_node.py.
//
// The npm packages live outside the repository, in the folder the test
// installed them into (TF_NODE_DIR); the test passes the Redis port, key
// prefix and queue name in the environment. Every script talks by printing
// one JSON object per line on stdout.
import { createRequire } from 'node:module';
import path from 'node:path';

const required = ['TF_NODE_DIR', 'TF_REDIS_PORT', 'TF_PREFIX', 'TF_QUEUE'];
for (const name of required) {
  if (!process.env[name]) {
    throw new Error(`${name} is not set`);
  }
}

const require = createRequire(path.join(process.env.TF_NODE_DIR, 'package.json'));
const bullmq = require('bullmq');

export const { Queue, QueueEvents, Worker, Job, FlowProducer } = bullmq;
export const bullmqVersion = require('bullmq/package.json').version;

export const queueName = process.env.TF_QUEUE;
export const options = {
  prefix: process.env.TF_PREFIX,
  connection: {
    host: '127.0.0.1',
    port: Number(process.env.TF_REDIS_PORT),
    maxRetriesPerRequest: null,
  },
};

export function emit(event, fields = {}) {
  process.stdout.write(JSON.stringify({ event, ...fields }) + '\n');
}

// A job as the Node side sees it, for the test to compare with taskflow's view.
export function describe(job) {
  return {
    id: job.id,
    name: job.name,
    data: job.data,
    opts: job.opts,
    attemptsMade: job.attemptsMade,
    attemptsStarted: job.attemptsStarted,
    progress: job.progress,
    returnvalue: job.returnvalue ?? null,
    failedReason: job.failedReason ?? null,
    stacktrace: job.stacktrace,
    processedBy: job.processedBy ?? null,
    priority: job.priority,
    delay: job.delay,
    timestamp: job.timestamp,
    processedOn: job.processedOn ?? null,
    finishedOn: job.finishedOn ?? null,
  };
}

// Stop the script (and fail it) if the test's own timeout somehow doesn't.
export function deadline(ms) {
  const timer = setTimeout(() => {
    emit('timeout', { ms });
    process.exit(3);
  }, ms);
  timer.unref();
}
