"""The models stage: where each language model comes from, prepared once, loaded the same way in every job."""
