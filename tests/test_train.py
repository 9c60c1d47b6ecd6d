"""The training loop: grouping, clipping, schedule, divergence, checkpoints and resume."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lab.core import events as ev
from lab.core.checkpoint import (
    FileCheckpointSink,
    SavedCheckpoint,
    checkpoint_step,
    list_checkpoints,
    load_newest,
    model_from_checkpoint,
)
from lab.core.config import RunConfig
from lab.core.data import get_corpus
from lab.core.train import GroupTrainer, TrainOptions, clip_per_config, lr_at, train_group

from conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]


def run(configs, ids=None, **kw) -> list:
    events: list = []
    ids = ids or [f"r{i}" for i in range(len(configs))]
    train_group(configs, ids, events.append, **kw)
    return events


def files(folder: Path, run_id: str = "r0") -> FileCheckpointSink:
    """The local workers' checkpoint sink, for the one run of a test."""
    return FileCheckpointSink({run_id: folder})


def of(events, kind, run_id=None):
    return [e for e in events if isinstance(e, kind) and (run_id is None or e.run_id == run_id)]


def losses_of(events, run_id) -> list:
    """Every loss a run reported (step losses, evaluations, exact val), in order."""
    out = []
    for e in of(events, ev.StepLogged, run_id):
        out.append(("step", e.step, e.train_loss))
    for e in of(events, ev.Evaluated, run_id):
        out.append(("eval", e.step, e.train_loss, e.val_loss))
    out.append(("exact", of(events, ev.Finished, run_id)[0].exact_val))
    return out


def test_at_zero_dropout_a_configuration_gives_bit_identical_losses_alone_grouped_and_batched(corpus_file):
    """Grouping, batched evaluation and the fp32 speed-ups change no number (issue 5).

    Alone with one window per evaluation forward, the way nanoGPT evaluates, versus inside
    a group of three (one of them with dropout on every site) evaluating 64 windows at once.
    """
    configs = [tiny_config(corpus_file, seed=1, skips={1: 0.0}),
               tiny_config(corpus_file, seed=2, skips={1: 0.0}),
               tiny_config(corpus_file, seed=3, dropout=0.3, skips={1: 0.2})]
    alone = run([configs[0]], options=TrainOptions(eval_batch_windows=1, log_interval=1))
    together = run(configs, options=TrainOptions(eval_batch_windows=64, log_interval=1))
    assert len(losses_of(alone, "r0")) > 10
    assert losses_of(alone, "r0") == losses_of(together, "r0")
    second = run([configs[1]], ids=["r1"], options=TrainOptions(log_interval=1))
    assert losses_of(second, "r1") == losses_of(together, "r1")


def test_the_core_computes_what_a_plain_nanogpt_loop_computes_at_zero_dropout(corpus_file):
    """The core's speed-ups (batched weights, explicit attention, fused AdamW, per-config
    clipping) against the independent nanoGPT-style loop of benchmarks/baseline.py: the same
    training losses from the same weights and batches, to float rounding."""
    from benchmarks.baseline import check_against_core
    from lab.core.data import get_corpus

    assert check_against_core(n_layer=2, steps=15, corpus=get_corpus(str(corpus_file))) < 2e-5


def test_per_configuration_clipping_does_not_couple_configurations():
    p = torch.nn.Parameter(torch.zeros(2, 3, 4))
    q = torch.nn.Parameter(torch.zeros(2, 5))
    p.grad = torch.full((2, 3, 4), 0.01)
    q.grad = torch.full((2, 5), 0.01)
    p.grad[1] *= 1000.0
    q.grad[1] *= 1000.0
    before0 = (p.grad[0].clone(), q.grad[0].clone())
    norms = clip_per_config([p, q], 1.0)
    assert norms[1] > 1.0 > norms[0]
    assert torch.equal(p.grad[0], before0[0]) and torch.equal(q.grad[0], before0[1])  # untouched
    clipped = torch.sqrt(p.grad[1].pow(2).sum() + q.grad[1].pow(2).sum())
    assert clipped == pytest.approx(1.0, rel=1e-4)


