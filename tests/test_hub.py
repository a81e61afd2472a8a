"""Hub compatibility: the saved folder loads through AutoModel with trust_remote_code, in fresh processes,
both where our package is NOT importable (the Hub case) and where it is installed."""

import ast
import json
import subprocess
import sys

import pytest
import torch

from conftest import REPO, randomize, tiny_config
from modeling_slimspec import SlimSpecDrafter

from slimspec import HUB_CODE as HUB_FILES
BLOCK_OUR_PACKAGE = """
import importlib.abc, sys
OURS = {"slimspec", "configuration_slimspec", "modeling_slimspec", "generation_slimspec", "kernels_slimspec"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in OURS:
            raise ImportError(f"{name} is blocked: this process plays a Hub user without the package")
sys.meta_path.insert(0, Block())
sys.path = [p for p in sys.path if p not in ("", ".", REPO)]
try:
    import modeling_slimspec
    raise SystemExit("our package is importable in the Hub-case process")
except ImportError:
    pass
"""
LOAD_AND_RUN = """
import json, sys, torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM
folder, data = sys.argv[1], torch.load(sys.argv[2], weights_only=True)
config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
assert type(model).__name__ == "SlimSpecDrafter", type(model)
try:  # a drafter is not a causal LM: AutoModelForCausalLM has no mapping for it
    AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
    raise SystemExit("AutoModelForCausalLM loaded a drafter")
except ValueError:
    pass
with torch.no_grad():
    logits = model(input_ids=data["tokens"], target_hidden_states=data["feats"]).logits
print(json.dumps({"module": type(model).__module__, "config": type(config).__name__,
                  "equal": bool(torch.equal(logits, data["logits"]))}))
"""


def _saved_drafter(tmp_path, **overrides):
    torch.manual_seed(0)
    model = randomize(SlimSpecDrafter(tiny_config(**overrides))).eval()
    if model.d2t is not None:
        model.set_vocab_maps(torch.arange(0, 80, 2))
    folder = tmp_path / "drafter"
    model.save_pretrained(folder)
    feats, tokens = torch.randn(1, 5, 72), torch.randint(0, 97, (1, 5))
    with torch.no_grad():
        logits = model(input_ids=tokens, target_hidden_states=feats).logits
    torch.save({"feats": feats, "tokens": tokens, "logits": logits}, tmp_path / "data.pt")
    return folder, tmp_path / "data.pt"


def _run(code, *args, cwd):
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_save_pretrained_writes_a_hub_folder(tmp_path):
    folder, _ = _saved_drafter(tmp_path)
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "custom_generate", *HUB_FILES} <= names
    assert [p.name for p in (folder / "custom_generate").iterdir()] == ["generate.py"]
    assert not any(n.endswith((".bin", ".pt", ".pth")) for n in names)
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert auto_map == {"AutoConfig": "configuration_slimspec.SlimSpecConfig",
                        "AutoModel": "modeling_slimspec.SlimSpecDrafter"}


@pytest.mark.parametrize("overrides", [dict(), dict(head_rank=None, draft_vocab_size=40)])
def test_loads_in_fresh_process_without_our_package(tmp_path, overrides):
    folder, data = _saved_drafter(tmp_path, **overrides)
    code = "REPO = %r\n" % str(REPO) + BLOCK_OUR_PACKAGE + LOAD_AND_RUN
    result = _run(code, folder, data, cwd=tmp_path)
    assert result["module"].startswith("transformers_modules.")  # the copied Hub code, not ours
    assert result["config"] == "SlimSpecConfig" and result["equal"]


def test_loads_in_fresh_process_with_package_installed(tmp_path):
    folder, data = _saved_drafter(tmp_path)
    code = "import sys; sys.path.insert(0, %r)\nimport slimspec\n" % str(REPO) + LOAD_AND_RUN
    result = _run(code, folder, data, cwd=tmp_path)
    assert result["equal"]


