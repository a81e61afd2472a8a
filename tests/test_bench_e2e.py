"""slimspec-bench e2e: the performance model, the targets check, and the whole pipeline on a tiny random target."""

import json
import math

import pytest

from slimspec.bench import e2e
from test_generate import drafter_for, tiny_target
from test_train import tiny_tokenizer

KEYS = {"tokens_per_s", "tau", "speedup_vs_plain", "per_position_acceptance", "time_split_ms_per_pass",
        "identical_to_plain", "flip_rate", "passes", "new_tokens", "draft_ms_per_token"}


def test_perf_model_formula_and_bound():
    assert e2e.predicted_speedup(1.0, 0.25, 1.0) == pytest.approx(1.6)
    assert e2e.predicted_speedup(0.9, 0.5, 3.0) == pytest.approx(0.9 * 4.0 / 2.5)
    assert e2e.predicted_speedup(1.0, 1.0, 7.0) == pytest.approx(1.0)  # same head cost: no gain
    assert e2e.predicted_speedup(0.98, 1e-9, 2.0) == pytest.approx(0.98 * 3.0)  # nu -> 0: rho_tau (1 + kappa)


def _method(tps, tau, head_ms_per_token, split):
    return dict(tokens_per_s=tps, tau=tau, head_ms_per_drafted_token=head_ms_per_token,
                time_split_ms_per_pass=dict(zip(e2e.SPLIT_PARTS, split)))


def test_perf_model_inputs_and_targets_on_hand_numbers():
    methods = {
        "plain": _method(10.0, 1.0, None, (10, 0, 0, 0)),
        "prompt_lookup": _method(12.0, 1.3, None, (10, 0, 0, 1)),
        "dense": _method(10.0, 3.0, 2.0, (6, 1, 4, 1)),  # kappa = 4 / (6 + 1 + 1) = 0.5
        "slimspec-d8": _method(15.0, 2.7, 0.5, (6, 1, 1, 1)),
    }
    p = e2e.perf_model(methods, "dense")["slimspec-d8"]
    assert (p["rho_tau"], p["nu"], p["kappa"]) == pytest.approx((0.9, 0.25, 0.5))
    assert p["predicted"] == pytest.approx(0.9 * 1.5 / 1.125) and p["measured"] == pytest.approx(1.5)
    assert e2e.perf_model(methods, "missing") is None
    rows = {r["target"]: r for r in e2e.check_targets(methods)}
    assert set(rows) == {"SlimSpec d/8 >= 2.0x plain", "SlimSpec d/8 > prompt lookup", "SlimSpec d/8 >= 2x dense"}
    assert rows["SlimSpec d/8 > prompt lookup"]["status"] == "PASS"
    miss = rows["SlimSpec d/8 >= 2.0x plain"]
    assert miss["status"] == "MISS" and miss["margin"] == pytest.approx(-0.25) and "tau 2.70" in miss["where_time_goes"]


@pytest.fixture(scope="module")
def tiny_run():
    target = tiny_target()
    tokenizer = tiny_tokenizer()
    drafters = {"dense": drafter_for(target, seed=1, head_rank=None), "slimspec-d8": drafter_for(target, seed=2)}
    saved = {n: d.generation_config.num_assistant_tokens for n, d in drafters.items()}
    prompts = ["t5 t6 t7 t8 t5 t6 t7", "t20 t21 t22 t40 t41 t20 t21 t22 t40"]
    runs = e2e.run_e2e(target=target, tokenizer=tokenizer, drafters=drafters, prompts=prompts, dtype_name="fp32",
                       modes=("greedy", "sample"), k=3, max_new_tokens=8, progress=False)
    sweep = e2e.run_k_sweep(target=target, tokenizer=tokenizer, drafters={"slimspec-d8": drafters["slimspec-d8"]},
                            prompts=prompts[:1], dtype_name="fp32", ks=[2, 4], max_new_tokens=8, progress=False)
    result = e2e.build_result(target_name="tiny", prompts=len(prompts), max_new_tokens=8, k=3, runs=runs,
                              k_sweep=sweep)
    return drafters, saved, result


def test_run_e2e_on_a_tiny_target(tiny_run):
    drafters, saved, r = tiny_run
    assert set(r["runs"]) == {"fp32/greedy", "fp32/sample"}
    for key, run in r["runs"].items():
        methods = run["methods"]
        assert list(methods) == ["plain", "prompt_lookup", "dense", "slimspec-d8"]
        for name, m in methods.items():
            assert KEYS <= set(m), (name, KEYS - set(m))
            assert m["new_tokens"] == 16 and m["passes"] >= 2 and m["tokens_per_s"] > 0
            assert set(m["time_split_ms_per_pass"]) == set(e2e.SPLIT_PARTS)
            assert m["tau"] >= 1.0
        assert methods["plain"]["speedup_vs_plain"] == 1.0 and methods["plain"]["tau"] == 1.0
        assert methods["plain"]["passes"] == 16  # one forward per token
        for name in drafters:
            m = methods[name]
            assert len(m["per_position_acceptance"]) == 3 and m["draft_ms_per_token"] > 0
            assert m["time_split_ms_per_pass"]["drafter_head"] > 0
        if run["mode"] == "greedy":  # lossless: every drafter reproduces plain greedy exactly
            for name in ["prompt_lookup", *drafters]:
                assert methods[name]["identical_to_plain"] == "2/2" and methods[name]["flip_rate"] == 0.0, name
        else:
            assert methods["dense"]["identical_to_plain"] is None
    for name, d in drafters.items():  # the drafters come back unattached, with their own draft length
        assert d.attached_target is None and d.generation_config.num_assistant_tokens == saved[name]
    assert r["perf_model"]["fp32/greedy"]["slimspec-d8"]["kappa"] > 0
    assert r["k_sweep"]["ks"] == [2, 4] and set(r["k_sweep"]["methods"]) == {"prompt_lookup", "slimspec-d8"}
    assert r["targets"] == [] and "bf16 greedy" in r["targets_note"]


def test_report_and_plots_are_written(tiny_run, tmp_path):
    _, _, r = tiny_run
    report = e2e.write_outputs(r, tmp_path)
    assert (tmp_path / "report.md").read_text() == report
    for section in ("## fp32/greedy", "## fp32/sample", "Per-position acceptance", "Performance model", "K sweep",
                    "Targets"):
        assert section in report
    loaded = json.loads((tmp_path / "results.json").read_text())
    assert loaded["runs"]["fp32/greedy"]["methods"]["plain"]["speedup_vs_plain"] == 1.0
    for name in e2e.PLOTS:
        assert (tmp_path / name).stat().st_size > 1000, name


def test_cli_parses_and_errors_without_drafters(tmp_path, monkeypatch, capsys):
    from slimspec.bench.cli import build_parser

    monkeypatch.setenv("SLIMSPEC_CACHE", str(tmp_path))  # no reference drafter is built here
    args = build_parser().parse_args(["e2e", "--target", "not-built", "--k-sweep", "", "--out", str(tmp_path)])
    assert args.dtype == ["bf16", "fp32"] and args.modes == ["greedy", "sample"] and args.k == 5
    assert e2e.main(args) == 2
    assert "slimspec-train reference" in capsys.readouterr().err
    assert e2e.parse_drafter_specs(["a=/x", "b=/y=z"]) == {"a": "/x", "b": "/y=z"}
    with pytest.raises(SystemExit):
        e2e.parse_drafter_specs(["nopath"])
    assert not math.isnan(e2e.predicted_speedup(1.0, 0.0, 0.0))