def test_schedule_warms_up_linearly_then_decays_to_min_lr():
    c = RunConfig(max_iters=1000, warmup_iters=100, lr=1e-3, min_lr=1e-4)
    assert lr_at(c, 0) == 0.0
    assert lr_at(c, 50) == pytest.approx(5e-4)
    assert lr_at(c, 100) == pytest.approx(1e-3)
    assert lr_at(c, 550) == pytest.approx(5.5e-4)
    assert lr_at(c, 1000) == pytest.approx(1e-4)
    short = RunConfig(max_iters=50, warmup_iters=100)
    assert lr_at(short, 50) == pytest.approx(5e-4)  # warm-up never ends


def test_evaluations_at_zero_every_interval_and_the_last_step(corpus_file):
    events = run([tiny_config(corpus_file, max_iters=25, eval_interval=10)])
    assert [e.step for e in of(events, ev.Evaluated)] == [0, 10, 20, 25]
    fin = of(events, ev.Finished)[0]
    assert fin.step == 25
    assert fin.best_val == min(e.val_loss for e in of(events, ev.Evaluated))
    assert math.isfinite(fin.exact_val)


def test_a_diverging_configuration_ends_alone_and_its_group_mates_are_unaffected(corpus_file, monkeypatch):
    configs = [tiny_config(corpus_file, seed=1), tiny_config(corpus_file, seed=2)]
    alone = run([configs[0]], options=TrainOptions(log_interval=1))
    original = GroupTrainer.setup

    def poisoned(self, corpus):
        original(self, corpus)
        if self.n == 2:
            with torch.no_grad():
                self.model.sublayers[1].f.c_fc.weight[1].fill_(float("nan"))

    monkeypatch.setattr(GroupTrainer, "setup", poisoned)
    events = run(configs, options=TrainOptions(log_interval=1))
    div = of(events, ev.Diverged, "r1")
    assert len(div) == 1 and "NaN" in div[0].reason
    assert not of(events, ev.Finished, "r1")
    fin = of(events, ev.Finished, "r0")
    assert fin and fin[0].final_val == pytest.approx(of(alone, ev.Finished)[0].final_val, abs=1e-5)


def test_a_tiny_run_on_tiny_shakespeare_learns(tmp_path):
    c = RunConfig.from_dict(dict(n_layer=2, max_iters=300, eval_interval=150, eval_iters=20, warmup_iters=30,
                                 dropout=0.0, skips={1: 0.0}))
    events = run([c])
    fin = of(events, ev.Finished)
    assert fin, events[-1]
    assert fin[0].final_val < 2.6
    assert fin[0].exact_val < 2.6


def test_stop_then_resume_continues_the_same_curve(corpus_file, tmp_path):
    c = tiny_config(corpus_file, max_iters=40, eval_interval=10, dropout=0.1, skips={1: 0.1})
    straight = run([c], options=TrainOptions(log_interval=1))

    folder = tmp_path / "ckpt"
    calls = {"n": 0}

    def stop_after_23_steps():
        calls["n"] += 1
        return calls["n"] > 23

    first = run([c], checkpoints=files(folder), should_stop=stop_after_23_steps, options=TrainOptions(log_interval=1))
    assert of(first, ev.Stopped)[0].step == 23
    # one per evaluation after step 0 and one on stop: the trainer deletes none (the store prunes)
    assert [checkpoint_step(p.name) for p in list_checkpoints(folder)] == [23, 20, 10]
    second = run([c], checkpoints=files(folder), options=TrainOptions(log_interval=1))
    assert of(second, ev.Started)[0].step == 23
    evals = [e.step for e in of(first + second, ev.Evaluated)]
    assert evals == [0, 10, 20, 30, 40]  # every evaluation exactly once
    resumed = [e.val_loss for e in of(first + second, ev.Evaluated)]
    assert resumed == pytest.approx([e.val_loss for e in of(straight, ev.Evaluated)], abs=1e-6)
    assert of(second, ev.Finished)[0].step == 40


KILL_SCRIPT = """
import sys, time
from lab.core.config import RunConfig
from lab.core.train import train_group, TrainOptions
cfg = RunConfig.from_dict(eval(sys.argv[1]))
def slow(e):
    print(type(e).__name__, getattr(e, "step", ""), flush=True)
def should_stop():
    time.sleep(0.01)
    return False
from pathlib import Path
from lab.core.checkpoint import FileCheckpointSink
train_group([cfg], ["r"], slow, TrainOptions(log_interval=5), checkpoints=FileCheckpointSink({"r": Path(sys.argv[2])}), should_stop=should_stop)
"""