@pytest.mark.parametrize("filename", HUB_FILES)
def test_hub_files_import_only_torch_transformers_and_stdlib(filename):
    tree = ast.parse((REPO / filename).read_text())
    allowed = {"torch", "transformers", *(name[:-3] for name in HUB_FILES), *sys.stdlib_module_names}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots = [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            roots = [] if node.level else [node.module.split(".")[0]]  # relative imports stay inside the folder
        else:
            continue
        for root in roots:
            assert root in allowed, f"{filename} imports {root}"
            assert root not in {"urllib", "http", "socket", "requests", "ftplib"}, f"{filename} may not touch the network"


DRAFT_WITH_IT = """
import json, sys, torch
from transformers import AutoModel, AutoModelForCausalLM
target = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
drafter = AutoModel.from_pretrained(sys.argv[2], trust_remote_code=True).eval()
recipe = dict(assistant_model=drafter, custom_generate=sys.argv[2], trust_remote_code=True)  # no attach
identical, passes = [], 0
for seed in range(4):
    ids = torch.randint(1, target.config.vocab_size, (1, 3 + 2 * seed), generator=torch.Generator().manual_seed(seed))
    plain = target.generate(ids, do_sample=False, max_new_tokens=16)
    assisted = target.generate(ids, do_sample=False, max_new_tokens=16, **recipe)
    passes += drafter.last_generate_stats.verification_passes
    drafter.attach(target)
    attached = target.generate(ids, do_sample=False, max_new_tokens=16, assistant_model=drafter)
    passes += drafter.last_generate_stats.verification_passes
    drafter.detach()
    identical.append(bool(torch.equal(plain, assisted)) and bool(torch.equal(plain, attached)))
print(json.dumps({"module": type(drafter).__module__, "identical": identical, "passes": passes}))
"""


def test_saved_drafter_drafts_losslessly_without_our_package(tmp_path):
    """The Hub case end to end: a drafter saved by this package, loaded in a fresh process that cannot import it,
    drives ``target.generate(assistant_model=drafter)``, through its folder's ``custom_generate`` without ``attach``
    and after ``attach``, with output identical to the target alone."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from configuration_slimspec import SlimSpecConfig

    torch.manual_seed(0)
    target = LlamaForCausalLM(LlamaConfig(hidden_size=48, intermediate_size=96, num_hidden_layers=6, num_attention_heads=4,
                                          num_key_value_heads=2, vocab_size=101, max_position_embeddings=256)).eval()
    target.generation_config.pad_token_id = 0
    drafter = randomize(SlimSpecDrafter(SlimSpecConfig.from_target_config(target.config, head_rank="d/8",
                                                                            intermediate_size=64)), seed=1).eval()
    target.save_pretrained(tmp_path / "target")
    drafter.save_pretrained(tmp_path / "drafter")
    code = "REPO = %r\n" % str(REPO) + BLOCK_OUR_PACKAGE + DRAFT_WITH_IT
    result = _run(code, tmp_path / "target", tmp_path / "drafter", cwd=tmp_path)
    assert result["module"].startswith("transformers_modules.")
    assert all(result["identical"]) and result["passes"] > 0


def test_the_shipped_drafter_carries_the_current_hub_files():
    """drafters/ holds a Hub-layout folder, so it carries copies of the three Hub files: they must be today's (a
    user loading it with trust_remote_code runs those copies). After changing a Hub file, copy it there too."""
    shipped = sorted((REPO / "drafters").glob("*/config.json"))
    assert len(shipped) == 1, "git holds exactly one trained reference drafter folder"
    folder = shipped[0].parent
    for name in HUB_FILES:
        assert (folder / name).read_text() == (REPO / name).read_text(), f"{folder / name} is stale: cp {name} {folder}/"
    from generation_slimspec import CUSTOM_GENERATE_SOURCE

    assert (folder / "custom_generate" / "generate.py").read_text() == CUSTOM_GENERATE_SOURCE, \
        f"{folder}/custom_generate/generate.py is missing or stale: save the drafter again"
    assert (folder / "model.safetensors").stat().st_size <= 64 * 2**20


@pytest.mark.parametrize("filename", ["generation_slimspec.py", "kernels_slimspec.py"])
def test_decoding_and_kernels_reach_transformers_only_inside_functions(filename):
    """modeling_slimspec imports these at load time, so a module-level transformers import here would let a change
    in transformers' generation code break loading, converting and training drafters."""
    tree = ast.parse((REPO / filename).read_text())
    for node in tree.body:
        for inner in ast.walk(node) if isinstance(node, (ast.Import, ast.ImportFrom, ast.Try, ast.If)) else ():
            names = [a.name for a in inner.names] if isinstance(inner, ast.Import) else (
                [inner.module or ""] if isinstance(inner, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] == "transformers" for n in names), f"{filename}: module-level {names}"


def test_every_hub_file_installs_as_a_top_level_module():
    """pyproject.toml's py-modules are the Hub files: one missing there imports in a checkout (tests put the root on
    sys.path) but not in an install."""
    import re

    listed = re.search(r"^py-modules = \[(.*)\]$", (REPO / "pyproject.toml").read_text(), re.M).group(1)
    assert sorted(n.strip(' "') for n in listed.split(",")) == sorted(name[:-3] for name in HUB_FILES)
