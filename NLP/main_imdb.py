"""Fine-tune a classifier (Llama, or any family the text engine explains) on IMDB, or evaluate
one (docs/protocols.md, section 3).

    python NLP/main_imdb.py --model-size demo                 # embedded default, CPU, minutes
    python NLP/main_imdb.py --model-size llama_tiny --num-warmup-steps 5 --lr 5e-4
    python NLP/main_imdb.py --model-size llama_2_7b --lora --bf16 --gradient-checkpointing
    python NLP/main_imdb.py --output-dir results/imdb/demo --resume
    python NLP/main_imdb.py --eval --model-path assets/text/classifier

The logic (and every option) lives in ``NLP/imdb_finetune.py``.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from NLP.imdb_finetune import main  # noqa: E402

if __name__ == "__main__":
    main()