def test_checkpoint_kill_resume_gives_the_same_step_count_and_no_gap(corpus_file, tmp_path):
    settings = dict(data=str(corpus_file), n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4,
                    dropout=0.0, skips={1: 0.0}, max_iters=200, warmup_iters=5, eval_interval=10, eval_iters=2,
                    dtype="float32")
    folder = tmp_path / "ckpt"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, repr(settings), str(folder)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and len(list_checkpoints(folder)) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = [line.split() for line in proc.stdout.read().splitlines()]
    assert not any(kind == "Finished" for kind, *_ in before), "killed too late to test a resume"
    resumed = run([RunConfig.from_dict(settings)], ids=["r"], checkpoints=FileCheckpointSink({"r": folder}))
    start = of(resumed, ev.Started)[0].step
    assert start > 0
    evals_before = [int(s) for kind, s in before if kind == "Evaluated" and int(s) <= start]
    evals_after = [e.step for e in of(resumed, ev.Evaluated)]
    assert evals_before + evals_after == list(range(0, 201, 10))
    assert of(resumed, ev.Finished)[0].step == 200


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(corpus_file, tmp_path):
    c = tiny_config(corpus_file, max_iters=30, eval_interval=10)
    folder = tmp_path / "ckpt"
    calls = {"n": 0}

    def stop_late():
        calls["n"] += 1
        return calls["n"] > 25

    run([c], checkpoints=files(folder), should_stop=stop_late)
    newest, older, *_ = list_checkpoints(folder)
    newest.write_bytes(newest.read_bytes()[:100])  # truncated by a kill mid-write
    events = run([c], checkpoints=files(folder))
    assert of(events, ev.Warned) and "unreadable" in of(events, ev.Warned)[0].message
    assert of(events, ev.Started)[0].step == checkpoint_step(older.name)
    assert of(events, ev.Finished)[0].step == 30


def test_a_checkpoint_of_another_configuration_is_refused(corpus_file, tmp_path):
    folder = tmp_path / "ckpt"
    run([tiny_config(corpus_file, max_iters=10, eval_interval=5)], checkpoints=files(folder))
    events = run([tiny_config(corpus_file, n_embd=32, max_iters=10)], checkpoints=files(folder))
    failed = of(events, ev.Failed)
    assert failed and "another configuration" in failed[0].reason


class MemorySink:
    """A checkpoint sink that keeps the bytes in memory, as one that sends them home would."""

    def __init__(self):
        self.saved_bytes: dict[str, list[tuple[int, bytes]]] = {}

    def save(self, run_id, step, data):
        assert isinstance(data, bytes)
        self.saved_bytes.setdefault(run_id, []).append((step, data))
        return f"memory:{run_id}@{step}"

    def saved(self, run_id):
        return [SavedCheckpoint(step, f"memory:{run_id}@{step}", lambda data=data: data)
                for step, data in reversed(self.saved_bytes.get(run_id, []))]


def test_the_trainer_hands_checkpoints_to_its_sink_and_resumes_from_it(corpus_file, tmp_path, monkeypatch):
    """Checkpoints go only where the sink puts them: one per run at every evaluation after
    step 0, on stop and at the end, reported as the sink says; a resume reads them back."""
    monkeypatch.chdir(tmp_path)
    configs = [tiny_config(corpus_file, seed=1, max_iters=30, dropout=0.1, skips={1: 0.1}),
               tiny_config(corpus_file, seed=2, max_iters=30, dropout=0.1, skips={1: 0.1})]
    straight = run(configs, options=TrainOptions(log_interval=1))
    sink = MemorySink()
    calls = {"n": 0}

    def stop_after_15_steps():
        calls["n"] += 1
        return calls["n"] > 15

    first = run(configs, checkpoints=sink, should_stop=stop_after_15_steps, options=TrainOptions(log_interval=1))
    assert {rid: [s for s, _ in saved] for rid, saved in sink.saved_bytes.items()} == {"r0": [10, 15], "r1": [10, 15]}
    second = run(configs, checkpoints=sink, options=TrainOptions(log_interval=1))
    assert {rid: [s for s, _ in saved] for rid, saved in sink.saved_bytes.items()} == {"r0": [10, 15, 20, 30], "r1": [10, 15, 20, 30]}
    assert [(e.run_id, e.step, e.path) for e in of(second, ev.Checkpointed)] == [
        (rid, step, f"memory:{rid}@{step}") for step in (20, 30) for rid in ("r0", "r1")]
    assert of(second, ev.Started)[0].step == 15
    for rid in ("r0", "r1"):
        resumed = [e.val_loss for e in of(first + second, ev.Evaluated, rid)]
        assert resumed == pytest.approx([e.val_loss for e in of(straight, ev.Evaluated, rid)], abs=1e-6)
    assert sorted(tmp_path.iterdir()) == [corpus_file]  # the trainer itself wrote no file


