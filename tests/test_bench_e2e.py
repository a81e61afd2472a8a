"""slimspec-bench e2e: the performance model, the targets check, and the whole pipeline on a tiny random target."""

import json

import pytest
import torch

from slimspec.bench import e2e, e2e_plots, e2e_report, e2e_run, perf_model
from slimspec.bench.timers import CallTimes, timed_generate
from slimspec.runner import Method, Tally, draft_length, prompt_lookup, run_methods
from test_generate import drafter_for, tiny_target
from test_train import tiny_tokenizer

KEYS = {"tokens_per_s", "tau", "speedup_vs_plain", "per_position_acceptance", "time_split_ms_per_pass",
        "identical_to_plain", "flip_rate", "passes", "new_tokens", "draft_ms_per_token"}


def test_perf_model_formula_and_bound():
    assert perf_model.predicted_speedup(1.0, 0.25, 1.0) == pytest.approx(1.6)
    assert perf_model.predicted_speedup(0.9, 0.5, 3.0) == pytest.approx(0.9 * 4.0 / 2.5)
    assert perf_model.predicted_speedup(1.0, 1.0, 7.0) == pytest.approx(1.0)  # same head cost: no gain
    assert perf_model.predicted_speedup(0.98, 1e-9, 2.0) == pytest.approx(0.98 * 3.0)  # nu -> 0: rho_tau (1 + kappa)


def _method(tps, tau, head_ms_per_token, split):
    return dict(tokens_per_s=tps, tau=tau, head_ms_per_drafted_token=head_ms_per_token,
                time_split_ms_per_pass=dict(zip(e2e_run.SPLIT_PARTS, split)))


def test_perf_model_inputs_and_targets_on_hand_numbers():
    methods = {
        "plain": _method(10.0, 1.0, None, (10, 0, 0, 0)),
        "prompt_lookup": _method(12.0, 1.3, None, (10, 0, 0, 1)),
        "dense": _method(10.0, 3.0, 2.0, (6, 1, 4, 1)),  # kappa = 4 / (6 + 1 + 1) = 0.5
        "slimspec-d8": _method(15.0, 2.7, 0.5, (6, 1, 1, 1)),
    }
    p = perf_model.perf_model(methods, "dense")["slimspec-d8"]
    assert (p["rho_tau"], p["nu"], p["kappa"]) == pytest.approx((0.9, 0.25, 0.5))
    assert p["predicted"] == pytest.approx(0.9 * 1.5 / 1.125) and p["measured"] == pytest.approx(1.5)
    assert perf_model.perf_model(methods, "missing") is None
    roles = dict(subject="slimspec-d8", dense="dense")  # no truncated drafter: its row is skipped
    rows = {r["target"]: r for r in perf_model.check_targets(methods, roles)}
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
    runs = e2e_run.run_e2e(target=target, tokenizer=tokenizer, drafters=drafters, prompts=prompts,
                           dtype_name="fp32", modes=("greedy", "sample"), k=3, max_new_tokens=8, progress=False,
                           hybrid=["slimspec-d8"])
    sweep = e2e_run.run_k_sweep(target=target, tokenizer=tokenizer,
                                drafters={"slimspec-d8": drafters["slimspec-d8"]}, prompts=prompts[:1],
                                dtype_name="fp32", ks=[2, 4], max_new_tokens=8, progress=False)
    roles = perf_model.infer_roles(drafters)
    result = perf_model.build_result(target_name="tiny", prompts=len(prompts), max_new_tokens=8, k=3, runs=runs,
                                     k_sweep=sweep, roles=roles)
    return drafters, saved, result


