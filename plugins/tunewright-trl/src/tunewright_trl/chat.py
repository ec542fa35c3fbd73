"""The chat format of ``tiny:`` models: ChatML with an explicit end-of-turn EOS.

The ``{% generation %}`` markers let TRL compute the loss on assistant tokens only
(``assistant_only_loss``); the EOS token ``<|im_end|>`` closes every turn, so a trained model
learns to stop. The template and the EOS travel with the model version.
"""

from __future__ import annotations

from typing import Final

BOS_TOKEN: Final = "<|im_start|>"
EOS_TOKEN: Final = "<|im_end|>"
PAD_TOKEN: Final = "<|pad|>"
UNK_TOKEN: Final = "<|unk|>"
SPECIAL_TOKENS: Final = (PAD_TOKEN, UNK_TOKEN, BOS_TOKEN, EOS_TOKEN)

CHATML_TEMPLATE: Final = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
