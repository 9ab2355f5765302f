"""`hwgen compress`: a recipe of compression stages (prune -> fine-tune -> share/quantize -> fine-tune -> encode).

Modules: `recipe` (the TOML schema), `stages` (one runner per stage), `storage` (CSC + Huffman
accounting), `onnx_export` (QDQ ONNX), `chain` (checkpoints, resume, outputs), `command` (the CLI).

Files in OUT (read by hwgen.report's HTML report; keep in step):

- `state.json`: {"version": 1, "recipe", "model", "stages": [{"index" (1-based), "kind", "key" (hash of
  model + data + recipe settings + stages 1..index), "file", "accuracy" (validation top-1 after the
  stage), "seconds", "density" (non-zero fraction of all Dense/Conv weights), "quantized", "shared",
  "info" (stage facts: prune "rounds" [{sparsity, achieved, accuracy_pruned, accuracy}],
  "accuracy_before_finetune", pass "records")}]}.
- `stages/<index>_<kind>.npz`: the graph after the stage. Keys: "graph_json" (hwgen.ir.serialize's
  graph.json text), "const/c<i>" (its constants), "weights/<node>" (float32 weight tensor of every
  Dense/Conv, as the graph holds it: zeros = pruned, few distinct values = shared/quantized), and for
  the encode stage "code_lengths/<node>" (int64 Huffman code length of each value symbol, 0 = unused).
  `hwgen.compress.chain.load_checkpoint(path)` gives the Graph back.
- `compress.json`: {"format_version": 1, "recipe" {path, name, settings, stages}, "model",
  "validation_samples", "float_accuracy", "final_accuracy", "stages" (state.json's entries without
  key/info), "golden_accuracy_first_samples" {samples, accuracy} (sim.exact on the final graph),
  "layers": [{layer, onnx_name, op, shape, params, biases, nonzeros, density, weight_bits,
  weight_format, share_bits (null = not shared), codebook_size, entries, padding_entries,
  storage_bits {codes, indices, codebook, code_tables, pointers, padding (word fill), bias},
  weight_storage_bits, total_bits, value_entropy_bits_per_symbol, value_huffman_bits_per_symbol,
  value_gap, index_entropy_bits_per_symbol, index_huffman_bits_per_symbol,
  dense_entropy_bits_per_weight, bits_per_weight, compression_vs_float32 (weights + biases),
  value_symbol_counts}], "totals": {weights, biases, nonzeros, density, float32_bits,
  weight_storage_bits, bias_bits, total_bits, compression_vs_float32,
  weights_only_compression_vs_float32, storage_bits {...}}, "onnx", "build_config"}.
- `compressed.onnx` (QDQ, see hwgen.compress.onnx_export), `ir/` (the final graph), and `hwgen.toml`, the
  build config of compressed.onnx: every pruned Dense layer as `[layers."NAME"] engine = "sparse"`; with an
  encode stage also `weight_coding = "huffman"` (per-PE Huffman-decoded weights, hwgen.hw.sparse) with the
  stage's `max_code_length` and `index_bits`.
"""
