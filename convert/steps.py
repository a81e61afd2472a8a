"""The named steps of ``convert_drafter`` (``convert.py``), each a function of what the steps before it made:
read and check the source, factorize the head, build and measure the drafter, write, validate in a fresh process,
place atomically, publish."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from .convert_report import ConversionReport
from .factorize import factorize, head_agreement, resolve_rank
from .formats import WRITERS, ConversionError, SourceDrafter, read_source


# ----------------------------------------------------------------------------------------------------------------------
# Steps
# ----------------------------------------------------------------------------------------------------------------------
def check_output(output: Path, overwrite: bool) -> None:
    if output.exists() and not overwrite:
        raise ConversionError(f"{output} already exists; pass --overwrite to replace it")
    if output.exists() and not output.is_dir():
        raise ConversionError(f"{output} exists and is not a folder")


def resolve_source(source: str) -> Path:
    """A local folder, or a Hub repo id downloaded with huggingface_hub (needs a network)."""
    path = Path(source)
    if path.is_dir():
        return path
    if path.exists():
        raise ConversionError(f"{source} is a file; give the drafter's folder")
    if source.count("/") != 1 or source.startswith((".", "/")):
        raise ConversionError(f"{source} is neither a local folder nor a Hub repo id (owner/name)")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(source, allow_patterns=["*.json", "*.safetensors", "*.bin", "README.md"]))
    except Exception as err:
        raise ConversionError(f"could not download {source} from the Hub ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''})") from None


def read_target_config(target: str | None):
    """The target's config as published (top level, so ``architectures`` is kept), or None without a target."""
    if target is None:
        return None
    from transformers import AutoConfig

    from slimspec.targets import resolve_target

    try:
        return AutoConfig.from_pretrained(resolve_target(target))
    except (OSError, ValueError) as err:
        raise ConversionError(f"cannot read the target config {target!r}: {str(err).splitlines()[0]}") from None


def text_config(config):
    """The decoder part of a (possibly multimodal) target config."""
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def check_target(src: SourceDrafter, target_config) -> None:
    if target_config is None:
        return
    target_config = text_config(target_config)
    problems = []
    for ours, theirs in (("target_hidden_size", "hidden_size"), ("vocab_size", "vocab_size"),
                         ("target_num_hidden_layers", "num_hidden_layers")):
        want, got = src.config.get(ours), getattr(target_config, theirs, None)
        if want is not None and got is not None and want != got:
            problems.append(f"drafter {ours}={want} but target {theirs}={got}")
    if problems:
        raise ConversionError("the drafter does not fit the target: " + "; ".join(problems) + " (wrong --target?)")
    src.config.setdefault("target_model_type", getattr(target_config, "model_type", None))
    if not src.config.get("target_name_or_path"):
        src.config["target_name_or_path"] = getattr(target_config, "_name_or_path", None) or None


def slimspec_config(src: SourceDrafter, **fields):
    """The SlimSpecConfig of the source's config with ``fields`` set; ConversionError where it is not valid."""
    from configuration_slimspec import SlimSpecConfig

    try:
        return SlimSpecConfig(**dict(src.config, **fields))
    except ValueError as err:
        raise ConversionError(f"the source config does not make a valid SlimSpec drafter: {err}") from None


