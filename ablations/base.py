r"""One model trained on one dataset and plane: the config every other experiment starts from.

    python scripts/train.py --config=ablations/base.py:model=asemblenet,preset=small,dataset=synthetic_sij/coronal \
        --workdir=workdirs/demo

ARG is a comma-separated list of key=value: model (a registry name), preset (tiny, small, paper), dataset
(NAME/CONFIG of a built TFDS dataset), variant (an ablation variant of the model: full, no_se, ...), seed.
Any field can then be overridden on the command line, e.g. --config.total_steps=50.
Expected (`make demo` runs this config, 600 steps; x86_64, 2 CPU cores, JAX 0.10.2 on CPU, seed 0; 21.6 min of
training on a machine shared with other jobs): best checkpoint by validation AUC at step 300; on
the held-out coronal test patients, patient-level AUC 1.000 (95% CI 1.000 to 1.000; mean probability per patient),
slice-level AUC 0.920 (0.875 to 0.956); results/demo/metrics.json.

A field added to this config later must default to the behaviour from before it existed: a run started before the
field was added resumes with that default (asemble_jax/train/trainer.py:guard_workdir_config).
"""
import ml_collections

from asemble_jax.config import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    fields = parse_arg(arg, model="asemblenet", preset="small", dataset="synthetic_sij/coronal", variant="full",
                       seed=0)
    config = ml_collections.ConfigDict()
    config.arg = arg or ""
    config.seed = fields.seed

    config.model = ml_collections.ConfigDict()
    config.model.name = fields["model"]
    config.model.preset = fields["preset"]
    config.model.variant = fields["variant"]
    config.model.num_classes = 2
    config.model.in_channels = 1
    # bfloat16 on GPU/TPU: activations in bfloat16, parameters and optimiser state stay float32.
    config.model.dtype = "float32"
    # 0: each model's own BatchNorm momentum (ASembleNet's WRN 0.9 as in PyTorch, the Keras applications 0.99);
    # else every BatchNorm's (see asemble_jax/workdir.py:set_batch_norm_momentum).
    config.model.batch_norm_momentum = 0.0

    config.data = ml_collections.ConfigDict()
    config.data.dataset = fields["dataset"]
    config.data.data_dir = "data/tfds"
    config.data.train_split = "train"
    config.data.val_split = "val"
    config.data.test_split = "test"
    # Models see image_size x image_size; the datasets store 256x256 and the pipeline resizes once.
    config.data.image_size = {"tiny": 64, "small": 128}.get(fields["preset"], 256)
    config.data.augment = True
    # Grain worker processes; -1: asemble_jax/data/pipeline.py:default_worker_count() of the host (batches do
    # not depend on it, so a run may resume with another count).
    config.data.worker_count = -1

    config.global_batch_size = 32
    config.total_steps = 600
    config.learning_rate = 1e-3
    config.warmup_steps = 30
    config.final_learning_rate_fraction = 0.01
    config.weight_decay = 0.05
    config.adam_b1 = 0.9
    config.adam_b2 = 0.999
    config.grad_clip_norm = 1.0
    config.label_smoothing = 0.1
    config.ema_decay = 0.0  # > 0 keeps an exponential moving average of the parameters, used for evaluation
    # Fine-tuning: a workdir whose best checkpoint gives the initial weights (same model, preset, variant and input
    # size); the optimiser and schedule start afresh. Empty: trained from scratch.
    config.init_from = ""

    config.log_every = 10
    config.eval_every = 50
    config.checkpoint_every = 50
    config.max_to_keep = 2
    config.parallel = "shard_map"  # or "pmap"
    config.compilation_cache_dir = "data/jax_cache"
    # TensorBoard events of the metrics.jsonl records in the workdir (needs the `tensorboard` extra).
    config.tensorboard = False
    return config
