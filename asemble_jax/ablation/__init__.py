"""The ablation suite: grids of training runs (grid), a resumable multi-worker runner (runner, claims, cell), and
the component-contribution and baseline tables made from the runs' records (tables)."""
