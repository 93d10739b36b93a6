"""Can the frozen instruct LM itself say an unseen-word caption in the grammar's words? (a benchmark)

    .venv/bin/python bench/lm_restate.py --captions 90

The `smollm2` LM (SmolLM2-135M-Instruct, frozen, with its own LM head and chat template) is asked, with two
examples whose words are in neither list, to rewrite each caption of an unseen-word validation split using only the
grammar's words; greedy decoding, 24 new tokens at most. The answer is read with the grammar's parser and
compared with the caption's meaning: the whole meaning, and colour, shape and place apart. This is what the
LM can do with the words when asked in words, a second bound beside bench/lm_probe.py on what a decoder can
draw through it; nothing here is used in training or sampling.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from omni_gpt2o.backbones import text_model_location
from omni_gpt2o.compute import describe_machine, machine_info
from omni_gpt2o.config import get_preset
from omni_gpt2o.data.dataset import read_split
from omni_gpt2o.data.shapes import COLOURS, POSITIONS, RELATIONS, SHAPES, SIZE_RANGES, parse_caption, shapes_split
from omni_gpt2o.data.wordings import read_caption, wording_of

VOCABULARY = ", ".join([*COLOURS, *SHAPES, *SIZE_RANGES, *POSITIONS, *RELATIONS])
INSTRUCTION = (f"Rewrite the description of a picture using only these words: {VOCABULARY}. "
               "Answer with the rewritten description only.")
# Words in neither the grammar nor the unseen-word lists, so the examples show substitution without a test word.
EXAMPLES = [("a giant cherry-coloured cube near the summit", "a large red square at the top"),
            ("a jade cone further left than a sapphire sphere", "a green triangle to the left of a blue circle")]


def messages(caption: str) -> list[dict]:
    chat = []
    for question, answer in EXAMPLES:
        chat += [{"role": "user", "content": f"{INSTRUCTION}\nDescription: {question}"},
                 {"role": "assistant", "content": answer}]
    return chat + [{"role": "user", "content": f"{INSTRUCTION}\nDescription: {caption}"}]


def attributes(meaning) -> dict[str, tuple]:
    return {"colour": tuple(o[1] for o in meaning.objects), "shape": tuple(o[2] for o in meaning.objects),
            "place": (meaning.position, meaning.relation)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--captions", type=int, default=90)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/lm_restate.jsonl")
    args = parser.parse_args()
    config = get_preset("smollm2")
    where, gguf = text_model_location(config)
    lm = AutoModelForCausalLM.from_pretrained(where, gguf_file=gguf, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=gguf)
    split = shapes_split(Path("runs/compute/data") / f"val-unseen-{args.seed}", 400, split="val", seed=args.seed,
                         wording="unseen")
    captions = [r.captions[0] for r in read_split(split)][: args.captions]
    tally: dict[str, dict[str, list[bool]]] = {}
    for caption in captions:
        prompt = tokenizer.apply_chat_template(messages(caption), add_generation_prompt=True, return_tensors="pt",
                                               return_dict=True)
        with torch.no_grad():
            out = lm.generate(**prompt, max_new_tokens=24, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        answer = tokenizer.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True).strip().lower()
        truth = read_caption(caption)
        try:
            said = parse_caption(answer.rstrip("."))
        except ValueError:
            said = None
        row = {"whole": said == truth}
        row |= {k: said is not None and attributes(said)[k] == v for k, v in attributes(truth).items()}
        for group in ("all", wording_of(caption)):
            for k, v in row.items():
                tally.setdefault(group, {}).setdefault(k, []).append(v)
        print(f"{caption!r} -> {answer!r}: {'right' if row['whole'] else 'wrong'}")
    print(f"\nSmolLM2-135M-Instruct rewriting {len(captions)} unseen-word captions into the grammar's words "
          f"(greedy, two examples); {describe_machine(machine_info())}")
    summary = {g: {k: sum(v) / len(v) for k, v in t.items()} | {"n": len(t["whole"])} for g, t in tally.items()}
    for group, s in summary.items():
        print(f"  {group:<11} n={s['n']:<4} " + "  ".join(f"{k} {100 * s[k]:.0f}%" for k in
                                                     ("whole", "colour", "shape", "place")))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as f:
        f.write(json.dumps({"captions": len(captions), "summary": summary}) + "\n")


if __name__ == "__main__":
    main()