def test_a_model_rebuilt_from_a_checkpoint_gives_the_trained_models_logits(corpus_file):
    configs = [tiny_config(corpus_file, seed=1), tiny_config(corpus_file, seed=2, n_layer=1, skips={1: 0.3})]
    sink = MemorySink()
    trainer = GroupTrainer(configs, ["a", "b"], lambda event: None, TrainOptions(), sink)
    corpus = get_corpus(str(corpus_file))
    trainer.setup(corpus)
    trainer.train(lambda: False)
    x = torch.randint(0, corpus.vocab_size, (3, configs[0].block_size), generator=torch.Generator().manual_seed(0))
    trainer.model.eval()
    with torch.no_grad():
        trained = trainer.model(x)
        for i, rid in enumerate(["a", "b"]):
            state = load_newest(sink.saved(rid))
            assert state["finished"] and state["step"] == configs[i].max_iters
            model, vocab = model_from_checkpoint(state)
            assert vocab == list(corpus.chars)
            model.eval()
            torch.testing.assert_close(model(x)[0], trained[i], rtol=0, atol=1e-6)


def test_bfloat16_autocast_trains_to_finite_losses(corpus_file):
    events = run([tiny_config(corpus_file, dtype="bfloat16")])
    fin = of(events, ev.Finished)
    assert fin and math.isfinite(fin[0].final_val) and fin[0].final_val < 4.0


@pytest.mark.parametrize("flags, timings, expected", [
    (frozenset({"avx512f", "avx512_bf16"}), (0.02, 0.01), "bfloat16"),
    (frozenset({"amx_bf16"}), (0.02, 0.01), "bfloat16"),
    (frozenset({"avx512f", "avx512_bf16"}), (0.02, 0.03), "float32"),  # the flag, yet bf16 slower (issue 12)
    (frozenset({"avx2"}), None, "float32"),  # no native bf16: not measured
])
def test_auto_dtype_trains_in_bf16_only_where_a_measured_step_is_faster(corpus_file, monkeypatch, tmp_path, flags, timings,
                                                                       expected):
    from lab.core import dtype_timing, precision

    monkeypatch.setenv("DROPRES_DTYPE_CACHE", str(tmp_path / "dtype.json"))
    monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
    monkeypatch.setattr(dtype_timing, "time_training_steps", lambda cfg, device, threads: timings)
    events = run([tiny_config(corpus_file, dtype="auto", max_iters=3)])
    assert [e.dtype for e in of(events, ev.Started)] == [expected]
    assert of(events, ev.Finished)
    pinned = run([tiny_config(corpus_file, dtype="float32", max_iters=3)])
    assert [e.dtype for e in of(pinned, ev.Started)] == ["float32"]


def _stop_when(kind, step):
    """An event sink and a stop flag raised once the trainer emits `kind` at `step`."""
    events: list = []
    flag = {"stop": False}

    def emit(e):
        events.append(e)
        if isinstance(e, kind) and e.step == step:
            flag["stop"] = True

    return events, emit, lambda: flag["stop"]


