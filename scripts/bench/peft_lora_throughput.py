#!/usr/bin/env python3
"""Reference side of `train-throughput` (scripts/train-throughput.sh), run on the GPU machine.

  make-model DIR        a LLaMA-3.2-1B-shaped model with random weights (bf16 safetensors)
                        and a synthetic JSONL text dataset DIR/train.jsonl
  peft DIR STEPS [WARMUP]
                        HF transformers + PEFT LoRA r=64 (all 7 projections) on the bf16
                        model, AdamW, batches of 8x512 tokens; runs WARMUP (default 3) +
                        STEPS steps, times the last STEPS; prints one JSON line with
                        tokens/s and peak GPU memory.
"""
import json
import os
import random
import sys
import time


def make_model(out):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128256, hidden_size=2048, intermediate_size=8192,
                      num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                      max_position_embeddings=2048, rms_norm_eps=1e-5, rope_theta=500000.0,
                      tie_word_embeddings=True, bos_token_id=0, eos_token_id=1)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    rng = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "river", "stone", "light", "shadow", "seven",
             "forty", "north", "south", "market", "garden", "silver", "copper", "winter"]
    with open(os.path.join(out, "train.jsonl"), "w") as f:
        for _ in range(4000):
            f.write(json.dumps({"text": " ".join(rng.choice(words) for _ in range(120))}) + "\n")
    print(f"wrote {out}")


def peft(model_dir, steps, warmup=3):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
    except TypeError:
        model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.bfloat16)
    model = model.cuda()
    lora = LoraConfig(r=64, lora_alpha=16, lora_dropout=0.0,
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                      "up_proj", "down_proj"])
    model = get_peft_model(model, lora)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    batch = torch.randint(0, 4000, (8, 512), device="cuda")
    torch.cuda.reset_peak_memory_stats()
    for i in range(steps + warmup):
        if i == warmup:
            torch.cuda.synchronize()
            start = time.perf_counter()
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    print(json.dumps({"impl": "transformers+peft lora r=64 bf16",
                      "attn": getattr(model.config, "_attn_implementation", "?"),
                      "steps": steps, "warmup_steps": warmup,
                      "ms_per_step": 1e3 * seconds / steps,
                      "tokens_per_second": 8 * 512 * steps / seconds,
                      "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
                      "trainable": sum(p.numel() for p in params)}))


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "make-model":
        make_model(sys.argv[2])
    elif len(sys.argv) >= 4 and sys.argv[1] == "peft":
        peft(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) >= 5 else 3)
    else:
        sys.exit(__doc__)