def test_run_e2e_on_a_tiny_target(tiny_run):
    drafters, saved, r = tiny_run
    assert set(r["runs"]) == {"fp32/greedy", "fp32/sample"}
    for key, run in r["runs"].items():
        methods = run["methods"]
        assert list(methods) == ["plain", "prompt_lookup", "dense", "slimspec-d8", "slimspec-d8+lookup"]
        for name, m in methods.items():
            assert KEYS <= set(m), (name, KEYS - set(m))
            assert m["new_tokens"] == 16 and m["passes"] >= 2 and m["tokens_per_s"] > 0
            assert set(m["time_split_ms_per_pass"]) == set(e2e_run.SPLIT_PARTS)
            if name in drafters or name == "slimspec-d8+lookup":  # 2 prompts: each one's prefill verifies nothing
                assert m["tau"] == pytest.approx((m["new_tokens"] - 2) / (m["passes"] - 2))
        assert methods["plain"]["speedup_vs_plain"] == 1.0 and methods["plain"]["tau"] == 1.0
        assert methods["plain"]["passes"] == 16  # one forward per token
        for name in drafters:
            m = methods[name]
            assert len(m["per_position_acceptance"]) == 3 and m["draft_ms_per_token"] > 0
            assert m["time_split_ms_per_pass"]["drafter_head"] > 0
        hybrid = methods["slimspec-d8+lookup"]
        assert hybrid["kind"] == "hybrid" and "lookup" in hybrid["accepted_share"]  # the prompts repeat: it proposed
        assert "lookup" not in methods["slimspec-d8"]["accepted_share"]
        if run["mode"] == "greedy":  # lossless: every drafter reproduces plain greedy exactly
            for name in ["prompt_lookup", *drafters, "slimspec-d8+lookup"]:
                assert methods[name]["identical_to_plain"] == "2/2" and methods[name]["flip_rate"] == 0.0, name
        else:
            assert methods["dense"]["identical_to_plain"] is None
    for name, d in drafters.items():  # the drafters come back unattached, with their own draft length
        assert d.attached_target is None and d.generation_config.num_assistant_tokens == saved[name]
    assert r["perf_model"]["fp32/greedy"]["slimspec-d8"]["kappa"] > 0
    assert "slimspec-d8+lookup" not in r["perf_model"]["fp32/greedy"]  # the head model is not about lookup drafts
    assert drafters["slimspec-d8"].generation_config.prompt_lookup_num_tokens is None  # the hybrid call's setting
    assert r["k_sweep"]["ks"] == [2, 4] and set(r["k_sweep"]["methods"]) == {"prompt_lookup", "slimspec-d8"}
    assert r["targets"] == [] and "bf16 greedy" in r["targets_note"]


def test_report_and_plots_are_written(tiny_run, tmp_path):
    _, _, r = tiny_run
    report = e2e_report.write_outputs(r, tmp_path)
    assert (tmp_path / "report.md").read_text() == report
    for section in ("## fp32/greedy", "## fp32/sample", "Per-position acceptance", "Performance model", "K sweep",
                    "Targets"):
        assert section in report
    loaded = json.loads((tmp_path / "results.json").read_text())
    assert loaded["runs"]["fp32/greedy"]["methods"]["plain"]["speedup_vs_plain"] == 1.0
    for name in e2e_plots.PLOTS:
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
    with pytest.raises(SystemExit):
        e2e.parse_drafter_specs(["plain=/x"])  # a method name, not a drafter
    assert perf_model.predicted_speedup(0.9, 0.3, 0.0) == pytest.approx(0.9)  # free dense head: only tau counts


def test_drafters_and_roles_come_from_arguments_or_a_reference_report(tmp_path):
    report = tmp_path / "report-abc.json"
    members = {"dense": dict(folder="/d", tau=1.5), "slimspec-d8": dict(folder="/s", tau=1.4)}
    report.write_text(json.dumps(dict(target="t", members=members, **{"converted-d8-unhealed": dict(tau=1.0)})))
    assert e2e.reference_report_folders(report) == {"dense": "/d", "slimspec-d8": "/s"}
    assert e2e.parse_roles(["subject=mine"], ["mine", "dense"]) == {"subject": "mine"}
    for bad in (["subject=absent"], ["fastest=mine"], ["subject"]):
        with pytest.raises(SystemExit):
            e2e.parse_roles(bad, ["mine"])


def test_roles_follow_the_heads_not_the_names():
    target = tiny_target()
    drafters = {"a": drafter_for(target, head_rank=None), "b": drafter_for(target, head_rank=4),
                "c": drafter_for(target, head_rank=None, draft_vocab_size=30),
                "d": drafter_for(target), "e": drafter_for(target)}  # d/8 of 48 = 6
    assert perf_model.infer_roles(drafters) == dict(subject="d", dense="a", truncated="c")
    assert perf_model.infer_roles(drafters, dict(subject="e")) == dict(subject="e", dense="a", truncated="c")


