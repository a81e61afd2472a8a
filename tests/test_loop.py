"""Our decoding loop on transformers' public API: the contract it reads from transformers' own source, both
entrances (``attach`` and ``custom_generate=<drafter folder>``), sliding-window targets, stop strings, outputs,
threads, and what a failed call leaves behind."""

import inspect
import threading

import pytest
import torch
from transformers import AutoModel, Gemma3ForCausalLM, Gemma3TextConfig, GenerationMixin

import generation_slimspec
from test_generate import drafter_for, plain_and_assisted, prompts, tiny_target


def word_tokenizer(vocab=101):
    """Tokens "t0".."t99" between spaces, and "abcdef" (id 100), which transformers' StopStringCriteria tokenizes
    to learn how the tokenizer joins tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {f"t{i}": i for i in range(vocab - 1)} | {"abcdef": vocab - 1}
    tok = Tokenizer(models.WordLevel(words, unk_token="t3"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="t3")


# --- the contract, read from transformers' source --------------------------------------------------------------------
def test_the_installed_transformers_meets_the_loop_contract():
    assert generation_slimspec.loop_contract_problems() == []


def _mutated(source: str, old: str, new: str) -> str:
    assert old in source, f"the mutation's anchor {old!r} is not in this release's generate: update the test"
    return source.replace(old, new)


@pytest.mark.parametrize("old,new,named", [
    ("custom_generate: str | Callable | None = None,", "custom_loop=None,", "`custom_generate` parameter"),
    ("logits_processor=prepared_logits_processor,", "processors=prepared_logits_processor,", "logits_processor="),
    ("decoding_method = custom_generate", "decoding_method = None", "decoding loop"),
    ("return custom_generate_function(model=self, **generate_arguments)",
     "return custom_generate_function(self, **generate_arguments)", "load_custom_generate"),
])
def test_the_contract_check_names_what_a_changed_generate_lacks(old, new, named):
    source = inspect.getsource(GenerationMixin.generate)
    problems = generation_slimspec.loop_contract_problems(_mutated(source, old, new))
    assert problems and any(named in p for p in problems), problems


def changed_generate(self, inputs=None, generation_config=None, logits_processor=None, stopping_criteria=None,
                     assistant_model=None, custom_generate=None, **kwargs):
    """A release whose generate calls the decoding loop with a renamed keyword and has no string path."""
    decoding_method = custom_generate
    return decoding_method(self, inputs, processors=logits_processor, stopping_criteria=stopping_criteria,
                           generation_config=generation_config, **kwargs)


def test_attach_refuses_a_release_that_breaks_the_contract_before_anything_runs(monkeypatch):
    import transformers

    target = tiny_target()
    drafter = drafter_for(target)
    monkeypatch.setattr(GenerationMixin, "generate", changed_generate)
    monkeypatch.setattr(generation_slimspec, "_CHECKED", {})
    for call in (lambda: drafter.attach(target), lambda: drafter.speculative_generate(target, prompts(1, 101)[0])):
        with pytest.raises(RuntimeError) as error:
            call()
        message = str(error.value)
        assert f"transformers {transformers.__version__}" in message and "logits_processor=" in message
        assert "load_custom_generate" in message and "5.8.0 to " in message and "pip install" in message
    assert "generate" not in vars(target) and drafter.attached_target is None


# --- the custom_generate entrance: a drafter folder, no attach -------------------------------------------------------
def test_custom_generate_folder_gives_the_same_output_without_attach(tmp_path):
    target = tiny_target()
    drafter_for(target).save_pretrained(tmp_path / "drafter")
    assert (tmp_path / "drafter" / "custom_generate" / "generate.py").read_text() == \
        generation_slimspec.CUSTOM_GENERATE_SOURCE
    hub = AutoModel.from_pretrained(tmp_path / "drafter", trust_remote_code=True).eval()
    assert type(hub).__module__.startswith("transformers_modules.")  # the folder's own copy of the code
    before = dict(vars(target))
    for ids in prompts(4, 101, seed=3):
        plain = target.generate(ids, do_sample=False, max_new_tokens=16)
        assisted = target.generate(ids, do_sample=False, max_new_tokens=16, assistant_model=hub,
                                   custom_generate=str(tmp_path / "drafter"), trust_remote_code=True)
        assert torch.equal(plain, assisted)
        assert hub.last_generate_stats.verification_passes > 0
    assert vars(target).keys() == before.keys() and hub.attached_target is None
    assert hub.get_input_embeddings() is None  # the call's binding to the target's embedding is undone
    with pytest.raises(ValueError, match="assistant_model=drafter"):
        target.generate(ids, max_new_tokens=4, custom_generate=str(tmp_path / "drafter"), trust_remote_code=True)


# --- targets ---------------------------------------------------------------------------------------------------------
def tiny_gemma3(seed=0, window=6):
    torch.manual_seed(seed)
    cfg = Gemma3TextConfig(hidden_size=48, intermediate_size=96, num_hidden_layers=6, num_attention_heads=4,
                           num_key_value_heads=2, head_dim=16, vocab_size=101, sliding_window=window,
                           layer_types=["sliding_attention"] * 2 + ["full_attention"] + ["sliding_attention"] * 3,
                           max_position_embeddings=256, pad_token_id=0, bos_token_id=None, eos_token_id=None)
    return Gemma3ForCausalLM(cfg).eval()


@pytest.mark.parametrize("K", [2, 5])
def test_sliding_window_target_beyond_its_window_is_token_identical(K):
    """Gemma 3's sliding layers with a window of 6: prompts and outputs run far past it, so verification passes
    and rollbacks straddle the window edge."""
    target = tiny_gemma3()
    drafter = drafter_for(target)
    drafter.generation_config.num_assistant_tokens = K
    drafter.attach(target)
    for i, ids in enumerate(prompts(5, 101, seed=K) + [torch.randint(1, 101, (1, 20))]):
        plain, assisted = plain_and_assisted(target, drafter, ids, max_new_tokens=[9, 25][i % 2])
        assert torch.equal(plain, assisted), (ids, plain, assisted)
    assert drafter.last_generate_stats.verification_passes > 0


def test_targets_with_recurrent_layers_are_refused_at_attach():
    target = tiny_target()
    target.config.layer_types = ["full_attention", "linear_attention"] * 3
    with pytest.raises(ValueError, match=r"\['linear_attention'\] layers.*rolled back"):
        drafter_for(target).attach(target)
    assert "generate" not in vars(target)


# --- stopping, outputs, streaming ------------------------------------------------------------------------------------
def test_stop_strings_end_the_output_where_the_target_alone_stops():
    target, tokenizer = tiny_target(), word_tokenizer()
    drafter = drafter_for(target).attach(target)
    checked = 0
    for ids in prompts(6, 101, seed=21):
        words = tokenizer.convert_ids_to_tokens(target.generate(ids, do_sample=False, max_new_tokens=20)[0,
                                                                                                          ids.shape[1]:])
        stop = words[5][-1] + " " + words[6][:2]  # spans tokens 6 and 7 of the continuation
        kw = dict(max_new_tokens=20, stop_strings=[stop], tokenizer=tokenizer)
        plain, assisted = plain_and_assisted(target, drafter, ids, **kw)
        assert torch.equal(plain, assisted), (stop, plain, assisted)
        checked += plain.shape[1] < ids.shape[1] + 20  # the stop string did end the output early
    assert checked >= 4
    with pytest.raises(ValueError, match="tokenizer"):
        target.generate(ids, max_new_tokens=5, stop_strings=["x"], assistant_model=drafter)


def test_scores_logits_and_streamed_tokens_are_the_target_alones():
    target = tiny_target()
    drafter = drafter_for(target).attach(target)
    ids = prompts(1, 101, seed=6)[0]
    kw = dict(do_sample=False, max_new_tokens=12, return_dict_in_generate=True, output_scores=True,
              output_logits=True)
    plain = target.generate(ids, **kw)

    class Streamer:
        def __init__(self):
            self.parts, self.ended = [], False

        def put(self, tokens):
            self.parts.append(tokens.view(-1))

        def end(self):
            self.ended = True

    streamer = Streamer()
    assisted = target.generate(ids, **kw, assistant_model=drafter, streamer=streamer)
    assert torch.equal(plain.sequences, assisted.sequences)
    assert len(assisted.scores) == len(assisted.logits) == 12
    for mine, theirs in zip(assisted.scores + assisted.logits, plain.scores + plain.logits):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)
    assert streamer.ended and torch.equal(torch.cat(streamer.parts), assisted.sequences[0])  # prompt, then tokens
    with pytest.raises(ValueError, match="output_attentions"):
        target.generate(ids, **kw, output_attentions=True, assistant_model=drafter)


# --- threads and failures --------------------------------------------------------------------------------------------
def test_two_threads_sharing_a_drafter_each_get_their_own_statistics():
    target = tiny_target()
    drafter = drafter_for(target).attach(target)
    results = {}

    def work(name, ids, new):
        for _ in range(3):
            out = target.generate(ids, do_sample=False, max_new_tokens=new, assistant_model=drafter)
            stats = drafter.last_generate_stats
            results.setdefault(name, []).append((out.shape[1] - ids.shape[1], stats.new_tokens))

    a, b = prompts(2, 101, seed=8)
    threads = [threading.Thread(target=work, args=("a", a, 7)), threading.Thread(target=work, args=("b", b, 19))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results["a"] == [(7, 7)] * 3 and results["b"] == [(19, 19)] * 3
    assert drafter.last_generate_stats is None  # this thread generated nothing


def test_a_generate_that_raises_leaves_the_target_as_attach_left_it():
    target = tiny_target()
    drafter = drafter_for(target).attach(target)
    attached = dict(vars(target))
    with pytest.raises(ValueError, match="batch-size 1"):
        target.generate(torch.ones(2, 4, dtype=torch.long), max_new_tokens=3, assistant_model=drafter)
    with pytest.raises(ValueError, match="pre-filled cache"):
        from transformers import DynamicCache

        cache = DynamicCache()
        target(prompts(1, 101)[0], past_key_values=cache, use_cache=True)
        target.generate(prompts(1, 101)[0], max_new_tokens=3, assistant_model=drafter, past_key_values=cache)
    assert vars(target) == attached and drafter.attached_target is target
    ids = prompts(1, 101, seed=2)[0]
    plain, assisted = plain_and_assisted(target, drafter, ids, max_new_tokens=10)
    assert torch.equal(plain, assisted)


def test_the_tested_range_is_stated_once_in_each_place_and_agrees():
    """The Hub file's tested range (which a refusal names) is the floor pyproject.toml admits and the release
    constraints.txt locks."""
    import re

    from conftest import REPO

    floor = re.search(r'"transformers>=([0-9.]+)"', (REPO / "pyproject.toml").read_text()).group(1)
    locked = re.search(r"^transformers==([0-9.]+)$", (REPO / "constraints.txt").read_text(), re.M).group(1)
    low, high = generation_slimspec.TESTED_TRANSFORMERS
    assert low.split(".")[:2] == floor.split(".")[:2] and high == locked
