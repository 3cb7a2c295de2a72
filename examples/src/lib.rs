//! Examples of embedding baal-core live in `examples/examples/`.