def test_runner_tallies_and_the_time_split_adds_up():
    target, tokenizer = tiny_target(), tiny_tokenizer()
    drafter = drafter_for(target)
    methods = [Method("plain", "plain"), Method("d8", "drafter", 2, drafter)]
    tallies = run_methods(target, tokenizer, methods, ["t5 t6 t7 t8 t5 t6", "t9 t10 t11"],
                          dict(do_sample=False, max_new_tokens=6), instrument=timed_generate)
    plain, assisted = tallies["plain"], tallies["d8"]
    assert assisted.identical == plain.identical == plain.prompts == 2 and assisted.new_tokens == 12
    assert [torch.equal(a, b) for a, b in zip(plain.outputs, assisted.outputs)] == [True, True]
    stats = assisted.merged_stats()
    assert stats.new_tokens == 12 and max(stats.drafted_per_pass) == 2 and stats.prompt_length > 0
    times = sum(assisted.timings, CallTimes())
    assert times.target_calls == stats.target_passes and sum(t.target_calls for t in plain.timings) == 12
    assert times.target_seconds + times.proposer_seconds < assisted.seconds
    for part in (times.body_seconds, times.head_seconds, times.select_seconds, times.proposer_own_seconds):
        assert part > 0
    assert drafter.attached_target is None and drafter.generation_config.num_assistant_tokens == 5
    assert "forward" not in vars(target) and "head" not in vars(drafter)  # the timers are gone


def test_draft_length_and_prompt_lookup_are_restored_whatever_happens():
    drafter = drafter_for(tiny_target())
    config = drafter.generation_config
    config.num_assistant_tokens_schedule = "heuristic"
    config.max_matching_ngram_size = 4
    with pytest.raises(RuntimeError):
        with draft_length(drafter, 3), prompt_lookup(drafter, 7, ngram=2, min_ngram=2):
            assert (config.num_assistant_tokens, config.num_assistant_tokens_schedule) == (3, "constant")
            assert (config.prompt_lookup_num_tokens, config.max_matching_ngram_size) == (7, 2)
            assert config.min_matching_ngram_size == 2
            raise RuntimeError("a failed generate")
    assert (config.num_assistant_tokens, config.num_assistant_tokens_schedule) == (5, "heuristic")
    assert (config.prompt_lookup_num_tokens, config.max_matching_ngram_size) == (None, 4)
    assert getattr(config, "min_matching_ngram_size", None) is None


# --- slimspec-bench cpu ---------------------------------------------------------------------------------------------
def _rows(speedups: dict) -> dict:
    return {c: dict(speedup=s) for c, s in speedups.items()}


def test_cpu_targets_follow_the_cpu_class():
    from slimspec.bench.cpu import verdict

    rows = _rows(dict(prose=1.0, code=1.6, all=1.35))
    native, avx2 = verdict(rows, native_bf16=True), verdict(rows, native_bf16=False)
    assert native[0].endswith("met") and native[1].endswith("missed")  # > 1.0x in every category is strict
    assert avx2[0].endswith("met") and avx2[1].endswith("met")  # >= 0.97x is not
    assert verdict(_rows(dict(prose=0.96, all=1.2)), native_bf16=False)[1].endswith("missed")
    assert verdict(_rows(dict(prose=1.1, all=1.29)), native_bf16=True)[0].endswith("missed")


def test_the_fastest_setup_is_measured_and_kept(monkeypatch):
    """Four plain setups timed (the demo's and bench cpu's one measurement): the fastest dtype is chosen, and every
    target is left in its own faster setup, packed only where packing measured faster."""
    import generation_slimspec
    import kernels_slimspec
    from slimspec.machine import fastest_setup

    targets = {"bf16": (tiny_target(), None), "fp32": (tiny_target(), None)}
    ms = {("bf16", False): 10.0, ("bf16", True): 12.0, ("fp32", False): 8.0, ("fp32", True): 7.0}

    def fake_pass(target, lengths, *args):
        name = next(k for k, (t, _) in targets.items() if t is target)
        return [ms[(name, kernels_slimspec.packed_count(target) > 0)] / 1e3] * len(lengths)

    monkeypatch.setattr(generation_slimspec, "_target_pass_seconds", fake_pass)
    best, passes = fastest_setup(targets)
    can_pack = kernels_slimspec.packed_count(targets["fp32"][0]) > 0
    assert best == "fp32" and passes["fp32, as loaded"] == 8.0 and passes["bf16, as loaded"] == 10.0
    if can_pack:  # oneDNN here: packing fp32 measured faster and stays; bf16 packing measured slower and is undone
        assert passes["fp32, packed"] == 7.0 and passes["bf16, packed"] == 12.0
        assert kernels_slimspec.packed_count(targets["bf16"][0]) == 0


