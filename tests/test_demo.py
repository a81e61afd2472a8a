"""The README's main job (slimspec-demo): publishing to a local Hub folder, reloading as a user would, comparing."""

import pytest

from slimspec import DRAFTER_FILES, demo
from test_generate import drafter_for, tiny_target
from test_train import PROMPTS, tiny_tokenizer


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    target = tiny_target()
    drafter = drafter_for(target)
    folder = tmp_path_factory.mktemp("drafter")
    drafter.save_pretrained(folder)
    (folder / "README.md").write_text("# card\n")
    return target, folder


def test_publish_reload_and_compare(saved, tmp_path):
    from transformers import AutoModel

    target, folder = saved
    out = demo.publish_local(folder, tmp_path / "hub")
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == sorted(DRAFTER_FILES)
    drafter = AutoModel.from_pretrained(str(out), trust_remote_code=True).eval().attach(target)
    r = demo.compare(target, tiny_tokenizer(), drafter, PROMPTS[:3], max_new_tokens=8)
    drafter.detach()
    assert r["identical"] == 3 and r["tokens"] == 24  # fp32 greedy: exactly the target's output
    assert "hybrid_seconds" not in r  # no prompt lookup in the drafter's settings: no hybrid row
    drafter.generation_config.prompt_lookup_num_tokens = 4  # a drafter shipped with the hybrid on
    r = demo.compare(target, tiny_tokenizer(), drafter.attach(target), PROMPTS[:3], max_new_tokens=8)
    drafter.detach()
    assert r["hybrid_identical"] == 3 and r["hybrid_seconds"] > 0 and r["identical"] == 3
    with pytest.raises(FileExistsError, match="--overwrite"):
        demo.publish_local(folder, out, overwrite=False)


def test_compare_counts_tau_from_the_passes_it_made():
    """An oracle drafter (it always proposes the target's token): 8 new tokens = the prefill's 1, then 5 accepted
    drafts + 1 bonus, then 1 draft + 0 (the budget): tau = 7 / 2 passes = 3.5 on every prompt."""
    from test_generate import oracle_pair

    target, drafter = oracle_pair()
    r = demo.compare(target, tiny_tokenizer(50), drafter.attach(target), PROMPTS[:3], max_new_tokens=8)
    drafter.detach()
    assert r["identical"] == 3 and r["tau"] == 3.5 and r["acceptance"] == [1.0] * 5


def test_publish_refuses_an_incomplete_folder(saved, tmp_path):
    _, folder = saved
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in folder.rglob("*"):
        if f.is_file() and f.name != "model.safetensors":
            (broken / f.relative_to(folder)).parent.mkdir(exist_ok=True)
            (broken / f.relative_to(folder)).write_bytes(f.read_bytes())
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        demo.publish_local(broken, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_data_responses_left_counts_what_a_resumed_build_still_needs(tmp_path, monkeypatch):
    import json

    from slimspec.train.recipe import Recipe, data_folder, data_responses_left

    monkeypatch.setenv("SLIMSPEC_CACHE", str(tmp_path))
    recipe = Recipe(prompt_limit=5, sampled=True)
    assert data_responses_left("t", recipe) == 10  # nothing generated: greedy + sampled per prompt
    folder = data_folder("t", recipe)
    folder.mkdir(parents=True)
    meta = folder / "meta.json"
    meta.write_text(json.dumps(dict(shards=[dict(sequences=4)])))
    assert data_responses_left("t", recipe) == 6  # an interrupted build
    meta.write_text(json.dumps(dict(shards=[dict(sequences=4), dict(sequences=6)])))
    assert data_responses_left("t", recipe) == 0


def test_the_shipped_drafter_is_found_or_its_absence_explained(tmp_path, monkeypatch):
    from conftest import REPO
    from slimspec import shipped

    assert shipped.shipped_drafter("gemma3-270m") == REPO / "drafters" / "slimspec-gemma3-270m-d8"  # this checkout
    monkeypatch.setattr(shipped, "__file__", str(tmp_path / "site-packages" / "slimspec" / "shipped.py"))
    monkeypatch.chdir(tmp_path)  # a regular install, run elsewhere: nothing to find
    assert shipped.shipped_drafter("gemma3-270m") is None and shipped.shipped_drafter("other") is None
    monkeypatch.setenv("SLIMSPEC_DRAFTERS", str(REPO / "drafters"))
    assert shipped.shipped_drafter("gemma3-270m") == REPO / "drafters" / "slimspec-gemma3-270m-d8"
    monkeypatch.delenv("SLIMSPEC_DRAFTERS")
    monkeypatch.setenv("SLIMSPEC_CACHE", str(tmp_path / "cache"))  # nothing cached either: no silent build
    with pytest.raises(FileNotFoundError, match=r"SLIMSPEC_DRAFTERS.*slimspec-demo --build"):
        demo.build_or_load("gemma3-270m")
    assert not (tmp_path / "cache").exists()