def build_drafter(src: SourceDrafter, fact, keep_embeddings: bool):
    """SlimSpecDrafter with the source weights, loaded strictly."""
    from modeling_slimspec import SlimSpecDrafter

    state = dict(src.state_dict)
    dense = state.pop("lm_head.weight")
    if fact is not None:
        state["lm_head.down.weight"], state["lm_head.up.weight"] = fact.down, fact.up
    else:
        state["lm_head.weight"] = dense
    has_embed = "embed_tokens.weight" in state
    if has_embed and not keep_embeddings:
        state.pop("embed_tokens.weight")
    config = slimspec_config(src, head_rank=fact.rank if fact else None,
                             share_target_embeddings=not (has_embed and keep_embeddings))
    dtype = dense.dtype
    with torch.device("meta"):
        model = SlimSpecDrafter(config)
    result = model.load_state_dict(state, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise ConversionError(f"weights do not match the drafter: missing {result.missing_keys}, "
                              f"unexpected {result.unexpected_keys}")
    model.config.dtype = dtype
    model.check_vocab_maps()
    return model.eval(), dense


def check_shapes(src: SourceDrafter) -> None:
    """Every tensor must have the shape the config implies (caught before anything is built)."""
    from modeling_slimspec import SlimSpecDrafter

    config = slimspec_config(src, head_rank=None, share_target_embeddings="embed_tokens.weight" not in src.state_dict)
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in SlimSpecDrafter(config).state_dict().items()}
    wrong = [f"{k}: {tuple(v.shape)} (config implies {expected[k]})" for k, v in src.state_dict.items()
             if k in expected and tuple(v.shape) != expected[k]]
    if wrong:
        raise ConversionError("tensor shapes disagree with the config: " + "; ".join(wrong[:4]))


def probe_hidden(model, target: str | None, prompts: str | None, n_random: int = 256, seed: int = 0):
    """Hidden states that feed the head: the drafter's own first-step norm(g) on real target features when a target
    and a prompt file are given, else random-normal vectors through the drafter's final norm (labelled as such).
    Works on an fp32 copy, so the drafter being converted keeps its dtype."""
    import copy

    probe = copy.deepcopy(model).float().eval()
    if target and prompts:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from slimspec.targets import resolve_target

        path = resolve_target(target)
        tm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        tok = AutoTokenizer.from_pretrained(path)
        texts = [t for t in Path(prompts).read_text().split("\n\n") if t.strip()][:16]
        if probe.embed_tokens is None:
            probe.use_target_embeddings(tm.get_input_embeddings())
        hs = []
        with torch.no_grad():
            for text in texts:
                ids = tok(text, return_tensors="pt")["input_ids"][:, :256]
                out = tm(ids, output_hidden_states=True)
                feats = torch.cat([out.hidden_states[i] for i in probe.config.target_layer_ids], -1)[:, :-1]
                g = probe(input_ids=ids[:, 1:], target_hidden_states=feats, logits_to_keep=-1).last_hidden_state
                hs.append(probe.norm(g)[0])
        return torch.cat(hs), True
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return probe.norm(torch.randn(n_random, model.config.hidden_size, generator=g)), False


# Families whose input-embedding module scales its output (Gemma 3: x sqrt(hidden_size)); used when the target cannot
# be read to tell.
_SCALED_EMBEDDING_TYPES = ("gemma3", "gemma3_text", "gemma3n", "gemma3n_text")


def export_target(model, target: str | None, target_config) -> tuple:
    """(name, config) of the target an engine export refers to: --target, else the target the drafter's config
    records when its config can be read (a local folder, or a Hub id when online or cached); else (None, None)."""
    if target_config is not None:
        return target, target_config
    name = model.config.target_name_or_path
    if not name:
        return None, None
    try:
        return name, read_target_config(name)
    except ConversionError:
        return None, None