TEXTS = [torch.tensor([[1, 2, 3]]), torch.tensor([[1, 2, 4]])]  # what each method wrote on the two prompts


def _tally(tokens: int, stats=None, outputs=TEXTS, prompt_seconds=(0.5, 0.5)) -> Tally:
    """One second, ``tokens`` new tokens over 2 prompts (both identical to plain), a drafter's stats if given."""
    return Tally(seconds=1.0, new_tokens=tokens, identical=2, prompts=2, stats=[stats] if stats else [],
                 outputs=list(outputs), prompt_seconds=list(prompt_seconds))


def _stats(drafted: list, accepted: list, sources: list):
    from generation_slimspec import SlimSpecGenerateStats

    return SlimSpecGenerateStats(drafted_per_pass=drafted, accepted_per_pass=accepted, source_per_pass=sources,
                                 chosen_draft_lengths=[3])


def cpu_results(hybrid_prose: int = 14) -> dict:
    """Injected tallies for two categories: SlimSpec wins prose, lookup wins code, the hybrid takes each."""
    alone = _stats([3, 3], [1, 2], ["drafter", "drafter"])
    return {"prose": dict(plain=_tally(10), lookup=_tally(11), slimspec=_tally(14, alone),
                          hybrid=_tally(hybrid_prose, _stats([3, 0, 4], [1, 0, 3], ["drafter", "none", "lookup"]),
                                        outputs=[TEXTS[0], torch.tensor([[1, 2, 5]])], prompt_seconds=(0.4, 0.6))),
            "code": dict(plain=_tally(10), lookup=_tally(20), slimspec=_tally(13, alone),
                         hybrid=_tally(25, _stats([10, 10], [9, 7], ["lookup", "lookup"])))}


def test_cpu_summary_has_the_hybrid_columns():
    """Per category and overall: the hybrid's tokens/s, tau, ratio to the better of lookup and SlimSpec alone, and
    the share of its accepted drafts from each source; in the report with its targets."""
    from types import SimpleNamespace

    from slimspec.bench.cpu import format_report, summarize

    rows = summarize(cpu_results())
    prose, code, total = rows["prose"], rows["code"], rows["all"]
    assert (prose["hybrid"], prose["hybrid_tau"], prose["hybrid_vs_best"]) == (14.0, (4 + 3) / 3, 1.0)
    assert (prose["lookup_share"], prose["drafter_share"]) == (0.75, 0.25)
    assert (code["hybrid_vs_best"], code["hybrid_tau"], code["lookup_share"], code["drafter_share"]) == (
        1.25, 9.0, 1.0, 0.0)
    assert total["hybrid_vs_best"] == pytest.approx(19.5 / 15.5) and total["lookup_share"] == pytest.approx(19 / 20)
    assert total["hybrid_tau"] == pytest.approx((20 + 5) / 5) and total["hybrid_identical"] == "4/4"
    args = SimpleNamespace(per_category=2, max_new_tokens=8, drafter="d", lookup_tokens=10, hybrid=(10, 3, 2))
    report = format_report("m", False, "bf16, as loaded", {"bf16, as loaded": 100.0}, rows, args)
    # same text: prose against SlimSpec on prompt 0 only (0.5 s / 0.4 s); overall against lookup on 3 of 4 prompts
    assert (prose["better"], prose["same_text"], prose["hybrid_vs_best_same_text"]) == ("slimspec", "1/2", 1.25)
    assert (total["better"], total["same_text"]) == ("lookup", "3/4")
    assert total["hybrid_vs_best_same_text"] == pytest.approx(1.5 / 1.4)
    assert "| code | 25.0 | 1.25x | lookup | 1.00x (2/2) | 9.00 | 100% | 0% | 2/2 |" in report
    assert "| prose | 14.0 | 1.00x | slimspec | 1.25x (1/2) | 2.33 | 75% | 25% | 2/2 |" in report
    assert "| **all** | 19.5 | 1.26x | lookup | 1.07x (3/4) | 5.00 | 95% | 5% | 4/4 |" in report
    assert "hybrid overall 1.26x the better of lookup and SlimSpec >= 1.1x: met" in report
    assert "lookup blocks of up to 10 tokens after n-gram matches of 2 to 3 tokens" in report


