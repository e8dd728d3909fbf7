"""Conversions of released checkpoints without TensorFlow: TF 1.x checkpoints (Google BERT,
HFL ELECTRA and LERT) to Hugging Face directories, and UER-py state dicts to and from them.

- `tf_checkpoint`: reads the TF checkpoint format (`PREFIX.index` + `PREFIX.data-*`) with
  numpy only; `crc32c`: the checksum it verifies;
- `tf_models`: maps BERT / ELECTRA / LERT variable names onto HF state dicts and configs;
- `uer`: UER-py <-> HF names, both ways.
"""
