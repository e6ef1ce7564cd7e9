//! The file formats every layer shares, at the bottom of the crate: they
//! know files, not models or data. Atomic writes (a crash never leaves a
//! half-written file), NumPy `.npy` arrays, `.safetensors` weights,
//! TensorBoard event files and the classification reports evaluation writes.
pub mod atomic_write;
pub mod classification_report;
pub mod npy;
pub mod parquet;
pub mod safetensors;
pub mod tensorboard;
