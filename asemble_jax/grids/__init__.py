"""Running experiment grids: a grid file's cells (grid), a resumable multi-worker runner (runner, claims, cell),
the tables and figures made from the cells' records (tables, figures, publish) and the leave-one-patient-out prior
check (prior_check). The grid files themselves, the experiments, live in ablations/ at the top level."""
