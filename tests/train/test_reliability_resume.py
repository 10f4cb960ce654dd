"""A resume continues the same optimisation or is refused: changed settings, process count
or a hand-edited record are named in the error."""

from __future__ import annotations

import json

import pytest
import tiny_model
from safetensors.torch import load_file

from beyond_attention.train import CheckpointError, TrainConfig, train
from beyond_attention.train.checkpoint import load_checkpoint
from beyond_attention.train.resume_check import (
    MAY_CHANGE,
    changed_model_arguments,
    changed_settings,
)


class Stop(Exception):
    pass


def _cfg(data, out, **kw) -> TrainConfig:
    base = dict(model=tiny_model.NAME, data=str(data), out=str(out), epochs=2, batch_size=32,
                limit_train=128, limit_val=32, quiet=True, workers=0, device="cpu",
                save_every=1)
    base.update(kw)
    return TrainConfig(**base)


def _stop_at(n: int):
    def hook(steps_done: int) -> None:
        if steps_done == n:
            raise Stop
    return hook


@pytest.fixture
def cut_run(tiny_net, fashion_dir, tmp_path):
    """A run stopped after step 6 of 8 (4 per epoch): last.json at epoch 1, batch 2."""
    out = tmp_path / "cut"
    with pytest.raises(Stop):
        train(_cfg(fashion_dir, out), on_step=_stop_at(6))
    return out


def _edit(out, change) -> None:
    record = json.loads((out / "last.json").read_text())
    change(record)
    (out / "last.json").write_text(json.dumps(record))


@pytest.mark.parametrize("setting, value, shown", [
    ("batch_size", 64, "batch_size: 32 -> 64"),
    ("epochs", 3, "epochs: 2 -> 3"),
    ("lr", 1e-3, "lr: 0.002 -> 0.001"),
    ("mixup", 0.2, "mixup: 0.0 -> 0.2"),
])
def test_a_resume_with_other_settings_is_refused(cut_run, fashion_dir, setting, value, shown):
    before = (cut_run / "last.json").read_text()
    with pytest.raises(CheckpointError) as err:
        train(_cfg(fashion_dir, cut_run, resume="auto", **{setting: value}))
    assert shown in str(err.value) and "cannot resume" in str(err.value)
    assert (cut_run / "last.json").read_text() == before  # nothing was touched


def test_a_resume_with_another_process_count_is_refused(cut_run, fashion_dir):
    _edit(cut_run, lambda r: r.update(world_size=2))
    with pytest.raises(CheckpointError, match="world size \\(processes\\): 2 -> 1"):
        train(_cfg(fashion_dir, cut_run, resume="auto"))


def test_settings_that_do_not_alter_the_run_may_change(cut_run, fashion_dir, tmp_path,
                                                       capsys):
    full = tmp_path / "full"
    train(_cfg(fashion_dir, full))
    train(_cfg(fashion_dir, cut_run, resume="auto", quiet=False, workers=1, save_every=3,
               log_every=7, eval_batch_size=16, threads=1))
    out = capsys.readouterr().out
    assert "changed settings that do not alter the optimisation" in out
    assert "workers: 0 -> 1" in out and "log_every" in out
    a, b = load_file(full / "last.safetensors"), load_file(cut_run / "last.safetensors")
    assert all((a[k] == b[k]).all() for k in a)


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.update(global_step=7), "global_step 7 is not epoch 1 x 4 steps"),
    (lambda s: s.update(global_step=3, epoch=0, step_in_epoch=3),
     "the optimiser has taken 6 steps"),
    (lambda s: s.update(step_in_epoch=9), "step_in_epoch is 9"),
    (lambda s: s.update(epoch="1"), "state.epoch is '1'"),
    (lambda s: s.update(best_top1=150.0), "best_top1 is 150.0"),
    (lambda s: s.update(sums=[1.0, 2.0]), "expected 3 finite numbers"),
    (lambda s: s.update(sums=[1.0, 2.0, 999.0]), "do not count 2 batches of 32"),
    (lambda s: s.update(train_seconds=-1), "train_seconds is -1"),
])
def test_an_edited_record_is_refused(cut_run, fashion_dir, edit, message):
    _edit(cut_run, lambda r: edit(r["state"]))
    with pytest.raises(CheckpointError) as err:
        train(_cfg(fashion_dir, cut_run, resume="auto"))
    assert message in str(err.value) and "edited" in str(err.value)


