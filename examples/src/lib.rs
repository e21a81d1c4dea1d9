//! Examples of embedding Vesemir; see the `examples/` folder of this crate.
