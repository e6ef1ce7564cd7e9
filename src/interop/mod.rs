//! Exchange with the Python world: NumPy arrays for features and points,
//! and weights in torchvision's layout.

pub mod export;
pub mod npy;