def test_an_edited_learning_rate_is_refused(cut_run, fashion_dir):
    _edit(cut_run, lambda r: r["optimizer"]["param_groups"][0].update(lr=0.5))
    with pytest.raises(CheckpointError, match="saved learning rate 0.5 is not the schedule"):
        train(_cfg(fashion_dir, cut_run, resume="auto"))


def test_a_record_without_checkpoint_id_is_refused(cut_run, fashion_dir):
    record = json.loads((cut_run / "last.json").read_text())
    assert isinstance(record["checkpoint_id"], str)
    # ids differing between the files: caught by the loader, named as an incomplete save
    _edit(cut_run, lambda r: r.update(checkpoint_id="0-000000000000"))
    with pytest.raises(CheckpointError, match="different saves"):
        train(_cfg(fashion_dir, cut_run, resume="auto"))


def test_changed_settings_splits_allowed_from_refused():
    old = TrainConfig().to_dict()
    new = TrainConfig(workers=4, seed=1, data="elsewhere").to_dict()
    refused, allowed = changed_settings(old, new)
    assert refused == ["seed: 0 -> 1"]
    assert sorted(allowed) == ["data: None -> 'elsewhere'", "workers: 1 -> 4"]
    # a setting the old run did not record is not compared
    assert changed_settings({"seed": 0}, new) == (["seed: 0 -> 1"], [])
    assert {"workers", "log_every", "quiet", "threads"} <= MAY_CHANGE
    assert not {"batch_size", "epochs", "lr", "seed"} & MAY_CHANGE


def test_a_resume_takes_the_saved_values_of_settings_no_flag_gives(tiny_net, fashion_dir,
                                                                   tmp_path):
    # the run started with values that the recipe (or the fallback) no longer gives, as a
    # run does that started before the recipe changed: resuming without those flags
    # continues it with its saved values instead of refusing them as changes
    started = dict(lr=3e-3, warmup=0.3, crop_padding=2)
    full, cut = tmp_path / "full", tmp_path / "cut"
    train(_cfg(fashion_dir, full, **started))
    with pytest.raises(Stop):
        train(_cfg(fashion_dir, cut, **started), on_step=_stop_at(6))
    train(_cfg(fashion_dir, cut, resume="auto"))
    saved = json.loads((cut / "last.json").read_text())["config"]
    assert {k: saved[k] for k in started} == started
    a, b = load_file(full / "last.safetensors"), load_file(cut / "last.safetensors")
    assert all((a[k] == b[k]).all() for k in a)
    # an explicit flag still wins over the saved value, and is refused as a change
    with pytest.raises(CheckpointError, match="lr: 0.003 -> 0.001"):
        train(_cfg(fashion_dir, cut, resume="auto", lr=1e-3))


def _edit_weights_metadata(out, change) -> None:
    """Change the metadata of ``last.safetensors`` (its checkpoint id kept)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = out / "last.safetensors"
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(path)
    change(meta)
    save_file(tensors, path, metadata=meta)


def test_a_resume_with_another_model_of_the_same_name_is_refused(cut_run, fashion_dir):
    meta = load_checkpoint(cut_run).model_meta
    assert meta["model_arguments"] == {}  # the tiny net takes no family keywords
    _edit_weights_metadata(cut_run, lambda m: m.update(model_arguments='{"width": 8}'))
    before = (cut_run / "last.json").read_text()
    with pytest.raises(CheckpointError) as err:
        train(_cfg(fashion_dir, cut_run, resume="auto"))
    assert "is not the one the run was saved with" in str(err.value)
    assert "width: 8 -> (not an argument any more)" in str(err.value)
    assert (cut_run / "last.json").read_text() == before


def test_changed_model_arguments_names_what_changes_what_the_model_is():
    saved = {"depths": [2, 2], "mixer": "self", "gone": 1}
    now = {"depths": (2, 2), "mixer": "external", "new_option": True}
    assert changed_model_arguments(saved, now) == [
        "gone: 1 -> (not an argument any more)", "mixer: 'self' -> 'external'"]
    assert changed_model_arguments(saved, {"depths": (2, 2), "mixer": "self", "gone": 1}) == []
    assert changed_model_arguments(None, now) == []  # a checkpoint from before the record
