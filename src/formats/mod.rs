//! The file formats every layer shares, at the bottom of the crate: they
//! know files, not models or data. Atomic writes (a crash never leaves a
//! half-written file), NumPy `.npy` arrays, `.safetensors` weights and
//! TensorBoard event files.
pub mod atomic_write;
pub mod npy;
pub mod safetensors;
pub mod tensorboard;