def export_embedding(model, export: str, target: str | None, target_config):
    """The [V, d] ``embed_tokens.weight`` an engine export of a drafter that SHARES its target's embedding must
    carry, or None when the peer's loader fills in the right one itself.

    A SlimSpec drafter embeds tokens with the target's embedding *module* (its output, any scale included). The
    peers copy the target's raw ``embed_tokens.weight`` instead, and only sometimes:

    * SafeAILab EAGLE copies it whenever config.json has no target_hidden_size (see ``formats.to_eagle``): right
      when the module is a plain ``nn.Embedding`` lookup, so nothing is written then; for a module that is not
      (Gemma 3 scales by sqrt(d)) the module's output is written, which EAGLE uses instead;
    * speculators 0.9.0 means to fill a missing embedding from the verifier, but decides "missing" by a NaN sentinel
      that its ``from_pretrained`` does not preserve, so the embedding is left uninitialized at random: the export
      always carries the module's output, as speculators' own checkpoints carry their embedding.

    Writing it loads the target (--target, or the one the drafter's config records); when that cannot be read the
    export is refused where it would be wrong.
    """
    if model.embed_tokens is not None:
        return None
    if target_config is None:
        if export == "speculators":
            raise ConversionError(
                f"this drafter shares its target's embedding and speculators' loader leaves an embedding missing from "
                f"the checkpoint uninitialized, so the export must carry the target's; the target "
                f"{model.config.target_name_or_path or '(not recorded)'} cannot be read: pass --target TARGET")
        if model.config.target_model_type in _SCALED_EMBEDDING_TYPES:
            raise ConversionError(
                f"this drafter shares the embedding of a {model.config.target_model_type} target, whose embedding "
                f"module scales its output, but SafeAILab EAGLE reads the raw matrix and the target cannot be read: "
                f"pass --target TARGET so the embedding the drafter sees can be written into the export")
        return None
    from transformers import AutoModelForCausalLM

    if export == "eagle":
        with torch.device("meta"):
            module = AutoModelForCausalLM.from_config(target_config).get_input_embeddings()
        if type(module) is torch.nn.Embedding:
            return None
    from slimspec.targets import resolve_target

    embedding = AutoModelForCausalLM.from_pretrained(resolve_target(target), dtype="auto").get_input_embeddings()
    with torch.no_grad():
        return embedding(torch.arange(model.config.vocab_size)).to(model.dtype).contiguous()


def export_extras(model, export: str | None, target: str | None, target_config, src: SourceDrafter) -> tuple:
    """What an engine export needs beyond the drafter: (embedding or None, the target's architectures or None)."""
    if export is None:
        return None, None
    name, config = export_target(model, target, target_config)
    architectures = list(getattr(config, "architectures", None) or []) or src.target_architectures
    embedding = export_embedding(model, export, name, config)
    if embedding is not None:
        src.notes.append(f"the export carries the embedding this drafter sees through its target's embedding module "
                         f"(read from {name}), since the {export} loader would not supply it")
    return embedding, architectures


def write_folder(folder: Path, model, export: str | None, card, embedding=None, target_architectures=None) -> None:
    """The output folder: SlimSpec (save_pretrained) or an engine export with a dense head (plus ``embedding`` as
    ``embed_tokens.weight`` when given, see ``export_embedding``)."""
    if export is None:
        model.save_pretrained(folder)
    else:
        from safetensors.torch import save_file

        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        if "lm_head.up.weight" in state:
            up, down = state.pop("lm_head.up.weight"), state.pop("lm_head.down.weight")
            state["lm_head.weight"] = (up.float() @ down.float()).to(up.dtype)
        if embedding is not None:
            state["embed_tokens.weight"] = embedding
        raw, tensors = WRITERS[export](model.config, state, target_architectures)
        save_file({k: v.contiguous() for k, v in tensors.items()}, folder / "model.safetensors",
                  metadata={"format": "pt"})
        raw["torch_dtype"] = str(model.config.dtype or "float32").replace("torch.", "")
        (folder / "config.json").write_text(json.dumps(raw, indent=2) + "\n")
    card.save(folder / "README.md")


_RELOAD = """
import sys, torch
from transformers import AutoModel
model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True)
n = sum(p.numel() for p in model.parameters())
print(type(model).__name__, n)
"""


