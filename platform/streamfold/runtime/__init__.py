"""The write side at run time: aggregate workers and what they read and write.

- :mod:`~streamfold.runtime.topology`: topology files (which aggregates a deployment runs);
- :mod:`~streamfold.runtime.settings`: worker settings;
- :mod:`~streamfold.runtime.headers`: the header contract;
- :mod:`~streamfold.runtime.processor`: one command, start to finish;
- :mod:`~streamfold.runtime.worker`: the loop, its transactions and rebalances;
- :mod:`~streamfold.runtime.restore`: stores rebuilt from their changelogs;
- :mod:`~streamfold.runtime.results`: the command result record;
- :mod:`~streamfold.runtime.dead_letters`: reading and replaying dead letters;
- :mod:`~streamfold.runtime.process`: a worker as a child process.
"""
