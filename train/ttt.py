"""EAGLE-3 training-time test (TTT): unroll the drafter on its own outputs, teacher-forced on the true tokens.

Step 0 is ordinary training: position t holds (fused target feature f_t, token x_{t+1}) and predicts x_{t+2},
whose target distribution is the target's next-token distribution at position t + 1.
Step j >= 1 replays the j-th drafting step: position t holds (the drafter's step-(j-1) output at t - 1, x_{t+1})
and again predicts x_{t+2}; it stands for a chain whose prefix ended at t - j. Its attention sees what that chain
would see at inference: step-0 keys at positions 0..t-j, then the step-i key at position t-j+i for 1 <= i <= j.
Positions t < j have no such chain and get no loss.
"""

from __future__ import annotations

import torch


class ConcatCache:
    """A drafter KV cache that only concatenates (autograd-safe; the inference cache writes in place)."""

    def __init__(self):
        self.keys = self.values = None
        self.length = 0

    def __len__(self):
        return self.length

    def update(self, k, v):
        self.keys = k if self.keys is None else torch.cat([self.keys, k], dim=2)
        self.values = v if self.values is None else torch.cat([self.values, v], dim=2)
        self.length = self.keys.shape[2]
        return self.keys, self.values


def ttt_mask(T: int, step: int, device=None) -> torch.Tensor:
    """Bool [T, (step + 1) T]: which keys (step-major blocks of T) the queries of unroll ``step`` may attend."""
    t = torch.arange(T, device=device)
    blocks = [(torch.arange(T, device=device)[None, :] <= (t - step)[:, None])]  # step 0: positions 0..t-step
    for i in range(1, step + 1):
        blocks.append(torch.arange(T, device=device)[None, :] == (t - step + i)[:, None])  # step i: position t-step+i
    mask = torch.cat(blocks, dim=1)
    mask[:, step * T :] |= torch.eye(T, dtype=torch.bool, device=device)  # every query sees its own key
    return mask


def ttt_unroll(drafter, tokens: torch.Tensor, target_hidden_states: torch.Tensor, steps: int) -> list:
    """tokens [B, T + 1] (x_0..x_T), target_hidden_states [B, T, 3 d_t] (features of positions 0..T-1).

    Returns the pre-norm outputs of each unroll step: ``steps`` tensors [B, T, d]."""
    B, T = target_hidden_states.shape[:2]
    emb = drafter.embed(tokens[:, 1 : T + 1])  # position t is paired with token t + 1
    hidden = drafter.fuse(target_hidden_states)
    positions = torch.arange(T, device=hidden.device)
    cache = ConcatCache()
    outputs = []
    for j in range(steps):
        out = drafter(inputs_embeds=emb, hidden_states=hidden, position_ids=positions, past_key_values=cache,
                      attention_mask=ttt_mask(T, j, hidden.device), logits_to_keep=-1)
        g = out.last_hidden_state
        outputs.append(g)
        hidden = torch.cat([torch.zeros_like(g[:, :1]), g[:, :-1]], dim=1)  # position t takes g_{t-1}
    return outputs
