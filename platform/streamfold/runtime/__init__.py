"""The write side at run time: workers, the transactions they commit, what they run.

- :mod:`~streamfold.runtime.topology`: topology files (which aggregates a deployment runs);
- :mod:`~streamfold.runtime.settings`: worker settings;
- :mod:`~streamfold.runtime.processor`: the ``Processor`` seam and its ``Outbox``;
- :mod:`~streamfold.runtime.command_processor`: one command, start to finish (aggregates);
- :mod:`~streamfold.runtime.checkpoint`: the transaction: send, commit, abort, rewind, fencing;
- :mod:`~streamfold.runtime.worker`: the loop, its assignments and its lifecycle;
- :mod:`~streamfold.runtime.dead_letters`: reading and replaying dead letters;
- :mod:`~streamfold.runtime.process`: a worker as a child process.

The wire contract (headers, results) is :mod:`streamfold.contracts`; stores, their life cycle
and their restore are :mod:`streamfold.state`.
"""
