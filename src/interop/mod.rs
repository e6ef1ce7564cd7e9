//! Exchange with the Python world: NumPy arrays for features and points
//! (weights in torchvision's layout follow in this module).

pub mod npy;