@pytest.mark.parametrize("during", ["evaluation", "exact validation"])
def test_a_stop_inside_an_evaluation_is_honoured_there_and_the_evaluation_is_redone_on_resume(corpus_file, tmp_path, during):
    # eval_iters 30: 120 windows a split, 3 chunks of 40 (the exact pass: 4), so the stop lands between chunks
    c = tiny_config(corpus_file, max_iters=20, eval_interval=10, eval_iters=30, dropout=0.1, skips={1: 0.1})
    straight = run([c], options=TrainOptions(log_interval=1))
    folder = tmp_path / "ckpt"
    # after the step-10 loss the next check is inside the step-10 evaluation; after the final
    # evaluation (step 20), inside the exact validation pass
    trigger = (ev.StepLogged, 10) if during == "evaluation" else (ev.Evaluated, 20)
    first, emit, should_stop = _stop_when(*trigger)
    train_group([c], ["r0"], emit, TrainOptions(log_interval=1), checkpoints=files(folder), should_stop=should_stop)
    stopped_at = trigger[1]
    assert [e.step for e in of(first, ev.Stopped)] == [stopped_at]
    assert not of(first, ev.Finished)
    recorded = [e.step for e in of(first, ev.Evaluated)]
    assert recorded == ([0] if during == "evaluation" else [0, 10, 20])  # the interrupted evaluation is not
    assert checkpoint_step(list_checkpoints(folder)[0].name) == stopped_at

    second = run([c], checkpoints=files(folder), options=TrainOptions(log_interval=1))
    assert of(second, ev.Started)[0].step == stopped_at
    assert [e.step for e in of(first + second, ev.Evaluated)] == [0, 10, 20]  # each exactly once
    assert [e.val_loss for e in of(first + second, ev.Evaluated)] == pytest.approx(
        [e.val_loss for e in of(straight, ev.Evaluated)], abs=1e-6)  # the same windows when redone
    assert of(second, ev.Finished)[0].exact_val == pytest.approx(of(straight, ev.Finished)[0].exact_val, abs=1e-6)


class SlowSink(FileCheckpointSink):
    """A disk that takes its time: each save is durable only after a pause."""

    def __init__(self, folder: Path):
        super().__init__({"r0": folder})
        self.durable: set[int] = set()

    def save(self, run_id: str, step: int, data: bytes) -> str:
        time.sleep(0.05)
        where = super().save(run_id, step, data)
        self.durable.add(step)
        return where


def test_checkpoints_are_written_while_training_goes_on_and_reported_only_once_durable(corpus_file, tmp_path):
    sink = SlowSink(tmp_path / "r0")
    events: list = []

    def emit(event) -> None:
        if isinstance(event, ev.Checkpointed):  # never before the sink has it on disk
            assert event.step in sink.durable
            assert Path(event.path).is_file()
        events.append(event)

    cfg = tiny_config(corpus_file, max_iters=40, eval_interval=10)
    train_group([cfg], ["r0"], emit, checkpoints=sink)
    assert [e.step for e in of(events, ev.Checkpointed)] == [10, 20, 30, 40]
    finished = of(events, ev.Finished)[0]
    assert events.index(of(events, ev.Checkpointed)[-1]) < events.index(finished)
    assert set(finished.phase_s) == {"setup", "steps", "evaluations", "exact", "checkpoints"}


def test_the_optimiser_is_torch_fused_adamw_bit_for_bit_without_importing_dynamo():
    code = """
import sys, torch
from lab.core.optim import FusedAdamW
def trained(make):
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(3, 8, 8)); b = torch.nn.Parameter(torch.randn(3, 8))
    opt = make([{"params": [w], "weight_decay": 0.1}, {"params": [b], "weight_decay": 0.0}])
    for _ in range(5):
        opt.zero_grad(set_to_none=True)
        ((w @ torch.randn(3, 8, 4)).square().sum() + b.sin().sum()).backward()
        opt.step()
    return w, b, opt
ours = trained(lambda g: FusedAdamW(g, lr=1e-2, betas=(0.9, 0.99)))
assert "torch._dynamo" not in sys.modules, "FusedAdamW imported torch._dynamo"
theirs = trained(lambda g: torch.optim.AdamW(g, lr=1e-2, betas=(0.9, 0.99), fused=True))
for p, q in zip(ours[:2], theirs[:2]):
    assert torch.equal(p, q)
    for key in ("step", "exp_avg", "exp_avg_sq"):
        assert torch.equal(ours[2].state[p][key], theirs[2].state[q][key])
"""
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
