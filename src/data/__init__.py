"""Photos and what the model reads: colour spaces, image decoding, downloads, shards, the tf.data pipeline, hints,
metrics."""
