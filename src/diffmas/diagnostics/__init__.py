"""Diagnostics of the latent channel: does the item's information reach the latent columns, does a reader look at
them, does it use them, and does the writer get a gradient? One small module per diagnostic, each a pure function
of a backbone/method and items that returns numbers; `diffmas diagnose <name>` prints them (docs/diagnostics.md).

- `oracle`:    the writer's latent slots hold the answer token's input embedding (plumbing and attention-sink check);
- `probe`:     a linear probe per layer on the latent columns' keys and values, with a shuffled-label control;
- `attention`: the Solver's attention mass on the latent columns at the answer positions, per layer;
- `donor`:     the Solver keeps its prompts and reads another item's latent columns (paired against its own);
- `gradient`:  the gradient norms of the writer's and the reader's LoRA adapters.

This package's `__init__` imports nothing, so that the trainer can import `diagnostics.gradient` without a cycle.
"""