def test_cpu_other_hybrid_settings_run_beside_and_are_no_reference_drafters():
    """--also-hybrid settings: tokens/s and the ratio to the better method alone per category, in a table of
    their own; never counted as reference drafters."""
    from types import SimpleNamespace

    from slimspec.bench.cpu import format_report, summarize

    results = cpu_results()
    results["prose"]["hybrid 10,3,1"] = _tally(7, _stats([3], [1], ["drafter"]))
    results["code"]["hybrid 10,3,1"] = _tally(30, _stats([10], [9], ["lookup"]))
    rows = summarize(results)
    assert rows["prose"]["members"] == {} and rows["prose"]["other_hybrids"]["10,3,1"]["vs_best"] == 0.5
    assert rows["all"]["other_hybrids"]["10,3,1"]["tokens_per_s"] == 18.5
    args = SimpleNamespace(per_category=2, max_new_tokens=8, drafter="d", lookup_tokens=10, hybrid=(10, 3, 2))
    report = format_report("m", False, "bf16, as loaded", {"bf16, as loaded": 100.0}, rows, args)
    assert "| category | hybrid 10,3,2 | hybrid 10,3,1 |" in report
    assert "| code | 25.0 (1.25x) | 30.0 (1.50x) |" in report and "| **all** | 19.5 (1.26x) | 18.5 (1.19x) |" in report
    assert "same data and budget" not in report


def test_cpu_hybrid_targets():
    from slimspec.bench.cpu import hybrid_verdict, summarize

    assert [v.rsplit(" ", 1)[1] for v in hybrid_verdict(summarize(cpu_results()))] == ["met", "met"]
    behind = hybrid_verdict(summarize(cpu_results(hybrid_prose=13)))  # 13 / 14 tokens/s: more than 3% behind
    assert behind[1] == "hybrid in every category >= 0.97x the better (lowest 0.93x): missed"
    assert hybrid_verdict(summarize(cpu_results(hybrid_prose=6)))[0].endswith("missed")  # 31 / 31 overall < 1.1x


def test_cpu_shipped_default_and_sampling_targets():
    """The shipped default (the hybrid) against plain in every category and against the drafter's chain alone;
    sampling has its own targets (>= 1.2x overall on native bf16, >= 0.97x everywhere) and report title."""
    from types import SimpleNamespace

    from slimspec.bench.cpu import default_verdict, format_report, summarize, verdict

    rows = summarize(cpu_results(hybrid_prose=12))  # prose: hybrid 12 vs plain 10 and the chain 14
    assert rows["prose"]["hybrid_vs_plain"] == pytest.approx(1.2) and rows["prose"]["hybrid_vs_slimspec"] == (
        pytest.approx(12 / 14))
    greedy = default_verdict(rows, native_bf16=False)
    assert greedy[2] == "shipped default >= 1.0x plain in every category (lowest 1.20x): met"
    assert greedy[3].startswith("shipped default against the drafter's chain alone: overall 1.37x, lowest category "
                                "0.86x") and greedy[3].endswith("missed)")
    sampled = {c: dict(speedup=s) for c, s in dict(prose=0.96, code=1.5, all=1.25).items()}
    assert [v.rsplit(" ", 1)[1] for v in verdict(sampled, True, sample=True)] == ["met", "missed"]
    assert verdict(dict(prose=dict(speedup=0.98), all=dict(speedup=0.98)), False, sample=True)[0].endswith("met")
    args = SimpleNamespace(per_category=2, max_new_tokens=8, drafter="d", lookup_tokens=10, hybrid=(10, 3, 2),
                           sample=True)
    report = format_report("m", True, "fp32, as loaded", {"fp32, as loaded": 100.0}, rows, args)
    assert report.startswith("# SlimSpec against plain generate on this CPU, sampling")
    assert "--max-new-tokens 8 --sample`" in report and "shipped default (hybrid) overall" in report
    assert ">= 1.0x plain in every category" not in report and "never below" not in report  # greedy targets only


