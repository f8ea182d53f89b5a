"""attention_course: reference implementations for "Attention, from first principles".

Each function here is also an exercise: a learner rewrites it in ``exercises/`` and
``attention_course.grading.check`` compares the two.
"""

from .attention import apply_mask, masked_attention, scaled_dot_product_attention
from .masking import causal_mask, combine_masks, key_mask_to_attention_mask, padding_mask
from .multihead import MultiHeadAttention, merge_heads, multi_head_attention, split_heads
from .positional import apply_rope, rope_cos_sin, rotate_half, sinusoidal_table
from .qkv import attention_scores, qkv_projection, scaled_attention_scores
from .softmax import entropy, logsumexp, naive_softmax, softmax

__all__ = [
    "MultiHeadAttention",
    "apply_mask",
    "apply_rope",
    "attention_scores",
    "causal_mask",
    "combine_masks",
    "entropy",
    "key_mask_to_attention_mask",
    "logsumexp",
    "masked_attention",
    "merge_heads",
    "multi_head_attention",
    "naive_softmax",
    "padding_mask",
    "qkv_projection",
    "rope_cos_sin",
    "rotate_half",
    "scaled_attention_scores",
    "scaled_dot_product_attention",
    "sinusoidal_table",
    "softmax",
    "split_heads",
]
