"""zhplm: BERT-family language models, Chinese first."""
