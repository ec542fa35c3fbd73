"""Ask the promoted support model a few questions through the serve service's OpenAI-compatible
API, with the official ``openai`` client — the last step of ``make demo``.

    .venv/bin/python examples/support-tickets/ask.py [--model support-assistant:production]

Reads the API key ``tunewright up`` generated (``<data dir>/serve.key``) and the HTTP port from
``--base-url``. When no model holds the alias (the gate did not promote), it says so and exits 0:
the pipeline's own exit status already tells the demo's outcome.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import openai

# support tickets as customers write them (the model was tuned on tickets, not chit-chat)
QUESTIONS = [
    "Hi, this is Dana Whitfield from Initech. AcmeBilling charged our card twice this month. "
    "Can you help?",
    "Hello, AcmeCRM keeps crashing when I log in on my phone. Thanks in advance.",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="support-assistant:production")
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--key-file", type=Path, default=Path(".tunewright/serve.key"))
    args = parser.parse_args()
    client = openai.OpenAI(
        base_url=args.base_url, api_key=args.key_file.read_text().strip(), max_retries=2
    )
    print(f"\nAsking {args.model} through {args.base_url} (openai {openai.__version__}):")
    for question in QUESTIONS:
        started = time.perf_counter()
        try:
            reply = client.chat.completions.create(
                model=args.model,
                messages=[{"role": "user", "content": question}],
                temperature=0,
                max_tokens=96,
            )
        except openai.NotFoundError:
            print(f"  no model holds {args.model}: the gate did not promote one")
            return 0
        took = time.perf_counter() - started
        print(f"  Q: {question}")
        print(f"  A: {reply.choices[0].message.content}")
        print(
            f"     (model version {reply.system_fingerprint}, "
            f"{reply.usage.completion_tokens if reply.usage else '?'} tokens, {took:.2f} s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
