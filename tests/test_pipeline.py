"""Input pipeline: batch layout, seeded epochs, mixtures, per-process shards, padded evaluation, resumable state.

Most tests read in-memory lists of records shaped like the TFDS ones (PNG bytes, label, patient id as bytes,
optional mask). Each image carries its record index and its source number as flat grey blocks, big enough to
survive the area resize to the 64x64 size the tests use, so a batch tells which records it holds.
"""
import collections
import json

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from asemble_jax.errors import InputError
from asemble_jax.data.examples import encode_png, features
from asemble_jax.data.pipeline import eval_batches, open_source, train_iterator

SIZE = 64
LESION = (slice(150, 200), slice(150, 220))


def fake_record(index: int, source_number: int = 0, with_mask: bool = True) -> dict:
    image = np.full((256, 256), 30, np.uint8)
    image[:128, :128] = index
    image[:128, 128:] = 100 + source_number
    image[LESION] = 220
    record = {"image": encode_png(image), "label": index % 2, "patient_id": f"patient-{index // 3}".encode()}
    if with_mask:
        mask = np.zeros((256, 256), np.uint8)
        mask[LESION] = 1
        record["mask"] = encode_png(mask, "mask")
    return record


def fake_source(size: int, source_number: int = 0, with_mask: bool = True) -> list[dict]:
    return [fake_record(i, source_number, with_mask) for i in range(size)]


def record_indices(batch) -> list[int]:
    return np.rint(batch["image"][:, 0, 0, 0] * 255).astype(int).tolist()


def source_numbers(batch) -> list[int]:
    return (np.rint(batch["image"][:, 0, -1, 0] * 255).astype(int) - 100).tolist()


def take(iterator, count: int) -> list[dict]:
    return [next(iterator) for _ in range(count)]


def assert_same_batches(first: list[dict], second: list[dict]) -> None:
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_train_batches_have_the_documented_layout():
    iterator = train_iterator([(fake_source(10), 1.0)], global_batch_size=4, seed=0, image_size=SIZE)
    batch = next(iterator)
    assert set(batch) == {"image", "label", "lesion_mask"}
    assert batch["image"].shape == (4, SIZE, SIZE, 1) and batch["image"].dtype == np.float32
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert batch["label"].shape == (4,) and batch["label"].dtype == np.int32
    assert batch["lesion_mask"].shape == (4, SIZE, SIZE, 1) and batch["lesion_mask"].dtype == np.uint8
    assert set(np.unique(batch["lesion_mask"])) == {0, 1}


def test_without_augmentation_images_are_the_stored_pixels_scaled_to_unit_interval():
    source = fake_source(4)
    batch = next(train_iterator([(source, 1.0)], global_batch_size=4, seed=0, augment=None))
    for image, index, label in zip(batch["image"], record_indices(batch), batch["label"]):
        stored = cv2.imdecode(np.frombuffer(source[index]["image"], np.uint8), cv2.IMREAD_GRAYSCALE)
        np.testing.assert_array_equal(image[..., 0], stored.astype(np.float32) / 255)
        assert label == index % 2


def test_each_epoch_is_a_fresh_permutation_of_the_source():
    iterator = train_iterator([(fake_source(24), 1.0)], global_batch_size=8, seed=3, augment=None, image_size=SIZE)
    epochs = [sum((record_indices(b) for b in take(iterator, 3)), []) for _ in range(2)]
    for order in epochs:
        assert sorted(order) == list(range(24))
    assert epochs[0] != epochs[1]
    assert epochs[0] != list(range(24))


def test_seed_decides_order_and_augmentation():
    def first_batches(seed):
        return take(train_iterator([(fake_source(12), 1.0)], global_batch_size=4, seed=seed, image_size=SIZE), 3)

    assert_same_batches(first_batches(5), first_batches(5))
    assert not np.array_equal(first_batches(5)[0]["image"], first_batches(6)[0]["image"])


def test_augmentation_differs_between_epochs_of_the_same_record():
    iterator = train_iterator([(fake_source(1), 1.0)], global_batch_size=2, seed=0, image_size=SIZE)
    batch = next(iterator)
    assert not np.array_equal(batch["image"][0], batch["image"][1])


