"""How a LoRA-fine-tuned generator should reach llama.cpp: merged GGUF, or base GGUF + adapter.

µCODE fine-tunes the generator every iteration and the next iteration rolls it out through
llama.cpp. Two ways exist: merge the adapter and export the whole model
(:func:`agents.models.gguf_export.export_for_llama_cpp`, q8_0), or keep the base GGUF and load the adapter
at run time (:func:`agents.models.gguf_lora.export_lora_gguf`, ``Llama(lora_path=...)``). This measures,
on the real base model with a LoRA adapter of the cpu preset's shape (r=16, alpha=32, all linear
layers; B drawn at random, as after training, so the adapter is not a no-op):

- preparation time (merge + export, or adapter export) and file size;
- greedy generation tokens/s on MBPP prompts, same prompts and budget for every path;
- agreement: greedy outputs identical to the merged q8_0 path's.

    python benchmarks/finetuned_generator_path.py --prompts 4 --max-new-tokens 128 --threads 1
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="qwen2.5-coder-0.5b", help="registry name (default: %(default)s)")
    p.add_argument("--prompts", type=int, default=4, help="MBPP test prompts (default: %(default)s)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="(default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="llama.cpp threads; never more than idle cores")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--data-dir", default=None, help="offline data directory (default: $MUCODE_DATA_DIR)")
    p.add_argument("--work-dir", default=None, help="keep the exported files here (default: a temporary dir)")
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    return p.parse_args(argv)


def generate(model_path: Path, prompts: list[str], args, lora_path: Path | None = None) -> dict:
    from llama_cpp import Llama

    t0 = time.perf_counter()
    llm = Llama(model_path=str(model_path), lora_path=str(lora_path) if lora_path else None, n_ctx=2048,
                n_threads=args.threads, verbose=False, seed=0)
    load_s = time.perf_counter() - t0
    texts, tokens, gen_s = [], 0, 0.0
    for prompt in prompts:
        t1 = time.perf_counter()
        out = llm.create_chat_completion([{"role": "user", "content": prompt}], temperature=0.0,
                                         max_tokens=args.max_new_tokens)
        gen_s += time.perf_counter() - t1
        texts.append(out["choices"][0]["message"]["content"])
        tokens += out["usage"]["completion_tokens"]
    llm.close()
    return {"load_s": load_s, "tokens": tokens, "generation_s": gen_s, "tokens_per_s": tokens / gen_s, "texts": texts}


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    from peft import LoraConfig, get_peft_model
    from rich.console import Console
    from rich.table import Table
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agents.models.convert import find_source_gguf, hf_checkpoint
    from agents.models.gguf_export import export_for_llama_cpp, export_gguf
    from agents.models.gguf_lora import export_lora_gguf
    from mucode_env.datasets import load_problems

    torch.manual_seed(0)
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="mucode-lora-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    prompts = [p.prompt for p in load_problems("mbpp", "test", data_dir=args.data_dir)[: args.prompts]]
    base_dir = Path(hf_checkpoint(args.model))
    base_gguf = find_source_gguf(args.model)

    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.0,
                                                  target_modules="all-linear", task_type="CAUSAL_LM"))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 1e-3)

    rows = []
    # path 1: merge, save, export q8_0 (what the trainer does)
    t0 = time.perf_counter()
    peft_model.save_pretrained(work / "adapter")  # saved first: merging modifies the base weights
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(work / "merged")
    AutoTokenizer.from_pretrained(str(base_dir)).save_pretrained(work / "merged")
    merged_gguf = export_for_llama_cpp(work / "merged", args.model)
    rows.append(("merged q8_0 GGUF", time.perf_counter() - t0, merged_gguf, None))
    del merged, peft_model, model

    # path 2: the adapter alone, on the shipped base GGUF and on a q8_0 base
    t0 = time.perf_counter()
    adapter = export_lora_gguf(work / "adapter", work / "adapter-f16.gguf", base_model_dir=base_dir, dtype="f16")
    adapter_s = time.perf_counter() - t0
    base_q8 = export_gguf(base_dir, work / "base-q8_0.gguf", base_gguf, "q8_0")  # once per run, not per iteration
    rows.append((f"base {base_gguf.name} + f16 adapter", adapter_s, base_gguf, adapter))
    rows.append(("base q8_0 + f16 adapter", adapter_s, base_q8, adapter))
    rows.append((f"base {base_gguf.name}, no adapter (reference)", 0.0, base_gguf, None))

    results = []
    for label, prep_s, path, lora in rows:
        r = generate(path, prompts, args, lora)
        size = path.stat().st_size + (lora.stat().st_size if lora else 0)
        results.append({"path": label, "prep_s": prep_s, "file_mb": (lora or path).stat().st_size / 2**20,
                        "total_mb": size / 2**20, **r})
    ref = results[0]
    table = Table(title=f"fine-tuned generator -> llama.cpp ({args.model}, LoRA r={args.lora_r}, "
                        f"{len(prompts)} MBPP prompts x {args.max_new_tokens} tokens, {args.threads} thread)")
    for col in ("path", "prep s", "new file MB", "tokens/s", "vs merged", "same greedy text as merged"):
        table.add_column(col)
    for r in results:
        same = sum(a == b for a, b in zip(r["texts"], ref["texts"]))
        r["same_text_as_merged"] = same
        table.add_row(r["path"], f"{r['prep_s']:.1f}", f"{r['file_mb']:.1f}", f"{r['tokens_per_s']:.1f}",
                      f"{r['tokens_per_s'] / ref['tokens_per_s']:.2f}x", f"{same}/{len(prompts)}")
    Console(width=160).print(table)
    if args.json:
        Path(args.json).write_text(json.dumps([{k: v for k, v in r.items() if k != "texts"} for r in results], indent=2))
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