def test_lookup_analysis_counts_positions_and_accepted_tokens_by_matched_ngram():
    from slimspec.bench.lookup import accepted_prefix, analyse, matched_ngram

    assert accepted_prefix(torch.tensor([4, 5, 6]), torch.tensor([4, 5, 9])) == 2
    assert accepted_prefix(torch.tensor([4]), torch.tensor([7, 5])) == 0
    ids = torch.tensor([1, 2, 3, 9, 1, 2, 3, 9])
    assert matched_ngram(ids[:6], 3, 4)[0] == 2 and matched_ngram(ids[:7], 3, 4)[0] == 3
    assert matched_ngram(torch.tensor([1, 2, 3]), 3, 4)[0] == 0
    table = analyse([("code", ids, 4)], max_ngram=3, tokens=4)
    # t=4: "9" unseen -> no match; t=5: "1" -> [2, 3, 9, 1] vs [2, 3, 9] -> 3; t=6: "1 2" -> [3, 9, 1, 2] vs [3, 9]
    # -> 2; t=7: "1 2 3" -> [9, 1, 2, 3] vs [9] -> 1
    assert table[("code", 0)] == [1, 0] and table[("code", 1)] == [1, 3] and table[("code", 2)] == [1, 2]
    assert table[("code", 3)] == [1, 1] and table[("all", 3)] == [1, 1]


def test_a_drafter_method_runs_the_drafter_alone_even_when_it_carries_a_lookup_setting():
    from test_train import PROMPTS

    target = tiny_target()
    drafter = drafter_for(target)
    drafter.generation_config.prompt_lookup_num_tokens = 4
    prompts = [" ".join([PROMPTS[0]] * 4)]  # repeats: a hybrid would look up
    t = run_methods(target, tiny_tokenizer(), [Method("plain", "plain"), Method("alone", "drafter", drafter=drafter),
                                               Method("hybrid", "hybrid", 4, drafter=drafter)],
                    prompts, dict(do_sample=False, max_new_tokens=12))
    assert "lookup" not in t["alone"].stats[0].source_per_pass and "lookup" in t["hybrid"].stats[0].source_per_pass
    assert len(t["hybrid"].prompt_seconds) == 1 and t["hybrid"].prompt_seconds[0] == t["hybrid"].seconds
    assert drafter.generation_config.prompt_lookup_num_tokens == 4  # restored after the call


def test_rounds_keep_each_methods_fastest_call(monkeypatch):
    """rounds=3: the methods run three times in turn on each prompt; each keeps its fastest call's seconds, with that
    call's output and statistics; rounds < 1 is refused."""
    import slimspec.runner as runner

    target = tiny_target()
    drafter = drafter_for(target)
    clock, real = iter([5.0, 4.0, 1.0, 3.0, 2.0, 6.0] * 2), runner.generate_once
    calls = []

    def timed(target, method, inputs, gen_kwargs, instrument=None):
        out, _, record = real(target, method, inputs, gen_kwargs, instrument)
        calls.append((method.name, method.drafter.last_generate_stats if method.uses_drafter else None))
        return out, next(clock), record

    monkeypatch.setattr(runner, "generate_once", timed)
    methods = [Method("plain", "plain"), Method("alone", "drafter", 3, drafter=drafter)]
    t = run_methods(target, tiny_tokenizer(), methods, ["t5 t6 t7 t8", "t9 t10 t11"],
                    dict(do_sample=False, max_new_tokens=6), warmup=False, rounds=3)
    # per prompt, rounds in turn: plain 5, alone 4, plain 1, alone 3, plain 2, alone 6
    assert t["plain"].prompt_seconds == [1.0, 1.0] and t["alone"].prompt_seconds == [3.0, 3.0]
    assert t["alone"].stats == [calls[3][1], calls[9][1]] and t["alone"].identical == 2
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        run_methods(target, tiny_tokenizer(), methods, ["t5"], dict(max_new_tokens=2), rounds=0)


