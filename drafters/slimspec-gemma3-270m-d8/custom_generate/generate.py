"""SlimSpec speculative decoding as a transformers ``custom_generate`` recipe:

    drafter = AutoModel.from_pretrained(folder, trust_remote_code=True)
    target.generate(**inputs, assistant_model=drafter, custom_generate=folder, trust_remote_code=True)

transformers calls ``generate`` below with the target as ``model`` and every argument of that call. The decoding
loop is the drafter's own code (its ``speculative_generate``), so this file imports nothing.
"""


def generate(model, *args, assistant_model=None, **kwargs):
    run = getattr(assistant_model, "speculative_generate", None)
    if run is None:
        raise ValueError(
            "this custom_generate recipe decodes with a SlimSpec drafter: pass assistant_model=drafter, loaded with "
            "AutoModel.from_pretrained(<the drafter folder or Hub id>, trust_remote_code=True)."
        )
    return run(model, *args, **kwargs)