def validate_folder(folder: Path, export: str | None, expected_params: int, model=None) -> None:
    """Reload the result as a user would before declaring success: a SlimSpec folder through AutoModel with
    trust_remote_code in a fresh process; an engine export through our own reader for that format."""
    if export is not None:
        back = read_source(folder, fmt=export, num_layers=model.config.target_num_hidden_layers)
        n = sum(v.numel() for k, v in back.state_dict.items() if k not in ("d2t", "t2d"))
        if n != expected_params or back.config["target_layer_ids"] != list(model.config.target_layer_ids):
            raise ConversionError(f"the {export} export does not read back as written ({n} vs {expected_params} "
                                  f"parameters, layers {back.config['target_layer_ids']})")
        return
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, "-c", _RELOAD, str(folder)], capture_output=True, text=True, env=env,
                          cwd=tempfile.gettempdir(), timeout=900)
    if proc.returncode != 0:
        raise ConversionError(f"the written folder does not reload with AutoModel.from_pretrained(trust_remote_code="
                              f"True): {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'no output'}")
    name, n = proc.stdout.split()[-2:]
    if name != "SlimSpecDrafter" or int(n) != expected_params:
        raise ConversionError(f"reloaded folder gave {name} with {n} parameters, expected {expected_params}")


def publish(folder: Path, repo_id: str, *, private: bool, revision: str | None, commit_message: str | None) -> str:
    """create_repo(exist_ok=True) + upload_folder with the user's standard HF token (never printed)."""
    from huggingface_hub import HfApi

    api = HfApi()
    url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    if revision and revision != "main":
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    api.upload_folder(folder_path=str(folder), repo_id=repo_id, revision=revision,
                      commit_message=commit_message or "Add SlimSpec drafter")
    return str(url)


def place(tmp: Path, output: Path, overwrite: bool) -> None:
    """Move the finished folder into place; an existing one is replaced only with ``overwrite``."""
    if output.exists():
        if not overwrite:
            raise ConversionError(f"{output} appeared while converting; not replacing it without --overwrite")
        old = output.with_name(f".{output.name}.old-{os.getpid()}")
        os.replace(output, old)
        os.replace(tmp, output)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, output)


def factorize_head(dense: torch.Tensor, rank, method: str, bar):
    """The head's truncated SVD at ``rank`` (any rank form), or None to keep it dense."""
    try:
        r = resolve_rank(rank, dense, bar)
    except ValueError as err:
        raise ConversionError(str(err)) from None
    return factorize(dense, r, method=method, progress=bar) if r is not None else None


def head_quality(model, dense: torch.Tensor, fact, target: str | None, prompts: str | None) -> dict | None:
    """Top-1 agreement and KL of the factorized head against the dense one (``probe_hidden``); None when dense."""
    if fact is None:
        return None
    hidden, real = probe_hidden(model, target, prompts)
    return dict(head_agreement(dense, fact.up, fact.down, hidden), real=real)


def build_report(output: Path, export: str | None, src: SourceDrafter, model, dense, fact, quality,
                 embedding) -> tuple:
    """(the conversion's report, the parameter count the written folder must read back with)."""
    head_params = sum(p.numel() for p in model.lm_head.parameters())
    total_params = sum(p.numel() for p in model.parameters())
    # an engine export carries the dense head instead of the factors (and, see export_embedding, maybe an embedding)
    expected_params = total_params if export is None else (
        total_params - head_params + dense.numel() + (embedding.numel() if embedding is not None else 0))
    report = ConversionReport(
        output=str(output), format=export or "slimspec", source_format=src.format, rank=fact.rank if fact else None,
        energy_kept=fact.energy_kept if fact else None, dense_head_params=dense.numel(),
        head_params=head_params if export is None else dense.numel(),
        total_params=total_params, quality=quality, head_shape=tuple(dense.shape), notes=list(src.notes))
    return report, expected_params


def write_and_place(output: Path, model, export: str | None, card, embedding, architectures, *, bar,
                    validate: bool, expected_params: int, overwrite: bool, dry_run: bool) -> list:
    """Write the folder into a temporary one beside OUTPUT, reload it (``validate_folder``, with ``validate``) and
    move it into place (not on a dry run); returns its file names."""
    parent = output.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=parent))
    try:
        steps = ["write", "validate"]
        for step in (bar(steps, desc="writing", unit="step") if bar else steps):
            if step == "write":
                write_folder(tmp, model, export, card, embedding, architectures)
            elif validate:
                validate_folder(tmp, export, expected_params, model)
        files = sorted(p.name for p in tmp.iterdir())
        if not dry_run:
            place(tmp, output, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return files
