"""slimspec-convert: tiny checkpoints in each published format, written by the tests, converted and checked
numerically against the source weights."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import eagle3_reference as ref
from configuration_slimspec import SlimSpecConfig
from slimspec import HUB_CODE
from slimspec.convert import ConversionError, convert_drafter, read_source
from slimspec.convert.cli import main as cli_main
from eagle3_writers import DT, D, L, V, WRITERS, eagle_state
from modeling_slimspec import SlimSpecDrafter

FAST = dict(validate=False, progress=False)


def source(tmp_path, fmt, draft_vocab=None, embed=False, dt=DT, **kw):
    state = eagle_state(draft_vocab=draft_vocab, embed=embed, dt=dt)
    folder = WRITERS[fmt](tmp_path / f"src-{fmt}", state, draft_vocab=draft_vocab, **kw)
    return folder, state


def logits_of(folder, feats, tokens, embedding):
    model = SlimSpecDrafter.from_pretrained(folder).eval()
    if model.embed_tokens is None:
        model.use_target_embeddings(embedding)
    with torch.no_grad():
        return model(input_ids=tokens, target_hidden_states=feats).logits[0].double(), model


def probe_inputs(seed=0, T=6):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, T, 3 * DT, generator=g), torch.randint(0, V, (1, T), generator=g)


@pytest.mark.parametrize("fmt", ["eagle", "specforge", "speculators"])
@pytest.mark.parametrize("draft_vocab", [None, 40])
def test_full_rank_conversion_reproduces_the_source(tmp_path, fmt, draft_vocab):
    src, state = source(tmp_path, fmt, draft_vocab=draft_vocab)
    out = tmp_path / "out"
    report = convert_drafter(source=str(src), output=str(out), rank=32, target_num_layers=L, **FAST)
    assert report.source_format == fmt and report.rank == 32 and report.energy_kept == pytest.approx(1.0, abs=1e-6)
    feats, tokens = probe_inputs()
    embedding = torch.nn.Embedding(V, 32)
    got, model = logits_of(out, feats, tokens, embedding)
    cfg = model.config
    _, want = ref.first_step(state, cfg, embedding.weight.detach(), feats[0], tokens[0])
    torch.testing.assert_close(got, want, atol=5e-4, rtol=1e-4)
    if draft_vocab:  # d2t/t2d survive unchanged
        assert torch.equal(model.d2t, state["d2t"]) and torch.equal(model.t2d, state["t2d"])


def test_low_rank_error_falls_as_rank_grows(tmp_path):
    src, state = source(tmp_path, "eagle")
    feats, tokens = probe_inputs()
    embedding = torch.nn.Embedding(V, 32)
    _, want = ref.first_step(state, _cfg(tmp_path, src), embedding.weight.detach(), feats[0], tokens[0])
    errors, energies = [], []
    for r in (2, 8, 16, 32):
        out = tmp_path / f"r{r}"
        report = convert_drafter(source=str(src), output=str(out), rank=r, target_num_layers=L, **FAST)
        got, _ = logits_of(out, feats, tokens, embedding)
        errors.append(float((got - want).abs().max()))
        energies.append(report.energy_kept)
        assert report.quality["probes"] > 0 and not report.quality["real"]
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-3 < errors[0]
    assert energies == sorted(energies)


def _cfg(tmp_path, src):
    return SlimSpecConfig(**read_source(src, num_layers=L).config)


@pytest.mark.parametrize("fmt,ids,expected", [
    ("eagle", None, [2, 4, 5]),  # SafeAILab: inputs of layers [2, L//2, L-3]
    ("specforge", None, [2, 4, 5]),  # SpecForge default [1, L//2-1, L-4] names the same tensors
    ("specforge", [1, 3, 4], [2, 4, 5]),  # SpecForge ids number layer outputs: +1
    ("specforge", [0, 6, 2], [1, 3, 7]),  # concatenated in ascending layer order
    ("speculators", None, [2, 4, 5]),
    ("speculators", [1, 3, 6], [1, 3, 6]),  # vLLM capture ids are layer inputs: as is
])
def test_layer_ids_land_where_the_source_meant_them(tmp_path, fmt, ids, expected):
    kw = {} if fmt == "eagle" else dict(layer_ids=ids)
    src, _ = source(tmp_path, fmt, **kw)
    assert read_source(src, num_layers=L).config["target_layer_ids"] == expected


def test_speculators_variants_are_supported_or_refused_by_name(tmp_path):
    src, _ = source(tmp_path, "speculators", norm_before_residual=True)
    assert read_source(src, num_layers=L).config["norm_before_residual"] is True
    for flag in ("fc_norm", "norm_before_fc", "norm_output"):
        folder, _ = source(tmp_path / flag, "speculators", **{flag: True})
        with pytest.raises(ConversionError, match=flag):
            read_source(folder, num_layers=L)
    folder, _ = source(tmp_path / "sf", "specforge", fc_norm=True)
    with pytest.raises(ConversionError, match="fc_norm"):
        read_source(folder, num_layers=L)


def test_embeddings_are_kept_when_the_source_has_them(tmp_path):
    src, state = source(tmp_path, "specforge", embed=True)
    out = tmp_path / "out"
    convert_drafter(source=str(src), output=str(out), rank="d/8", target_num_layers=L, **FAST)
    model = SlimSpecDrafter.from_pretrained(out)
    assert torch.equal(model.embed_tokens.weight, state["embed_tokens.weight"])
    assert model.config.head_rank == 4
    out2 = tmp_path / "out2"
    convert_drafter(source=str(src), output=str(out2), rank="d/8", target_num_layers=L, keep_embeddings=False, **FAST)
    assert SlimSpecDrafter.from_pretrained(out2).embed_tokens is None


def test_export_round_trip_reproduces_the_original_tensors(tmp_path):
    src, state = source(tmp_path, "eagle", draft_vocab=40, embed=True)  # its own embedding: exportable with DT != D
    slim, back = tmp_path / "slim", tmp_path / "back"
    convert_drafter(source=str(src), output=str(slim), rank=32, target_num_layers=L, **FAST)
    convert_drafter(source=str(slim), output=str(back), export="eagle", **FAST)
    exported = load_file(back / "model.safetensors")
    assert sorted(exported) == sorted(state)
    for key, tensor in state.items():
        if key == "lm_head.weight":
            torch.testing.assert_close(exported[key], tensor, atol=1e-5, rtol=1e-5)  # up @ down at full rank
        else:
            assert torch.equal(exported[key], tensor), key
    config = json.loads((back / "config.json").read_text())
    assert config["draft_vocab_size"] == 40 and config["architectures"] == ["LlamaForCausalLM"]
    assert "target_hidden_size" in config  # DT != D: kept, so EAGLE sizes fc for 3 * DT
    with pytest.raises(ConversionError, match=r"speculators sizes fc as 3 \* hidden_size and ignores target_hidden"):
        convert_drafter(source=str(slim), output=str(tmp_path / "spec"), export="speculators", **FAST)
    # a speculators source of the drafter's own width, which records its verifier, round-trips
    src2, state2 = source(tmp_path / "same-width", "speculators", draft_vocab=40, embed=True, dt=D)
    spec = tmp_path / "spec"
    convert_drafter(source=str(src2), output=str(spec), export="speculators", target_num_layers=L, **FAST)
    back2 = read_source(spec, num_layers=L)
    assert back2.format == "speculators" and back2.config["target_name_or_path"] == "someone/tiny-target"
    assert all(torch.equal(back2.state_dict[k], v) for k, v in state2.items())
    verifier = json.loads((spec / "config.json").read_text())["speculators_config"]["verifier"]
    assert verifier == {"name_or_path": "someone/tiny-target", "architectures": ["LlamaForCausalLM"]}


def test_energy_selects_the_smallest_rank(tmp_path):
    src, _ = source(tmp_path, "eagle")
    report = convert_drafter(source=str(src), output=str(tmp_path / "o"), energy=0.9, target_num_layers=L, **FAST)
    assert report.energy_kept >= 0.9
    smaller = convert_drafter(source=str(src), output=str(tmp_path / "o2"), rank=report.rank - 1, target_num_layers=L,
                              **FAST)
    assert smaller.energy_kept < 0.9


def _entries(path):
    return sorted(p.name for p in path.iterdir())


@pytest.mark.parametrize("case,match", [
    ("unknown_format", "unknown checkpoint format"),
    ("missing_tensor", r"missing tensors \['midlayer.mlp.up_proj.weight'\]"),
    ("unexpected_tensor", "unexpected tensors"),
    ("wrong_shape", "fc.weight"),
    ("rank_too_large", "rank 33 does not fit"),
    ("corrupt", "corrupt"),
    ("no_layers", "--target"),
    ("no_maps", "no d2t/t2d"),
])
def test_bad_inputs_fail_clearly_and_leave_nothing(tmp_path, case, match):
    state = eagle_state(draft_vocab=40 if case == "no_maps" else None)
    rank, num_layers = 8, L
    if case == "missing_tensor":
        del state["midlayer.mlp.up_proj.weight"]
    elif case == "unexpected_tensor":
        state["midlayer.extra.weight"] = torch.zeros(3)
    elif case == "wrong_shape":
        state["fc.weight"] = torch.zeros(32, 50)
    elif case == "rank_too_large":
        rank = 33
    elif case == "no_layers":
        num_layers = None
    elif case == "no_maps":
        del state["d2t"], state["t2d"]
    src = WRITERS["specforge"](tmp_path / "src", state, draft_vocab=40 if case == "no_maps" else None)
    if case == "unknown_format":
        (src / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
        from safetensors.torch import save_file
        save_file({"encoder.weight": torch.zeros(2)}, src / "model.safetensors")
    if case == "corrupt":
        data = (src / "model.safetensors").read_bytes()
        (src / "model.safetensors").write_bytes(data[: len(data) // 2])
    before = _entries(tmp_path)
    with pytest.raises(ConversionError, match=match):
        convert_drafter(source=str(src), output=str(tmp_path / "out"), rank=rank, target_num_layers=num_layers, **FAST)
    assert _entries(tmp_path) == before  # no output, no temporary folder left behind


def test_existing_output_is_refused_and_untouched(tmp_path):
    src, _ = source(tmp_path, "eagle")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConversionError, match="already exists; pass --overwrite"):
        convert_drafter(source=str(src), output=str(out), rank=8, target_num_layers=L, **FAST)
    assert _entries(out) == ["keep.txt"]
    convert_drafter(source=str(src), output=str(out), rank=8, target_num_layers=L, overwrite=True, **FAST)
    assert "keep.txt" not in _entries(out) and "model.safetensors" in _entries(out)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_dry_run_writes_nothing(tmp_path):
    src, _ = source(tmp_path, "eagle")
    report = convert_drafter(source=str(src), output=str(tmp_path / "out"), rank=8, target_num_layers=L,
                             dry_run=True, push_to_hub="me/x", **FAST)
    assert not (tmp_path / "out").exists() and "model.safetensors" in report.files and "README.md" in report.files
    assert report.pushed_to is None and any("dry run" in n for n in report.notes)


def test_output_is_a_hub_folder_with_a_model_card(tmp_path):
    src, _ = source(tmp_path, "speculators", draft_vocab=40)
    out = tmp_path / "out"
    convert_drafter(source=str(src), output=str(out), rank="d/8", target_num_layers=L, validate=True, progress=False)
    names = set(_entries(out))
    assert {"config.json", "generation_config.json", "model.safetensors", "README.md", "custom_generate",
            *HUB_CODE} <= names
    card = (out / "README.md").read_text()
    head, body = card.split("---")[1], card.split("---", 2)[2]
    assert "library_name: transformers" in head and "speculative-decoding" in head and "slimspec" in head
    assert "eagle3" in head and "drafter.attach(target)" in body and "--export eagle" in body
    assert "spectral energy kept" in body and "random-normal probes" in body


def test_cli_exit_codes_and_one_line_errors(tmp_path, capsys):
    src, _ = source(tmp_path, "eagle")
    assert cli_main([str(src), str(tmp_path / "out"), "--rank", "d/8", "--target-num-layers", str(L), "--quiet",
                     "--no-validate"]) == 0
    assert "rank 4" in capsys.readouterr().out
    assert cli_main([str(src), str(tmp_path / "out"), "--rank", "4", "--target-num-layers", str(L), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists" in err[0]


def test_cli_runs_as_a_console_script(tmp_path):
    src, _ = source(tmp_path, "eagle")
    proc = subprocess.run([sys.executable, "-m", "slimspec.convert.cli", str(src), str(tmp_path / "o"), "--rank", "99",
                           "--target-num-layers", str(L), "--quiet"], capture_output=True, text=True,
                          cwd=str(__import__("conftest").REPO))
    assert proc.returncode == 1 and proc.stderr.strip().startswith("slimspec-convert: error: rank 99 does not fit")


def test_push_to_hub_against_a_local_fake_hub(tmp_path, monkeypatch):
    import huggingface_hub

    from fake_hub import FakeHub

    src, _ = source(tmp_path, "eagle")
    with FakeHub() as hub:
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
        monkeypatch.setenv("HF_TOKEN", "hf_secret_test_token")
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)
        out = tmp_path / "out"
        report = convert_drafter(source=str(src), output=str(out), rank=8, target_num_layers=L, push_to_hub="me/slim",
                                 private=True, revision="v1", commit_message="convert", **FAST)
        files = hub.files("me/slim", revision="v1")
        assert hub.repos["me/slim"]["private"] is True
        assert files["model.safetensors"] == (out / "model.safetensors").read_bytes()
        assert set(files) == {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
        assert all(r["headers"].get("authorization") == "Bearer hf_secret_test_token" for r in hub.requests)
        assert hub.commits[-1]["summary"] == "convert" and hub.commits[-1]["revision"] == "v1"
    assert report.pushed_to and "hf_secret_test_token" not in report.summary()


def test_factorization_methods_keep_the_exact_energy():
    from slimspec.convert.factorize import factorize, resolve_rank

    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(256, 256, generator=g))[0]
    W = (torch.randn(6000, 256, generator=g) * torch.logspace(0, -2, 256)) @ basis
    for r in (8, 64):
        exact = factorize(W, r, method="exact")
        gram = factorize(W, r, method="gram")
        rand = factorize(W, r, method="randomized")
        assert abs(gram.energy_kept - exact.energy_kept) / exact.energy_kept < 1e-5
        assert abs(rand.energy_kept - exact.energy_kept) / exact.energy_kept < 1e-3  # within 0.1% here
        torch.testing.assert_close(gram.up @ gram.down, exact.up @ exact.down, atol=1e-4, rtol=1e-3)
    half = factorize(W.bfloat16(), 64, method="gram")
    assert half.up.dtype == half.down.dtype == torch.bfloat16  # cast back to the head's dtype
    r90 = resolve_rank("energy:0.9", W)
    assert factorize(W, r90).energy_kept >= 0.9 > factorize(W, r90 - 1).energy_kept
    assert factorize(W, "energy:0.9").rank == r90  # factorize takes every rank form
    with pytest.raises(ValueError, match="rank 257 does not fit a 6000 x 256 head"):
        factorize(W, 257)
    with pytest.raises(ValueError, match="a dense head has nothing to factorize"):
        factorize(W, "dense")


def test_conversion_keeps_the_source_dtype(tmp_path):
    """Quality probes run on an fp32 copy: a bf16 source stays bf16 in every tensor (d2t/t2d keep theirs)."""
    state = eagle_state(draft_vocab=40, dtype=torch.bfloat16)
    src = WRITERS["speculators"](tmp_path / "src", state, draft_vocab=40)
    out = tmp_path / "out"
    convert_drafter(source=str(src), output=str(out), rank="d/8", target_num_layers=L, **FAST)
    saved = load_file(out / "model.safetensors")
    assert {k: v.dtype for k, v in saved.items() if k not in ("d2t", "t2d")} == {
        k: torch.bfloat16 for k in saved if k not in ("d2t", "t2d")}
    assert saved["d2t"].dtype == torch.int64 and saved["t2d"].dtype == torch.bool


def _cli(capsys, *args):
    capsys.readouterr()  # only this run's output
    code = cli_main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("rank", ["dense", "full", "DENSE"])
def test_rank_dense_keeps_the_head_dense(tmp_path, capsys, rank):
    src, state = source(tmp_path, "eagle")
    code, out, _ = _cli(capsys, src, tmp_path / "o", "--rank", rank, "--target-num-layers", L, "--quiet",
                        "--no-validate")
    model = SlimSpecDrafter.from_pretrained(tmp_path / "o")
    assert code == 0 and model.config.head_rank is None
    assert torch.equal(model.lm_head.weight, state["lm_head.weight"])
    assert f"\nhead kept dense ({V * D:,} parameters)\n" in out and "fewer" not in out and "\nrank " not in out


def test_every_rank_form_goes_through_one_grammar(tmp_path, capsys):
    src, _ = source(tmp_path, "eagle")
    common = ["--target-num-layers", L, "--quiet", "--no-validate"]
    ranks = {}
    for i, args in enumerate([["--rank", "energy:0.9"], ["--energy", "0.9"], ["--rank", "0.9"], ["--rank", "d/7"]]):
        code, out, err = _cli(capsys, src, tmp_path / f"o{i}", *args, *common)
        assert code == 0, err
        ranks[" ".join(args)] = SlimSpecDrafter.from_pretrained(tmp_path / f"o{i}").config.head_rank
    assert ranks["--rank energy:0.9"] == ranks["--energy 0.9"] == ranks["--rank 0.9"] and ranks["--rank d/7"] == 4
    code, _, err = _cli(capsys, src, tmp_path / "bad", "--rank", "half", *common)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "head rank 'half' is not understood" in err and "'d/N'" in err and "'dense' / 'full'" in err


def test_full_rank_summary_says_so_and_never_fewer_below_one(tmp_path, capsys):
    src, _ = source(tmp_path, "eagle")
    code, out, _ = _cli(capsys, src, tmp_path / "o", "--rank", D, "--target-num-layers", L, "--quiet", "--no-validate")
    assert code == 0
    assert f"rank {D} (full rank for this {V} x {D} head, so exact), spectral energy kept 100.00%" in out
    assert "MORE than the dense head" in out and "--rank dense keeps the head dense" in out and "fewer" not in out
    code, out, _ = _cli(capsys, src, tmp_path / "o2", "--rank", "d/8", "--target-num-layers", L, "--quiet",
                        "--no-validate")
    assert f"head parameters {V * D:,} -> {(V + D) * 4:,} (" in out and "x fewer parameters and bytes)" in out
    card = (tmp_path / "o" / "README.md").read_text()
    assert "MORE than the dense head" in card and "fewer" not in card


def test_quiet_silences_transformers_progress_bars_and_restores_them(tmp_path, capsys):
    from transformers.utils import logging as hf_logging

    src, _ = source(tmp_path, "eagle")
    enabled = hf_logging.is_progress_bar_enabled()
    _, _, err = _cli(capsys, src, tmp_path / "loud", "--rank", "4", "--target-num-layers", L, "--no-validate")
    if enabled:  # the bar the test is about does show without --quiet
        assert "Writing model shards" in err
    _, _, err = _cli(capsys, src, tmp_path / "quiet", "--rank", "4", "--target-num-layers", L, "--no-validate",
                     "--quiet")
    assert "Writing model shards" not in err and "%|" not in err
    assert hf_logging.is_progress_bar_enabled() == enabled  # global switch restored


def _slim(tmp_path, **source_kw):
    src, _ = source(tmp_path, "eagle", **source_kw)
    slim = tmp_path / "slim"
    convert_drafter(source=str(src), output=str(slim), rank="d/8", target_num_layers=L, **FAST)
    return slim


def _edit_config(folder, **changes):
    raw = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**raw, **changes}))
    return folder


@pytest.mark.parametrize("case,export,match", [
    ("narrow_target_shared", "eagle", r"shares its target's embedding but has target_hidden_size 24 != hidden_size 32"),
    ("narrow_target_own", "speculators", r"speculators sizes fc as 3 \* hidden_size and ignores target_hidden_size"),
    ("no_verifier", "speculators", r"needs the target \(verifier\) model.*pass --target TARGET"),
    ("unreadable_verifier", "speculators", r"leaves an embedding missing .* cannot be read: pass --target TARGET"),
    ("unknown_scaled_target", "eagle", r"gemma3_text target, whose embedding module scales.*pass --target TARGET"),
    ("llama3_rope", "eagle", r"linear \(and dynamic\) RoPE scaling only; this drafter uses 'llama3'"),
])
def test_exports_refuse_what_the_peer_would_misread(tmp_path, case, export, match):
    """Each of these used to write a folder that the peer's loader rejects or misreads (see test_peer_loaders)."""
    if case == "narrow_target_shared":
        slim = _slim(tmp_path)
    elif case == "narrow_target_own":
        slim = _slim(tmp_path, embed=True)
    elif case == "no_verifier":
        slim = _slim(tmp_path, embed=True, dt=D)
    elif case == "unreadable_verifier":  # recorded, but not a folder and not downloadable offline
        slim = _edit_config(_slim(tmp_path, dt=D), target_name_or_path="someone/not-downloadable")
    elif case == "unknown_scaled_target":
        slim = _edit_config(_slim(tmp_path, dt=D), target_model_type="gemma3_text")
    else:
        slim = _edit_config(_slim(tmp_path, embed=True), rope_scaling_config={
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64})
    with pytest.raises(ConversionError, match=match):
        convert_drafter(source=str(slim), output=str(tmp_path / "out"), export=export, **FAST)
    assert not (tmp_path / "out").exists()


def test_the_card_recommends_only_the_exports_that_run(tmp_path):
    """A Gemma-like drafter (head_dim 256 != hidden / heads) cannot be written for SafeAILab EAGLE: its card shows
    the speculators command and says why not eagle; the shipped drafter's card says the same."""
    from conftest import REPO, tiny_config
    from slimspec.convert.card import export_text

    odd = tiny_config(head_dim=16, num_attention_heads=4, hidden_size=32, target_hidden_size=32,
                      share_target_embeddings=False, target_name_or_path="someone/target")
    text = export_text(odd, "me/drafter")
    assert "--export speculators" in text and "drafter-eagle" not in text
    assert "`--export eagle` is not available for this drafter: SafeAILab EAGLE derives head_dim" in text
    plain = export_text(tiny_config(hidden_size=32, target_hidden_size=32, share_target_embeddings=False,
                                    target_name_or_path="someone/target"), "me/drafter")
    assert "drafter-eagle --export eagle" in plain and "not available" not in plain
    card = (REPO / "drafters" / "slimspec-gemma3-270m-d8" / "README.md").read_text()
    assert "drafter-eagle --export eagle" not in card and "`--export eagle` is not available" in card
