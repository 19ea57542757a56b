"""What tests, benchmarks and demos build their inputs from: nothing here is measured, all of it is made up.

- :mod:`~artent_fast.testing.models`: the one builder of tiny LLaMA configs and models (defaults plus
  overrides), and LoRA factors moved off their start as training would;
- :mod:`~artent_fast.testing.text`: text to a token tensor (a tokenizer when it yields tokens, else bytes), and
  random windows of it;
- :mod:`~artent_fast.testing.synthetic`: checkpoints with LLaMA-3-8B tensor names and shapes, written to disk.
"""
