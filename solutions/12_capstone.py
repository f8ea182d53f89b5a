# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Exercise 12 · The pieces of a real encoder
#
# Lesson: [12 capstone](../notebooks/12_capstone.ipynb). You write the three pieces of
# all-MiniLM-L6-v2 that hold its attention and its output; each check cell below says **PASS**,
# **TODO** (not done yet) or **FAIL** with a hint. Each is checked on a small case first, then on
# the real model: the hidden states entering its first and last layer, for a padded batch.
# When all three pass, run section 6 of the lesson: it plugs your functions into the encoder.
#
# The weights of one layer come as an `EncoderLayerWeights` with attributes, stored as in the
# equations (`y = x @ w + b`, no `.T`):
#
# | attribute | shape | |
# |---|---|---|
# | `w_q`, `w_k`, `w_v`, `w_o` | `(d_model, d_model)` | query, key, value and output projections |
# | `b_q`, `b_k`, `b_v`, `b_o` | `(d_model,)` | their biases |
# | `w_ff1`, `b_ff1` | `(d_model, d_ff)`, `(d_ff,)` | feed-forward, first linear map |
# | `w_ff2`, `b_ff2` | `(d_ff, d_model)`, `(d_model,)` | feed-forward, second linear map |

# %%
import torch
import torch.nn.functional as F

from attention_course import masked_attention, merge_heads, split_heads
from attention_course.grading import check
from attention_course.pretrained import load_weights

torch.manual_seed(0)
layer0 = load_weights().layers[0]  # the real model's first layer, to look at
print({name: tuple(getattr(layer0, name).shape) for name in ("w_q", "b_q", "w_ff1", "w_ff2")})

# %% [markdown]
# ## 1. The self-attention sublayer
#
# $$\mathrm{head}_i = \mathrm{softmax}\!\left(\frac{Q_i K_i^\top}{\sqrt{d_{head}}} + M\right) V_i,
# \qquad \mathrm{output} = [\mathrm{head}_1, \dots, \mathrm{head}_h]\, W_O + b_O$$
#
# with $Q = H W_Q + b_Q$ (likewise $K$, $V$) split into $h$ heads of width $d_{head} = d_{model}/h$,
# and $M = -\infty$ at **padded keys**: no query may attend to a `[PAD]` token. Return the output
# before the residual and the weights of every head.

# %%
def encoder_self_attention(
    hidden: torch.Tensor, layer, key_mask: torch.Tensor, n_heads: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-head self-attention of one encoder layer, padding keys hidden.

    hidden: (B, L, d_model); layer: EncoderLayerWeights (uses w_q, b_q, w_k, b_k, w_v, b_v, w_o, b_o);
    key_mask: bool (B, L), True at real tokens; n_heads divides d_model.
    Returns (output (B, L, d_model), weights (B, n_heads, L, L)).

    Hints: `split_heads(x, n_heads)` gives (B, H, L, d_head) and `merge_heads` undoes it (lesson 06);
    `masked_attention(q, k, v, mask)` (lesson 05, yours or the course's) scales by sqrt(d_head) for
    you; a mask of shape (B, 1, 1, L) hides the same keys for every head and every query.
    """
    ### BEGIN SOLUTION
    q = split_heads(hidden @ layer.w_q + layer.b_q, n_heads)  # (B, H, L, d_head)
    k = split_heads(hidden @ layer.w_k + layer.b_k, n_heads)
    v = split_heads(hidden @ layer.w_v + layer.b_v, n_heads)
    heads, weights = masked_attention(q, k, v, key_mask[:, None, None, :])  # mask on the keys
    return merge_heads(heads) @ layer.w_o + layer.b_o, weights
    ### END SOLUTION


# %%
check("encoder_self_attention", encoder_self_attention)

# %% [markdown]
# ## 2. The feed-forward sublayer
#
# $$\mathrm{FFN}(H) = \mathrm{GELU}(H W_1 + b_1)\, W_2 + b_2, \qquad \mathrm{GELU}(x) = x\,\Phi(x)$$
#
# with the **exact** GELU ($\Phi$ is the normal distribution's CDF, computed with the error
# function), applied to every token on its own. Return it before the residual.

# %%
def encoder_feed_forward(hidden: torch.Tensor, layer) -> torch.Tensor:
    """Position-wise feed-forward network of one encoder layer.

    hidden: (B, L, d_model); layer: EncoderLayerWeights (uses w_ff1, b_ff1, w_ff2, b_ff2).
    Returns (B, L, d_model).

    Hint: `F.gelu(x)` is the exact GELU; `F.gelu(x, approximate="tanh")` is not.
    """
    ### BEGIN SOLUTION
    return F.gelu(hidden @ layer.w_ff1 + layer.b_ff1) @ layer.w_ff2 + layer.b_ff2
    ### END SOLUTION


# %%
check("encoder_feed_forward", encoder_feed_forward)

# %% [markdown]
# ## 3. Mean pooling
#
# The sentence embedding is the average of the last layer's token vectors over the $n$ **real**
# tokens, scaled to length 1:
#
# $$\bar h = \frac{1}{n}\sum_{t:\ \text{mask}_t} h_t, \qquad e = \frac{\bar h}{\lVert \bar h \rVert_2}$$

# %%
def mean_pooling(hidden: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    """Sentence embeddings from token vectors.

    hidden: (B, L, d_model); key_mask: bool (B, L), True at real tokens. Returns (B, d_model), each row of length 1.

    Hints: `key_mask[..., None]` as a float is 1 at real tokens, 0 at padding; `F.normalize(x, dim=-1)`.
    """
    ### BEGIN SOLUTION
    real = key_mask[..., None].to(hidden.dtype)  # (B, L, 1)
    mean = (hidden * real).sum(dim=1) / real.sum(dim=1)  # (B, d_model)
    return F.normalize(mean, dim=-1)
    ### END SOLUTION


# %%
check("mean_pooling", mean_pooling)

# %% [markdown]
# All three pass? Go back to [section 6 of the lesson](../notebooks/12_capstone.ipynb) and run it:
# the encoder now runs on your code, and should agree with `sentence-transformers` to round-off.