def test_cpu_reference_drafters_side_by_side():
    """Reference drafters (same data and budget) get tau and tokens/s per category and the head targets, found by
    role; a bench without them has no such section."""
    from types import SimpleNamespace

    from slimspec.bench.cpu import format_report, member_verdict, summarize

    results = cpu_results()
    members = {"prose": dict(d8=(12, [1, 1]), dense=(10, [2, 2]), trunc=(12, [1, 2])),
               "code": dict(d8=(12, [2, 2]), dense=(10, [3, 3]), trunc=(10, [2, 1]))}
    for c, by_name in members.items():
        for name, (tokens, accepted) in by_name.items():
            results[c][name] = _tally(tokens, _stats([5, 5], accepted, ["drafter", "drafter"]))
    rows = summarize(results)
    assert rows["prose"]["members"]["d8"] == dict(tau=2.0, tokens_per_s=12.0, identical="2/2")
    assert rows["all"]["members"]["trunc"]["tau"] == pytest.approx(10 / 4)
    roles = dict(subject="d8", dense="dense", truncated="trunc")
    assert member_verdict(rows, roles) == ["tau(d/8) >= 0.97x tau(dense): 0.714x, missed",
                                           "tokens/s(d/8) >= 1.05x tokens/s(truncated-32k): 1.091x, met"]
    assert member_verdict(rows, dict(subject="d8")) == []
    args = SimpleNamespace(per_category=2, max_new_tokens=8, drafter="d", lookup_tokens=10, hybrid=(10, 3, 2),
                           members_k=5)
    report = format_report("m", True, "bf16, packed", {"bf16, packed": 100.0}, rows, args,
                           [("r.json", ["d8", "dense", "trunc"], roles)])
    assert "| **all** | 2.50 | 12.0 | 3.50 | 10.0 | 2.50 | 11.0 |" in report and "0.714x, missed" in report
    # a second report's section has only its own drafters (here d8 against trunc, no dense)
    two = format_report("m", True, "bf16, packed", {"bf16, packed": 100.0}, rows, args,
                        [("r.json", ["d8", "dense", "trunc"], roles),
                         ("t.json", ["d8", "trunc"], dict(subject="d8", truncated="trunc"))])
    second = two[two.index("(`t.json`)"):]
    assert "| **all** | 2.50 | 12.0 | 2.50 | 11.0 |" in second and "0.714x" not in second and "1.091x, met" in second
    assert "same data and budget" not in format_report("m", True, "bf16, packed", {"bf16, packed": 100.0},
                                                       summarize(cpu_results()), args)


def test_cpu_reference_reports_share_drafters_and_label_them_by_steps(tmp_path):
    """Two reports (equal steps, equal time): the drafter both hold runs once; with several reports every label
    carries its steps; one report keeps the plain names; two different drafters under one label are refused."""
    from slimspec.bench.cpu import reference_members

    def report(name, members, max_steps=1200):
        path = tmp_path / name
        path.write_text(json.dumps(dict(recipe=dict(max_steps=max_steps), members=members)))
        return str(path)

    steps = report("steps.json", {"slimspec-d8": dict(folder="/d8"), "truncated-32k": dict(folder="/t1200")})
    time = report("time.json", {"slimspec-d8": dict(folder="/d8", steps=1200),
                                "truncated-32k": dict(folder="/t580", steps=580)})
    folders, sections = reference_members([steps, time])
    assert folders == {"slimspec-d8@1200": "/d8", "truncated-32k@1200": "/t1200", "truncated-32k@580": "/t580"}
    assert sections == [(steps, ["slimspec-d8@1200", "truncated-32k@1200"]),
                        (time, ["slimspec-d8@1200", "truncated-32k@580"])]
    assert reference_members([steps]) == ({"slimspec-d8": "/d8", "truncated-32k": "/t1200"},
                                          [(steps, ["slimspec-d8", "truncated-32k"])])
    other = report("other.json", {"slimspec-d8": dict(folder="/elsewhere")})
    with pytest.raises(SystemExit, match="two different drafters are slimspec-d8@1200"):
        reference_members([steps, other])
