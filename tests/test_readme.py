"""The README's Python API example runs as written, against a small checkpoint in place of the demo's."""

import re
from pathlib import Path

import torch

from omni_gpt2o.checkpoint import save_checkpoint

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_readme_python_api_example_runs(tmp_path, micro_model, monkeypatch):
    section = README.read_text(encoding="utf-8").split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "runs/demo/checkpoint" in code and "save_pretrained" in code and "callback_on_step_end" in code
    save_checkpoint(micro_model, tmp_path / "runs" / "demo" / "checkpoint")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md (Python API)", "exec"), namespace)
    out, again, steps = namespace["out"], namespace["again"], namespace["steps"]
    assert isinstance(out.seed, int) and len(out.images) == 4
    assert [a.tobytes() for a in again.images] == [a.tobytes() for a in out.images]  # the reported seed repeats
    assert namespace["arrays"].shape == (1, 32, 32, 3) and len(steps) == 8
    assert (tmp_path / "red_circle.png").is_file() and (tmp_path / "my-checkpoint" / "model.safetensors").is_file()
    assert namespace["pipe"].dtype == torch.bfloat16
