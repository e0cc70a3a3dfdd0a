"""Training runs: the loop, evaluation, run folders, checkpoints, logs and progress output.

`trainer.train(config, options, reporter)` is what `trainctl train` calls;
`components.build_components(config)` assembles data, model, loss and optimizer for every
command; `step.make_step(mode, ...)` is one training step in eager or graph mode.
"""