@pytest.mark.parametrize("process_count", [2, 3])
def test_processes_hold_disjoint_parts_of_the_single_process_global_batches(process_count):
    global_batch = 6
    source = fake_source(18)
    single = take(train_iterator([(source, 1.0)], global_batch_size=global_batch, seed=1, image_size=SIZE), 4)
    per_process = [
        take(train_iterator([(source, 1.0)], global_batch_size=global_batch, seed=1, image_size=SIZE,
                            process_index=p, process_count=process_count), 4)
        for p in range(process_count)
    ]
    for k in range(4):
        for p in range(process_count):
            local = per_process[p][k]
            assert local["image"].shape[0] == global_batch // process_count
            # Augmented pixels equal too: augmentation depends on the global position, not on the process.
            for key in local:
                np.testing.assert_array_equal(local[key], single[k][key][p::process_count], err_msg=key)


def test_one_epoch_is_split_across_processes_without_overlap():
    source_size, process_count, global_batch = 24, 3, 6
    seen = []
    for p in range(process_count):
        iterator = train_iterator([(fake_source(source_size), 1.0)], global_batch_size=global_batch, seed=2,
                                  augment=None, image_size=SIZE, process_index=p, process_count=process_count)
        seen.append([i for batch in take(iterator, source_size // global_batch) for i in record_indices(batch)])
    for p in range(process_count):
        for q in range(p + 1, process_count):
            assert not set(seen[p]) & set(seen[q])
    assert sorted(sum(seen, [])) == list(range(source_size))


def test_mixture_follows_the_weights_and_cycles_through_each_source():
    big, small = fake_source(30, source_number=0), fake_source(7, source_number=1)
    iterator = train_iterator([(big, 0.8), (small, 0.2)], global_batch_size=10, seed=4, augment=None,
                              image_size=SIZE)
    drawn = [(s, i) for batch in take(iterator, 40) for s, i in zip(source_numbers(batch), record_indices(batch))]
    share_of_small = np.mean([s == 1 for s, _ in drawn])
    assert abs(share_of_small - 0.2) < 0.03
    small_order = [i for s, i in drawn if s == 1]
    # However the two streams interleave, each source on its own is read epoch by epoch.
    for start in range(0, len(small_order) - 6, 7):
        assert sorted(small_order[start:start + 7]) == list(range(7))


def test_lesion_mask_is_dropped_when_a_mixed_source_has_none():
    iterator = train_iterator([(fake_source(5), 1.0), (fake_source(5, 1, with_mask=False), 1.0)],
                              global_batch_size=4, seed=0, image_size=SIZE)
    assert set(next(iterator)) == {"image", "label"}


def test_restored_state_continues_with_exactly_the_same_batches():
    def make():
        return train_iterator([(fake_source(9), 2.0), (fake_source(5, 1), 1.0)], global_batch_size=4, seed=8,
                              image_size=SIZE)

    iterator = make()
    take(iterator, 3)
    saved = json.dumps(iterator.get_state())
    expected = take(iterator, 4)

    restored = make()
    restored.set_state(json.loads(saved))
    assert_same_batches(take(restored, 4), expected)


@pytest.mark.slow  # starting grain worker processes takes seconds
def test_worker_processes_give_the_same_batches_and_a_restorable_state():
    source = fake_source(12)
    expected = take(train_iterator([(source, 1.0)], global_batch_size=4, seed=9, image_size=SIZE), 5)
    with_workers = train_iterator([(source, 1.0)], global_batch_size=4, seed=9, image_size=SIZE, worker_count=2)
    try:
        assert_same_batches(take(with_workers, 2), expected[:2])
        saved = json.dumps(with_workers.get_state())
    finally:
        with_workers.close()
    restored = train_iterator([(source, 1.0)], global_batch_size=4, seed=9, image_size=SIZE, worker_count=2)
    try:
        restored.set_state(json.loads(saved))
        assert_same_batches(take(restored, 3), expected[2:])
    finally:
        restored.close()


@pytest.mark.parametrize("bad", [
    dict(global_batch_size=5, process_count=2),
    dict(process_index=2, process_count=2),
    dict(weights=(1.0, 0.0)),
    dict(seed=-1),
])
def test_invalid_training_arguments_are_refused(bad):
    weights = bad.pop("weights", (1.0, 1.0))
    arguments = dict(global_batch_size=4, seed=0) | bad
    with pytest.raises(ValueError):
        train_iterator([(fake_source(4), weights[0]), (fake_source(4, 1), weights[1])], **arguments)


@pytest.mark.parametrize("source_size,batch_size,process_count", [(13, 4, 3), (8, 4, 2), (2, 4, 3), (5, 2, 1)])
def test_evaluation_counts_every_example_exactly_once_across_processes(source_size, batch_size, process_count):
    source = fake_source(source_size)
    shards = [list(eval_batches(source, batch_size=batch_size, image_size=SIZE, process_index=p,
                                process_count=process_count)) for p in range(process_count)]
    assert len({len(batches) for batches in shards}) == 1, "processes must run the same number of steps"
    counted = collections.Counter()
    for batches in shards:
        for batch in batches:
            assert batch["image"].shape == (batch_size, SIZE, SIZE, 1)
            assert batch["valid"].dtype == np.bool_
            for row in range(batch_size):
                if not batch["valid"][row]:
                    assert batch["index"][row] == -1 and batch["patient_id"][row] == ""
                    assert not batch["image"][row].any() and not batch["lesion_mask"][row].any()
                    continue
                index = int(batch["index"][row])
                counted[index] += 1
                assert record_indices(batch)[row] == index
                assert batch["label"][row] == index % 2
                assert batch["patient_id"][row] == f"patient-{index // 3}"
    assert counted == collections.Counter(range(source_size))
    total_slots = sum(len(batches) for batches in shards) * batch_size
    # Padding is only what full batches need: fewer than one batch per process.
    assert total_slots - source_size < process_count * batch_size


def test_evaluation_images_and_masks_are_resized_like_preprocessing():
    source = fake_source(3)
    batch = next(eval_batches(source, batch_size=3, image_size=SIZE))
    for row, index in enumerate(batch["index"]):
        stored = cv2.imdecode(np.frombuffer(source[index]["image"], np.uint8), cv2.IMREAD_GRAYSCALE)
        expected = cv2.resize(stored, (SIZE, SIZE), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
        np.testing.assert_array_equal(batch["image"][row, ..., 0], expected)
    expected_mask = np.zeros((SIZE, SIZE), np.uint8)
    expected_mask[150 // 4:200 // 4, 150 // 4:220 // 4] = 1
    np.testing.assert_array_equal(batch["lesion_mask"][0, ..., 0], expected_mask)


class PipelineTestRecords(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A real prepared TFDS dataset, so that open_source is tested the way the trainer reads the builders."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=features(with_mask=True))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(6), "test": self._generate_examples(3)}

    def _generate_examples(self, count):
        for index in range(count):
            record = fake_record(index)
            yield index, dict(record, patient_id=record["patient_id"].decode(), source="fake", plane="coronal",
                              attribution="")


@pytest.fixture(scope="module")
def prepared_data_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    PipelineTestRecords(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
    return data_dir


def test_open_source_reads_a_prepared_split_that_the_pipeline_consumes(prepared_data_dir):
    source = open_source("pipeline_test_records", "test", prepared_data_dir)
    assert len(source) == 3
    batch = next(eval_batches(source, batch_size=4, image_size=SIZE))
    valid = batch["valid"]
    assert valid.tolist() == [True, True, True, False]
    assert sorted(record_indices(batch)[:3]) == [0, 1, 2]
    assert batch["patient_id"][:3].tolist() == [f"patient-{i // 3}" for i in record_indices(batch)[:3]]
    train_batch = next(train_iterator([(open_source("pipeline_test_records", "train", prepared_data_dir), 1.0)],
                                      global_batch_size=6, seed=0, augment=None, image_size=SIZE))
    assert sorted(record_indices(train_batch)) == list(range(6))


def test_open_source_names_the_missing_dataset(tmp_path):
    with pytest.raises(InputError, match="no_such_dataset") as error:
        open_source("no_such_dataset/coronal", "train", tmp_path)
    assert str(tmp_path) in str(error.value) and "\n" not in str(error.value)


def test_open_source_names_the_missing_split(prepared_data_dir):
    with pytest.raises(InputError, match="'val'"):
        open_source("pipeline_test_records", "val", prepared_data_dir)
