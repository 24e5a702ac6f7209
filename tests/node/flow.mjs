// Flows through Node's FlowProducer and Job getters: `node flow.mjs COMMAND`.
//   add      TF_FLOWS: JSON list of trees {name, queueName, data, opts, children};
//            flowProducer.add() for each, in order; prints added {index, tree} where
//            tree is {id, key, queue, name, children: [tree, ...]}.
//   inspect  TF_JOBS: JSON list of {queue, id}; prints job {queue, id, state,
//            returnvalue, failedReason, childrenValues, ignored, dependencies} for
//            each: Job.fromId, getState, getChildrenValues, getIgnoredChildrenFailures,
//            getDependencies (processed, unprocessed, failed, ignored).
// Then prints done.
import { FlowProducer, Queue, Job, options, emit, deadline } from './_bull.mjs';

deadline(Number(process.env.TF_DEADLINE_MS || 15000));
const command = process.argv[2];

function treeOf(node) {
  return {
    id: node.job.id,
    key: `${node.job.queueQualifiedName}:${node.job.id}`,
    queue: node.job.queueName,
    name: node.job.name,
    children: (node.children ?? []).map(treeOf),
  };
}

if (command === 'add') {
  const producer = new FlowProducer(options);
  const flows = JSON.parse(process.env.TF_FLOWS);
  for (const [index, flow] of flows.entries()) {
    emit('added', { index, tree: treeOf(await producer.add(flow)) });
  }
  await producer.close();
} else if (command === 'inspect') {
  const queues = new Map();
  for (const { queue, id } of JSON.parse(process.env.TF_JOBS)) {
    if (!queues.has(queue)) {
      queues.set(queue, new Queue(queue, options));
    }
    const job = await Job.fromId(queues.get(queue), id);
    if (!job) {
      emit('job', { queue, id, state: null });
      continue;
    }
    emit('job', {
      queue,
      id,
      state: await job.getState(),
      returnvalue: job.returnvalue ?? null,
      failedReason: job.failedReason ?? null,
      childrenValues: (await job.getChildrenValues()) ?? {},
      ignored: await job.getIgnoredChildrenFailures(),
      dependencies: await job.getDependencies(),
    });
  }
  for (const queue of queues.values()) {
    await queue.close();
  }
} else {
  emit('error', { message: `unknown command ${command}` });
  process.exit(2);
}
emit('done');
process.exit(0);
