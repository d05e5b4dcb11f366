"""Speech recognition, Django-free: it imports no Django, kernel or app (only the wire declaration
and the curve's units), so it loads and is tested without settings, in any process.

engines (pocketsphinx, rescored by Moonshine), moonshine (the model rebuilt for ONNX Runtime and
its grammar-constrained search), tokenizer and search (Moonshine's tokens, the grammar over
them), grammar (the command grammar), pipeline (voice activity, utterances), intents (transcripts
to commands), recogniser (the process's recogniser and its readiness).
"""
